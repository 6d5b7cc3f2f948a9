"""Which parameters of a checkpoint fit a program (`--init-from`, fine-tuning).

`match_weights` compares a checkpoint's parameters with a program's by name, shape and dtype:
a parameter is loaded when both have it with the same shape (a float dtype is converted);
otherwise it is skipped and the report says why (not in the checkpoint, only in the
checkpoint, or a different shape). State buffers (optimizer moments) are never taken.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["WeightMatch", "match_weights"]


def _show(a: Any) -> str:
    return f"{np.dtype(a.dtype)}{list(a.shape)}"


@dataclass
class WeightMatch:
    """What `--init-from` loads: `load` name -> the checkpoint's array (converted to the
    program's dtype), and the names it skips."""

    path: str
    load: dict[str, np.ndarray] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # the program's, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # the checkpoint's, not the program's
    mismatched: list[tuple[str, str, str]] = field(default_factory=list)  # name, saved, wanted
    converted: list[str] = field(default_factory=list)  # loaded with another float dtype

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 6) -> str:
        """One paragraph for the user: counts, then the skipped names (at most `limit` per
        kind)."""
        total = len(self.load) + len(self.missing) + len(self.mismatched)
        parts = [f"loaded {len(self.load)} of {total} parameters from {self.path}"]

        def names(items: list[str]) -> str:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        if self.mismatched:
            parts.append(f"skipped {len(self.mismatched)} with another shape: " + names(
                [f"{n} (checkpoint {s}, this program {w})" for n, s, w in self.mismatched]))
        if self.missing:
            parts.append(f"{len(self.missing)} not in the checkpoint (kept as initialized): "
                         + names(self.missing))
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} in the checkpoint only (ignored): "
                         + names(self.unexpected))
        if self.converted:
            parts.append(f"{len(self.converted)} converted to this run's dtype")
        return "; ".join(parts)


def match_weights(path: str, saved: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                  params: list[str], current: Mapping[str, Any]) -> WeightMatch:
    """Match checkpoint arrays `saved` (with its `meta`) to the program parameters `params`,
    whose arrays are `current` (for shapes and dtypes)."""
    roles = {k: (v or {}).get("role") for k, v in (meta.get("variables") or {}).items()
             if isinstance(v, dict)}
    m = WeightMatch(path)
    for name in params:
        if name not in saved:
            m.missing.append(name)
            continue
        have, want = saved[name], current[name]
        want_dt = np.dtype(want.dtype)
        if tuple(have.shape) != tuple(want.shape):
            m.mismatched.append((name, _show(have), f"{want_dt}{list(want.shape)}"))
            continue
        if have.dtype != want_dt:
            if have.dtype.kind != "f" or want_dt.kind != "f":
                m.mismatched.append((name, _show(have), f"{want_dt}{list(want.shape)}"))
                continue
            m.converted.append(name)
            have = have.astype(want_dt)
        m.load[name] = have
    wanted = set(params)
    m.unexpected = [k for k in saved if k not in wanted and roles.get(k, "param") == "param"
                    and k not in current]
    return m
