"""The loaded data set: `Dataset` (train, test and valid arrays, facts about the set, and the
vocabulary of a token set) and `DataError`, the one error of the data package.

A data set's *facts* are the numbers in its `info` (`vocab_size`, `n_classes`, `n_features`,
`T`, ...); a spec reads them as compile-time constants, `data.vocab_size`.

This module must not import `dsl`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.errors import UserError
from runtime.train.data.vocab import Vocabulary
from runtime.train.memory import human_bytes, memory_limit

__all__ = ["SPLITS", "DataError", "Dataset", "class_info", "dtype_str", "ensure_room",
           "data_memory_limit", "n_samples"]

SPLITS = ("train", "valid", "test")


class DataError(UserError):
    """A user mistake about data: unknown data set or option, missing or malformed file."""


_MAX_MEMORY: ContextVar[int | None] = ContextVar("max_memory", default=None)


@contextmanager
def data_memory_limit(max_memory: int | None) -> Iterator[None]:
    """Within the block, `ensure_room` weighs data against `max_memory` bytes (the user's
    `--max-memory`) instead of the memory available (None: the memory available)."""
    token = _MAX_MEMORY.set(max_memory)
    try:
        yield
    finally:
        _MAX_MEMORY.reset(token)


def ensure_room(need: int, what: str, advice: str) -> None:
    """DataError before a loader allocates `need` bytes for `what` when that is more than half
    the memory the run may use (the run still needs its parameters and plans): `--max-memory`
    when given (`data_memory_limit`), else the memory available now, as the run's estimate
    reads it (`runtime.train.memory.memory_limit`)."""
    limit, source = memory_limit(_MAX_MEMORY.get())
    if limit is not None and need > limit // 2:
        more = ", or give a larger --max-memory" if _MAX_MEMORY.get() is not None else ""
        raise DataError(f"{what} need {human_bytes(need)}, more than half the "
                        f"{human_bytes(limit)} of {source}; {advice}{more}")


@dataclass
class Dataset:
    """Loaded data: train arrays, optional test arrays (same fields) and facts about the set.

    `vocab` is the token vocabulary of a token data set (`text`): `vocab.decode(ids)` turns
    model outputs back into text, `vocab.encode(text)` gives the ids of a prompt."""

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    valid: dict[str, np.ndarray] | None = None  # held out of train by `split_validation`
    vocab: Vocabulary | None = None

    def split(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays of split `name` ("train", "valid" or "test"; None when absent)."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {name!r}")
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    def field_info(self, split: str = "train") -> dict[str, tuple[str, tuple[int, ...]]]:
        """{field: (dtype string such as "f32", "f64" or "i64", shape)} of the train (or
        valid, or test) arrays; the leading dimension is the number of samples in that split."""
        arrays = self.split(split)
        if arrays is None:
            return {}
        return {k: (dtype_str(v.dtype), tuple(int(s) for s in v.shape)) for k, v in arrays.items()}

    def facts(self) -> dict[str, int | float | bool]:
        """The numbers among the facts in `info`, by name (`vocab_size`, `n_classes`, ...): what
        a spec may read as compile-time constants (`data.vocab_size`)."""
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in self.info.items()
                if isinstance(v, bool | int | float | np.bool_ | np.integer | np.floating)}


def dtype_str(dtype: np.dtype) -> str:
    """"f32", "i64", "bool", ...: a dtype as the language writes it."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "bool"
    if dtype.kind in "fiu":
        return f"{dtype.kind}{dtype.itemsize * 8}"
    return str(dtype)


def n_samples(arrays: Mapping[str, np.ndarray]) -> int:
    """The number of samples (the leading dimension) of equally long arrays; 0 for none."""
    return int(next(iter(arrays.values())).shape[0]) if arrays else 0


def class_info(y: np.ndarray) -> dict[str, Any]:
    """The facts of integer class labels: task and class count."""
    # not np.unique, which imports numpy.ma (~15 ms of `dslrun check`)
    n = int(y.max()) + 1 if y.size and y.min() >= 0 else len(set(y.tolist()))
    return {"task": "classification", "n_classes": n}
