"""Sums, means and maxima over the trailing axes of float arrays, fast on short rows: the
reductions inside the kernels of `sum`, `mean`, softmax, log-softmax, cross-entropy,
logsumexp, layer norm and the out= forms that mirror them (one function, so a form computes
the same bytes as its kernel)."""

from __future__ import annotations

import functools

import numpy as np

from runtime.ops.shapes import norm_axes

# On NumPy, rows of at most this many elements are summed as one matrix-vector product with a
# vector of ones: NumPy's reduction runs one pairwise sum per row, whose per-row cost
# dominates short rows (the softmax of [32, 4, 64, 64] scores: 0.30 ms against 0.05; a layer
# norm's mean over 128 features of 2048 rows: 0.10 against 0.025, float32, one thread). Up to
# this length both are a few SIMD partial sums added in turn, so neither is the more
# accurate; longer rows keep NumPy's pairwise sum (a dot product's error grows linearly with
# the length). The BLAS kernel may group rows differently for different row counts, so a
# row's sum can differ in its last bit with the batch it is in (as with PyTorch's kernels).
# Other array modules reduce in one kernel already and keep their own sum.
SHORT_ROW = 256


@functools.lru_cache(maxsize=64)
def _ones(n: int, dtype: str) -> np.ndarray:
    return np.ones(n, dtype=dtype)


def _short_rows(x, axis) -> tuple[int, int]:
    """(row length, number of axes reduced) when `axis` is the trailing axes of a
    C-contiguous NumPy float32/64 array x of more than one row and rows are 2..SHORT_ROW
    long; else (0, 0)."""
    if (not isinstance(x, np.ndarray) or x.dtype.kind != "f" or x.dtype.itemsize < 4
            or not x.flags.c_contiguous or x.ndim == 0):
        return 0, 0
    if axis == -1 or axis == x.ndim - 1:
        k, n = 1, x.shape[-1]
    else:
        axes = norm_axes("sum", axis, x.ndim)
        k = len(axes)
        if axes != tuple(range(x.ndim - k, x.ndim)):
            return 0, 0
        n = 1
        for a in axes:
            n *= x.shape[a]
    return (n, k) if 2 <= n <= SHORT_ROW and x.size > n else (0, 0)


def _sum_rows(x: np.ndarray, n: int, k: int, keepdims: bool, out):
    ones = _ones(n, x.dtype.str)
    if out is not None:
        np.matmul(x.reshape(-1, n), ones, out=out.reshape(-1))
        return out
    lead = x.shape[:x.ndim - k]
    return np.matmul(x.reshape(-1, n), ones).reshape(lead + (1,) * k if keepdims else lead)


def row_sum(xp, x, axis, keepdims: bool = False, out=None):
    """xp.sum(x, axis=axis, keepdims=keepdims, out=out) of a float x; on NumPy, short rows of
    the trailing axes summed as a matrix-vector product (see SHORT_ROW). A given `out` must
    be C-contiguous."""
    n, k = _short_rows(x, axis)
    if not n:
        return xp.sum(x, axis=axis, keepdims=keepdims, out=out)
    return _sum_rows(x, n, k, keepdims, out)


def row_mean(xp, x, axis, keepdims: bool = False):
    """xp.mean(x, axis=axis, keepdims=keepdims) of a float x, short rows summed as in
    `row_sum`."""
    n, k = _short_rows(x, axis)
    if not n:
        return xp.mean(x, axis=axis, keepdims=keepdims)
    s = _sum_rows(x, n, k, keepdims, None)
    return np.true_divide(s, n, out=s)


# On NumPy, the maximum of each of at least SHORT_MAX_ROWS rows of at most SHORT_MAX elements
# is taken over the flat array by doubling windows, max(a[i], a[i + w]) for w = 1, 2, 4, ...
# (one long SIMD pass per doubling) and read at each row's start: NumPy's reduction costs the
# same per row as the short rows' elements cost together ([128, 10]: 7.9 us against 3.8;
# [1024, 16]: 54 against 9; attention scores [8192, 64]: 490 against 307; float32, one
# thread). The maximum is exact either way (NaN propagates), up to the sign of a zero maximum
# when 0.0 and -0.0 tie (harmless to the shifts: exp(±0) = 1); longer rows keep NumPy's.
SHORT_MAX, SHORT_MAX_ROWS = 64, 64


def row_max(xp, x, axis, out=None):
    """xp.max(x, axis=axis, keepdims=True, out=out), up to the sign of a zero maximum; on
    NumPy, short trailing rows by doubling windows (see SHORT_MAX)."""
    m = x.shape[-1] if x.ndim else 0
    if (not isinstance(x, np.ndarray) or not (axis == -1 or axis == x.ndim - 1)
            or not 2 <= m <= SHORT_MAX or x.size < SHORT_MAX_ROWS * m or x.dtype.kind != "f"
            or not x.flags.c_contiguous):
        return xp.max(x, axis=axis, keepdims=True, out=out)
    a, w = x.reshape(-1), 1
    while 2 * w <= m:  # a[i] = max of the window of 2w at i
        a = np.maximum(a[:-w], a[w:])
        w *= 2
    if w < m:  # two overlapping windows of w cover one of m
        a = np.maximum(a[:w - m], a[m - w:])
    starts = a[::m]  # a row's maximum is its window's at the row's start
    shape = x.shape[:-1] + (1,)
    if out is None:
        return starts.reshape(shape)
    np.copyto(out, starts.reshape(shape))
    return out
