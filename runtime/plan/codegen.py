"""Straight-line Python for a plan's steps: one generated function per step list, so that a
step runs without building argument lists or walking anything at run time; and the same for
the members of a fused kernel (`chain`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["chain", "codegen"]


def codegen(steps: list[tuple[Any, tuple[int, ...], int]], name: str) -> Any:
    """`def name(vals)` running `vals[out] = fn(vals[i], ...)` for each step, unrolled."""
    ns: dict[str, Any] = {}
    lines = [f"def {name}(vals):"]
    for k, (fn, ins, out) in enumerate(steps):
        ns[f"f{k}"] = fn
        lines.append(f"    vals[{out}] = f{k}({', '.join(f'vals[{i}]' for i in ins)})")
    lines.append("    return None")
    exec(compile("\n".join(lines), f"<plan {name}>", "exec"), ns)
    return ns[name]


@functools.lru_cache(maxsize=256)
def _chain_maker(n_in: int, refs: tuple[tuple[int, ...], ...]) -> Callable[..., Any]:
    """`make(f0, ..., out)` returning `kernel(a0, ...)` that runs each f_k on its operands
    (positions: the inputs, then the earlier results) and returns `out`. Compiled once per
    shape of chain; the functions and the buffer are bound per kernel."""
    names = [f"a{i}" for i in range(n_in)]
    fs = "".join(f"f{k}, " for k in range(len(refs)))
    lines = [f"def make({fs}out):", f"    def kernel({', '.join(names[:n_in])}):"]
    for k, r in enumerate(refs):
        lines.append(f"        v{k} = f{k}({', '.join(names[i] for i in r)})")
        names.append(f"v{k}")
    lines += ["        return out", "    return kernel"]
    ns: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<fused chain>", "exec"), ns)
    return ns["make"]


def chain(fns: Sequence[Any], n_in: int, refs: Sequence[tuple[int, ...]], out: Any
          ) -> Callable[..., Any]:
    """`kernel(*inputs)`: `fns[k]` called on `refs[k]` (positions among the inputs and then
    the earlier results) in order, straight-line; returns `out`."""
    return _chain_maker(n_in, tuple(refs))(*fns, out)
