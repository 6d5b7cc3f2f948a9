"""Sums and means over the trailing axes of float arrays, fast on short rows: the reductions
inside the kernels of `sum`, `mean`, softmax, log-softmax, cross-entropy, layer norm and the
out= forms that mirror them (one function, so a form computes the same bytes as its kernel)."""

from __future__ import annotations

import functools

from runtime.ops.shapes import norm_axes

# Rows of at most this many elements are summed as one matrix-vector product with a vector of
# ones: NumPy's reduction runs one pairwise sum per row, whose per-row cost dominates short rows
# (the softmax of [32, 4, 64, 64] scores: 0.30 ms against 0.05; a layer norm's mean over 128
# features of 2048 rows: 0.10 against 0.025, float32, one thread). Up to this length both
# are a few SIMD partial sums added in turn, so neither is the more accurate; longer rows keep
# NumPy's pairwise sum (a dot product's error grows linearly with the length).
SHORT_ROW = 256


@functools.lru_cache(maxsize=64)
def _ones(xp, n: int, dtype: str):
    return xp.ones(n, dtype=dtype)


def _short_rows(x, axis) -> int:
    """The row length when `axis` is x's trailing axes, x is a C-contiguous float32/64 array
    of more than one row and rows are 2..SHORT_ROW long; else 0."""
    if x.dtype.kind != "f" or x.dtype.itemsize < 4 or not x.flags.c_contiguous:
        return 0
    axes = norm_axes("sum", axis, x.ndim)
    if axes != tuple(range(x.ndim - len(axes), x.ndim)):
        return 0
    n = 1
    for a in axes:
        n *= x.shape[a]
    return n if 2 <= n <= SHORT_ROW and x.size > n else 0


def row_sum(xp, x, axis, keepdims: bool = False, out=None):
    """xp.sum(x, axis=axis, keepdims=keepdims, out=out) of a float x; short rows of the
    trailing axes summed as a matrix-vector product (see SHORT_ROW). A given `out` must be
    C-contiguous."""
    n = _short_rows(x, axis)
    if not n:
        return xp.sum(x, axis=axis, keepdims=keepdims, out=out)
    ones = _ones(xp, n, x.dtype.str)
    if out is not None:
        xp.matmul(x.reshape(-1, n), ones, out=out.reshape(-1))
        return out
    naxes = len(norm_axes("sum", axis, x.ndim))
    lead = x.shape[:x.ndim - naxes]
    return xp.matmul(x.reshape(-1, n), ones).reshape(lead + (1,) * naxes if keepdims else lead)


def row_mean(xp, x, axis, keepdims: bool = False):
    """xp.mean(x, axis=axis, keepdims=keepdims) of a float x, short rows summed by `row_sum`."""
    n = _short_rows(x, axis)
    if not n:
        return xp.mean(x, axis=axis, keepdims=keepdims)
    s = row_sum(xp, x, axis, keepdims)
    return xp.true_divide(s, n, out=s)
