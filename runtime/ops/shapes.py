"""Shape rules shared by ops: broadcasting, reductions and products over symbolic dims."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from runtime.dtypes import float_result_dtype, result_dtype
from runtime.errors import UserError
from runtime.ir import Dim, TensorType
from runtime.ops.registry import ShapeError


def broadcast_shapes(op: str, *shapes: tuple[Dim, ...]) -> tuple[Dim, ...]:
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for k in range(rank):
        dims = [s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0]
        d: Dim = 1
        for x in dims:
            if x == 1:
                continue
            if d == 1:
                d = x
            elif d != x:
                pretty = " and ".join(f"[{','.join(map(str, s))}]" for s in shapes)
                raise ShapeError(f"{op}: shapes {pretty} do not broadcast (dims {d} and {x})")
        out.append(d)
    return tuple(out)


def float_result(op: str, *types: TensorType) -> str:
    """The result dtype of an op that takes float tensors only."""
    for t in types:
        if not t.is_float:
            raise ShapeError(f"{op}: expects float tensors, got {', '.join(map(str, types))}")
    return result_dtype(*(t.dtype for t in types))


def elementwise(op: str, *types: TensorType, dtype: str | None = None) -> TensorType:
    """Broadcast shapes and promoted dtypes (`runtime.dtypes.result_dtype`), or `dtype`."""
    shape = broadcast_shapes(op, *(t.shape for t in types))
    return TensorType(dtype or result_dtype(*(t.dtype for t in types)), shape)


def float_elementwise(op: str, *types: TensorType) -> TensorType:
    """As `elementwise` for ops that compute in floats (`float_result_dtype`)."""
    shape = broadcast_shapes(op, *(t.shape for t in types))
    return TensorType(float_result_dtype(*(t.dtype for t in types)), shape)


def norm_axes(op: str, axis: Any, rank: int) -> tuple[int, ...]:
    """Normalize an `axis` attribute (None, int or tuple) to sorted non-negative axes."""
    if axis is None:
        return tuple(range(rank))
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis) \
        if isinstance(axis, list | tuple) else (axis,)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int | np.integer):
            what = repr(a) if isinstance(a, int | float | str) else "a tensor"
            raise ShapeError(f"{op}: an axis is an integer known at compile time, got {what}")
        if not -rank <= a < rank:
            raise ShapeError(f"{op}: axis {a} out of range for rank {rank}")
        out.append(int(a) % rank)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def reduced_shape(op: str, shape: tuple[Dim, ...], axis: Any, keepdims: bool) -> tuple[Dim, ...]:
    axes = norm_axes(op, axis, len(shape))
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def sym_product(dims: tuple[Dim, ...]) -> tuple[int, Counter]:
    """A product of dims as (integer part, multiset of symbols)."""
    n, syms = 1, Counter()
    for d in dims:
        if isinstance(d, int):
            n *= d
        else:
            syms[d] += 1
    return n, syms


def reshape_shape(op: str, src: tuple[Dim, ...], target: tuple[Dim, ...]) -> tuple[Dim, ...]:
    n_src, s_src = sym_product(src)
    if target.count(-1) > 1:
        raise ShapeError(f"{op}: at most one -1 in the target shape")
    known = tuple(d for d in target if d != -1)
    n_t, s_t = sym_product(known)
    if -1 in target:
        if s_t - s_src or n_t == 0 or n_src % n_t:
            raise ShapeError(f"{op}: cannot reshape [{_fmt(src)}] to [{_fmt(target)}]")
        rest = s_src - s_t
        if rest:
            if n_src // n_t != 1 or sum(rest.values()) != 1:
                raise ShapeError(f"{op}: cannot infer -1 in [{_fmt(target)}] from [{_fmt(src)}]")
            fill: Dim = next(iter(rest))
        else:
            fill = n_src // n_t
        return tuple(fill if d == -1 else d for d in target)
    if n_src != n_t or s_src != s_t:
        raise ShapeError(f"{op}: cannot reshape [{_fmt(src)}] ({_fmt_n(n_src, s_src)} elements) "
                         f"to [{_fmt(target)}] ({_fmt_n(n_t, s_t)} elements)")
    return tuple(target)


def _fmt(shape: tuple[Dim, ...]) -> str:
    return ",".join(map(str, shape))


def _fmt_n(n: int, syms: Counter) -> str:
    parts = [str(n)] if n != 1 or not syms else []
    parts += [s if c == 1 else f"{s}^{c}" for s, c in sorted(syms.items())]
    return "*".join(parts)


class IndexRangeError(UserError):
    """A gather's indices fall outside the axis they index (found when the step runs)."""


def check_range(xp: Any, idx: Any, size: int, op: str, axis: int) -> None:
    """IndexRangeError unless every index is in [0, size) (NumPy would wrap negatives)."""
    if idx.size == 0:
        return
    lo, hi = idx.min(), idx.max()
    if lo < 0 or hi >= size:  # (the conversions to int only when reporting)
        lo, hi = int(lo), int(hi)
        bad = lo if lo < 0 else hi
        raise IndexRangeError(f"{op}: index {bad} is out of range for axis {axis} of size "
                              f"{size} (the indices go from {lo} to {hi}; valid: 0 to "
                              f"{size - 1})")
