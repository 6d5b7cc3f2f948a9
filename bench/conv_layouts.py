"""Direct-GEMM conv2d over NHWC against dslrun's NCHW kernels (issue 12).

    python bench/conv_layouts.py [--check] [--wide] [--calls 20] [--repeat 7]
                                 [--dtype float32]

For LeNet's two convolutions at batch 64 (`specs/bench/lenet.dl`: conv1 x[64,1,28,28]
w[6,1,5,5] padding 2, conv2 x[64,6,14,14] w[16,6,5,5]) and, with `--wide`, a wider one
(x[64,32,16,16] w[64,32,3,3] padding 1), it times the forward pass, the input gradient and the
weight gradient of:

* `nchw`: dslrun's kernels (`runtime.ops.conv`: im2col on a wide batch-chunked grid, one
  GEMM each, col2im by kh*kw slice-adds), the baseline;
* `nhwc rows`: x[N,H,W,C], w[kh,kw,C,O]: columns [N*Ho*Wo, kh*kw*C] from an `as_strided`
  window view [N,Ho,Wo,kh,kw,C] made contiguous, y = cols · w; dx by dcols = g · wᵀ and kh*kw
  slice-adds into the padded input; dw = colsᵀ · g;
* `nhwc kmajor`: the same GEMMs with the columns transposed, [kh*kw*C, N*Ho*Wp], on dslrun's
  wide grid (each output row spans the padded width, the extra Wp - Wo columns are computed
  and dropped) and its batch chunks: y = colsᵀ · w, dcols = w · gᵀ, dw = cols · g; col2im
  adds into channel planes [C, N*Hp*Wp] (runs of Ho*Wp; into NHWC they are runs of C) and
  transposes them to NHWC once;
* `nhwc flat`: K-major columns over every padded position of the batch as one flat grid
  [N*Hp*Wp, C] (any row block is a window; no per-image axis), row blocks of COLS_BYTES;
* `nhwc shift`: no columns: the padded batch is one flat [N*Hp*Wp, C] matrix whose rows
  shifted by i*Wp + j are the inputs under kernel offset (i, j), so y = Σ_ij X[+ij] · w[i,j]
  (kh*kw GEMMs on row blocks of `SHIFT_ROWS`), dx[+ij] += g · w[i,j]ᵀ, dw[i,j] = X[+ij]ᵀ · g,
  over every padded position (the Hp*Wp / Ho*Wo extra rows are computed and dropped);
* `nhwc shift blas`: the same with SciPy's BLAS `gemm` accumulating in place (beta = 1)
  instead of NumPy's product into a temporary and an add (NumPy's matmul has no beta).
* `nhwc via nchw`: dslrun's kernels called on NHWC arrays through transposed views (their
  gathers read any strides) and the results transposed to NHWC: what NHWC costs when the
  kernels keep their internal batch-last grids.

`best nhwc` adds up the fastest NHWC formulation of each part (a hybrid; the minimum of
several medians, so slightly biased low). The layout transposes at the network's boundary are
not in the kernels' times; the table lists them apart (NCHW -> NHWC of x and g, NHWC -> NCHW
of y and dx). Every formulation is first checked against `nchw` in float64 (largest absolute
difference < 1e-10); `--check` only does that. Times are the median over `--repeat` runs of
`--calls` calls, the formulations interleaved within a run (2 shared cores: a burst of load
hits all of them), one BLAS thread when OPENBLAS_NUM_THREADS=1. Stride 1, dilation 1, one
group: LeNet's convolutions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy.linalg.blas import get_blas_funcs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime.ops import conv as conv_ops  # noqa: E402
from runtime.ops.conv import (  # noqa: E402
    _batch_chunks,
    _conv2d_fwd,
    _conv2d_grad_input_fwd,
    _conv2d_grad_weight_fwd,
)
from runtime.ops.windows import geometry  # noqa: E402

# Row block of the shift formulation: the [rows, O] accumulator and product stay in L2.
SHIFT_ROWS = 4096


class Case(NamedTuple):
    """One convolution: input [N, C, H, W], weight [O, C, kh, kw], symmetric padding."""

    name: str
    x: tuple[int, int, int, int]
    w: tuple[int, int, int, int]
    padding: int


LENET = (Case("conv1", (64, 1, 28, 28), (6, 1, 5, 5), 2),
         Case("conv2", (64, 6, 14, 14), (16, 6, 5, 5), 0))
WIDE = Case("wide", (64, 32, 16, 16), (64, 32, 3, 3), 1)
SMALL = (Case("small pad", (3, 2, 7, 6), (4, 2, 3, 2), 1),
         Case("small", (2, 3, 6, 5), (5, 3, 2, 3), 0))


class Geom(NamedTuple):
    """Sizes of one NHWC convolution: padded Hp x Wp, output Ho x Wo."""

    N: int
    C: int
    H: int
    W: int
    O: int
    kh: int
    kw: int
    p: int
    Hp: int
    Wp: int
    Ho: int
    Wo: int


def geom(x_nhwc_shape, w_khwco_shape, p: int) -> Geom:
    """The sizes of x [N,H,W,C] * w [kh,kw,C,O] with padding p on every side."""
    N, H, W, C = x_nhwc_shape
    kh, kw, _, O = w_khwco_shape
    Hp, Wp = H + 2 * p, W + 2 * p
    return Geom(N, C, H, W, O, kh, kw, p, Hp, Wp, Hp - kh + 1, Wp - kw + 1)


def _view(a: np.ndarray, offset: int, shape, strides) -> np.ndarray:
    """A view of contiguous `a` from element `offset`, strides in elements."""
    flat = a.reshape(-1)[offset:]
    return as_strided(flat, shape=tuple(shape), strides=tuple(s * a.itemsize for s in strides))


def _padded_rows(x: np.ndarray, g: Geom, tail: int) -> np.ndarray:
    """x [N,H,W,C] zero-padded into flat rows [N*Hp*Wp + tail, C] (one row per position)."""
    buf = np.zeros((g.N * g.Hp * g.Wp + tail, g.C), dtype=x.dtype)
    buf[:g.N * g.Hp * g.Wp].reshape(g.N, g.Hp, g.Wp, g.C)[:, g.p:g.p + g.H,
                                                          g.p:g.p + g.W] = x
    return buf


def _unpad_rows(buf: np.ndarray, g: Geom) -> np.ndarray:
    """The inverse of `_padded_rows`: the interior [N,H,W,C] of the flat padded rows."""
    grid = buf[:g.N * g.Hp * g.Wp].reshape(g.N, g.Hp, g.Wp, g.C)
    return np.ascontiguousarray(grid[:, g.p:g.p + g.H, g.p:g.p + g.W])


def _nchw_geo(g: Geom):
    return geometry((g.H, g.W), (g.kh, g.kw), 1, g.p, 1)


# --------------------------------------------------------------------------- nhwc rows


def _cols_rows(x: np.ndarray, g: Geom) -> np.ndarray:
    """Columns [N*Ho*Wo, kh*kw*C] of x [N,H,W,C]."""
    xp = np.pad(x, ((0, 0), (g.p, g.p), (g.p, g.p), (0, 0))) if g.p else x
    xp = np.ascontiguousarray(xp)
    hw, w_ = g.Wp * g.C, g.C
    view = _view(xp, 0, (g.N, g.Ho, g.Wo, g.kh, g.kw, g.C),
                 (g.Hp * hw, hw, w_, hw, w_, 1))
    return np.ascontiguousarray(view).reshape(g.N * g.Ho * g.Wo, -1)


def rows_fwd(x: np.ndarray, w: np.ndarray, p: int) -> np.ndarray:
    # y[n,h,w,:] = cols[n,h,w,:] · w[(i,j,c), :]
    g = geom(x.shape, w.shape, p)
    return (_cols_rows(x, g) @ w.reshape(-1, g.O)).reshape(g.N, g.Ho, g.Wo, g.O)


def rows_grad_input(gy: np.ndarray, w: np.ndarray, p: int, hw) -> np.ndarray:
    # dx = col2im(g · wᵀ)
    g = geom((gy.shape[0], *hw, w.shape[2]), w.shape, p)
    dcols = (gy.reshape(-1, g.O) @ w.reshape(-1, g.O).T).reshape(
        g.N, g.Ho, g.Wo, g.kh, g.kw, g.C)
    dxp = np.zeros((g.N, g.Hp, g.Wp, g.C), dtype=dcols.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            dxp[:, i:i + g.Ho, j:j + g.Wo] += dcols[:, :, :, i, j]
    return np.ascontiguousarray(dxp[:, p:p + g.H, p:p + g.W])


def rows_grad_weight(x: np.ndarray, gy: np.ndarray, p: int, khw) -> np.ndarray:
    # dw[(i,j,c), o] = colsᵀ · g
    g = geom(x.shape, (*khw, x.shape[3], gy.shape[3]), p)
    dw = _cols_rows(x, g).T @ gy.reshape(-1, g.O)
    return dw.reshape(g.kh, g.kw, g.C, g.O)


# --------------------------------------------------------------------------- nhwc kmajor


def _kmajor_view(buf: np.ndarray, g: Geom) -> np.ndarray:
    """Window view [kh, kw, C, N, Ho*Wp] of the flat padded rows (wide grid)."""
    C, img = g.C, g.Hp * g.Wp * g.C
    return _view(buf, 0, (g.kh, g.kw, C, g.N, g.Ho * g.Wp), (g.Wp * C, C, 1, img, C))


def _wide_g(gy: np.ndarray, g: Geom) -> np.ndarray:
    """g [N,Ho,Wo,O] on the wide grid [N,Ho,Wp,O] (zeros in the dropped columns)."""
    out = np.zeros((g.N, g.Ho, g.Wp, g.O), dtype=gy.dtype)
    out[:, :, :g.Wo] = gy
    return out


def kmajor_fwd(x: np.ndarray, w: np.ndarray, p: int) -> np.ndarray:
    # y = colsᵀ · w on the wide grid, columns Wo.. dropped
    g = geom(x.shape, w.shape, p)
    view = _kmajor_view(_padded_rows(x, g, g.kw - 1), g)
    wk = w.reshape(-1, g.O)
    out = np.empty((g.N, g.Ho, g.Wo, g.O), dtype=np.result_type(x, w))
    for b in _batch_chunks(g.N, wk.shape[0], _nchw_geo(g), x.itemsize):
        cols = np.ascontiguousarray(view[:, :, :, b]).reshape(wk.shape[0], -1)
        out[b] = (cols.T @ wk).reshape(-1, g.Ho, g.Wp, g.O)[:, :, :g.Wo]
    return out


def kmajor_grad_input(gy: np.ndarray, w: np.ndarray, p: int, hw) -> np.ndarray:
    # dx = col2im(w · gᵀ): kh*kw slice-adds of runs Ho*Wp into channel planes, then NHWC
    g = geom((gy.shape[0], *hw, w.shape[2]), w.shape, p)
    wk = w.reshape(-1, g.O)
    gw = _wide_g(gy, g).reshape(g.N, -1, g.O)
    img = g.Hp * g.Wp
    L = g.N * img + g.kw - 1
    buf = np.zeros((g.C, L), dtype=np.result_type(gy, w))
    view = _view(buf, 0, (g.kh, g.kw, g.C, g.N, g.Ho * g.Wp), (g.Wp, 1, L, img, 1))
    for b in _batch_chunks(g.N, wk.shape[0], _nchw_geo(g), gy.itemsize, scale=2):
        dcols = (wk @ gw[b].reshape(-1, g.O).T).reshape(g.kh, g.kw, g.C, -1, g.Ho * g.Wp)
        dst = view[:, :, :, b]
        for i in range(g.kh):
            for j in range(g.kw):
                d = dst[i, j]
                d += dcols[i, j]
    planes = buf[:, :g.N * img].reshape(g.C, g.N, g.Hp, g.Wp)
    return np.ascontiguousarray(planes[:, :, p:p + g.H, p:p + g.W].transpose(1, 2, 3, 0))


def kmajor_grad_weight(x: np.ndarray, gy: np.ndarray, p: int, khw) -> np.ndarray:
    # dw = cols · g over the wide grid (g is zero in the dropped columns)
    g = geom(x.shape, (*khw, x.shape[3], gy.shape[3]), p)
    view = _kmajor_view(_padded_rows(x, g, g.kw - 1), g)
    gw = _wide_g(gy, g).reshape(g.N, -1, g.O)
    K = g.kh * g.kw * g.C
    dw = np.zeros((K, g.O), dtype=np.result_type(x, gy))
    for b in _batch_chunks(g.N, K, _nchw_geo(g), x.itemsize):
        cols = np.ascontiguousarray(view[:, :, :, b]).reshape(K, -1)
        dw += cols @ gw[b].reshape(-1, g.O)
    return dw.reshape(g.kh, g.kw, g.C, g.O)


# --------------------------------------------------------------------------- nhwc flat


def _flat_blocks(M: int, K: int, itemsize: int, scale: int = 1) -> list[slice]:
    """Row blocks of the flat grid whose columns [K, rows] fit `scale` times COLS_BYTES."""
    n = max(1, scale * conv_ops.COLS_BYTES // (K * itemsize))
    return [slice(r, min(r + n, M)) for r in range(0, M, n)]


def _flat_cols(X: np.ndarray, g: Geom, b: slice) -> np.ndarray:
    """Columns [kh*kw*C, rows] of the flat padded rows X for the grid rows `b`."""
    C = g.C
    view = _view(X, b.start * C, (g.kh, g.kw, C, b.stop - b.start), (g.Wp * C, C, 1, C))
    return np.ascontiguousarray(view).reshape(-1, b.stop - b.start)


def flat_fwd(x: np.ndarray, w: np.ndarray, p: int) -> np.ndarray:
    # y = colsᵀ · w over every padded position, rows past Ho, Wo dropped
    g = geom(x.shape, w.shape, p)
    X = _padded_rows(x, g, _offsets(g)[-1][2])
    wk = w.reshape(-1, g.O)
    M = g.N * g.Hp * g.Wp
    y = np.empty((M, g.O), dtype=np.result_type(x, w))
    for b in _flat_blocks(M, wk.shape[0], x.itemsize):
        np.matmul(_flat_cols(X, g, b).T, wk, out=y[b])
    return np.ascontiguousarray(y.reshape(g.N, g.Hp, g.Wp, g.O)[:, :g.Ho, :g.Wo])


def flat_grad_input(gy: np.ndarray, w: np.ndarray, p: int, hw) -> np.ndarray:
    # dX[r + i*Wp + j, c] += (w · gᵀ)[(i,j,c), r]: kh*kw slice-adds of C runs over all rows
    g = geom((gy.shape[0], *hw, w.shape[2]), w.shape, p)
    offs = _offsets(g)
    wk = w.reshape(-1, g.O)
    G = _padded_g(gy, g)
    M = G.shape[0]
    dX = np.zeros((M + offs[-1][2], g.C), dtype=np.result_type(gy, w))
    dxt = dX.T
    for b in _flat_blocks(M, wk.shape[0], gy.itemsize, scale=2):
        dcols = (wk @ G[b].T).reshape(g.kh, g.kw, g.C, -1)
        for i, j, o in offs:
            d = dxt[:, b.start + o:b.stop + o]
            d += dcols[i, j]
    return _unpad_rows(dX, g)


def flat_grad_weight(x: np.ndarray, gy: np.ndarray, p: int, khw) -> np.ndarray:
    # dw = cols · g over every padded position (g is zero off the output)
    g = geom(x.shape, (*khw, x.shape[3], gy.shape[3]), p)
    X = _padded_rows(x, g, _offsets(g)[-1][2])
    G = _padded_g(gy, g)
    K = g.kh * g.kw * g.C
    dw = np.zeros((K, g.O), dtype=np.result_type(x, gy))
    for b in _flat_blocks(G.shape[0], K, x.itemsize):
        dw += _flat_cols(X, g, b) @ G[b]
    return dw.reshape(g.kh, g.kw, g.C, g.O)


# --------------------------------------------------------------------------- nhwc shift


def _blocks(M: int) -> list[slice]:
    return [slice(r, min(r + SHIFT_ROWS, M)) for r in range(0, M, SHIFT_ROWS)]


def _offsets(g: Geom) -> list[tuple[int, int, int]]:
    return [(i, j, i * g.Wp + j) for i in range(g.kh) for j in range(g.kw)]


def shift_fwd(x: np.ndarray, w: np.ndarray, p: int) -> np.ndarray:
    # y[r] = Σ_ij X[r + i*Wp + j] · w[i,j] for every padded position r; rows past Ho, Wo dropped
    g = geom(x.shape, w.shape, p)
    offs = _offsets(g)
    X = _padded_rows(x, g, offs[-1][2])
    M = g.N * g.Hp * g.Wp
    y = np.empty((M, g.O), dtype=np.result_type(x, w))
    tmp = np.empty((min(M, SHIFT_ROWS), g.O), dtype=y.dtype)
    for b in _blocks(M):
        yb, tb = y[b], tmp[:b.stop - b.start]
        np.matmul(X[b], w[0, 0], out=yb)
        for i, j, o in offs[1:]:
            np.matmul(X[b.start + o:b.stop + o], w[i, j], out=tb)
            yb += tb
    return np.ascontiguousarray(y.reshape(g.N, g.Hp, g.Wp, g.O)[:, :g.Ho, :g.Wo])


def _padded_g(gy: np.ndarray, g: Geom) -> np.ndarray:
    """g [N,Ho,Wo,O] on every padded position [N*Hp*Wp, O] (zeros elsewhere)."""
    out = np.zeros((g.N, g.Hp, g.Wp, g.O), dtype=gy.dtype)
    out[:, :g.Ho, :g.Wo] = gy
    return out.reshape(-1, g.O)


def shift_grad_input(gy: np.ndarray, w: np.ndarray, p: int, hw) -> np.ndarray:
    # dX[r + i*Wp + j] += g[r] · w[i,j]ᵀ
    g = geom((gy.shape[0], *hw, w.shape[2]), w.shape, p)
    offs = _offsets(g)
    G = _padded_g(gy, g)
    M = G.shape[0]
    dX = np.zeros((M + offs[-1][2], g.C), dtype=np.result_type(gy, w))
    tmp = np.empty((min(M, SHIFT_ROWS), g.C), dtype=dX.dtype)
    for b in _blocks(M):
        tb = tmp[:b.stop - b.start]
        for i, j, o in offs:
            np.matmul(G[b], w[i, j].T, out=tb)
            dX[b.start + o:b.stop + o] += tb
    return _unpad_rows(dX, g)


def shift_grad_weight(x: np.ndarray, gy: np.ndarray, p: int, khw) -> np.ndarray:
    # dw[i,j] = X[+ij]ᵀ · g over every padded position (g is zero off the output)
    g = geom(x.shape, (*khw, x.shape[3], gy.shape[3]), p)
    offs = _offsets(g)
    X = _padded_rows(x, g, offs[-1][2])
    G = _padded_g(gy, g)
    M = G.shape[0]
    dw = np.empty((g.kh, g.kw, g.C, g.O), dtype=np.result_type(x, gy))
    for i, j, o in offs:
        np.matmul(X[o:o + M].T, G, out=dw[i, j])
    return dw


def _gemm(dtype):
    return get_blas_funcs("gemm", dtype=np.dtype(dtype))


def shift_blas_fwd(x: np.ndarray, w: np.ndarray, p: int) -> np.ndarray:
    # yᵀ[:, r] += w[i,j]ᵀ · X[r + i*Wp + j]ᵀ, accumulated by BLAS (beta = 1) in place
    g = geom(x.shape, w.shape, p)
    offs = _offsets(g)
    X = _padded_rows(x, g, offs[-1][2])
    M = g.N * g.Hp * g.Wp
    y = np.zeros((M, g.O), dtype=np.result_type(x, w))
    gemm, yt = _gemm(y.dtype), y.T
    for b in _blocks(M):
        for i, j, o in offs:
            gemm(1.0, w[i, j].T, X[b.start + o:b.stop + o].T, 1.0, yt[:, b], overwrite_c=1)
    return np.ascontiguousarray(y.reshape(g.N, g.Hp, g.Wp, g.O)[:, :g.Ho, :g.Wo])


def shift_blas_grad_input(gy: np.ndarray, w: np.ndarray, p: int, hw) -> np.ndarray:
    # dXᵀ[:, r + i*Wp + j] += w[i,j] · g[r]ᵀ, accumulated by BLAS (beta = 1) in place
    g = geom((gy.shape[0], *hw, w.shape[2]), w.shape, p)
    offs = _offsets(g)
    G = _padded_g(gy, g)
    M = G.shape[0]
    dX = np.zeros((M + offs[-1][2], g.C), dtype=np.result_type(gy, w))
    gemm, dxt = _gemm(dX.dtype), dX.T
    for b in _blocks(M):
        gt = G[b].T
        for i, j, o in offs:
            gemm(1.0, w[i, j].T, gt, 1.0, dxt[:, b.start + o:b.stop + o], trans_a=1,
                 overwrite_c=1)
    return _unpad_rows(dX, g)


# --------------------------------------------------------------------------- the candidates


class Conv(NamedTuple):
    """Forward, input gradient and weight gradient of one layout's formulation."""

    fwd: Callable
    grad_input: Callable
    grad_weight: Callable


def _nchw() -> Conv:
    one = (1, 1)

    def fwd(x, w, p):
        return _conv2d_fwd(np, x, w, one, (p, p), one, 1)

    def grad_input(gy, w, p, hw):
        return _conv2d_grad_input_fwd(np, gy, w, one, (p, p), one, 1, tuple(hw))

    def grad_weight(x, gy, p, khw):
        return _conv2d_grad_weight_fwd(np, x, gy, one, (p, p), one, 1, tuple(khw))

    return Conv(fwd, grad_input, grad_weight)


def _via_nchw(nchw: Conv) -> Conv:
    """dslrun's kernels on NHWC arrays through transposed views: their gathers to the
    batch-chunked K-major grids read any strides; the results are transposed to NHWC."""

    def fwd(x, w, p):
        return to_nhwc(nchw.fwd(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), p))

    def grad_input(gy, w, p, hw):
        return to_nhwc(nchw.grad_input(gy.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), p,
                                       hw))

    def grad_weight(x, gy, p, khw):
        dw = nchw.grad_weight(x.transpose(0, 3, 1, 2), gy.transpose(0, 3, 1, 2), p, khw)
        return np.ascontiguousarray(dw.transpose(2, 3, 1, 0))

    return Conv(fwd, grad_input, grad_weight)


FORMULATIONS: dict[str, tuple[str, Conv]] = {
    "nchw (dslrun)": ("nchw", _nchw()),
    "nhwc rows": ("nhwc", Conv(rows_fwd, rows_grad_input, rows_grad_weight)),
    "nhwc kmajor": ("nhwc", Conv(kmajor_fwd, kmajor_grad_input, kmajor_grad_weight)),
    "nhwc flat": ("nhwc", Conv(flat_fwd, flat_grad_input, flat_grad_weight)),
    "nhwc shift": ("nhwc", Conv(shift_fwd, shift_grad_input, shift_grad_weight)),
    "nhwc shift blas": ("nhwc", Conv(shift_blas_fwd, shift_blas_grad_input, shift_grad_weight)),
    "nhwc via nchw": ("nhwc", _via_nchw(_nchw())),
}


def to_nhwc(a: np.ndarray) -> np.ndarray:
    """[N,C,H,W] -> [N,H,W,C], contiguous."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a: np.ndarray) -> np.ndarray:
    """[N,H,W,C] -> [N,C,H,W], contiguous."""
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


class Operands(NamedTuple):
    """A case's x, w and output cotangent g, in both layouts (w NHWC is [kh,kw,C,O])."""

    nchw: tuple[np.ndarray, np.ndarray, np.ndarray]
    nhwc: tuple[np.ndarray, np.ndarray, np.ndarray]
    p: int
    hw: tuple[int, int]
    khw: tuple[int, int]


def operands(case: Case, dtype, seed: int = 0) -> Operands:
    """Random N(0, 1) x, w and g of the case's shapes."""
    rng = np.random.default_rng(seed)
    N, _, H, W = case.x
    O, _, kh, kw = case.w
    x = rng.standard_normal(case.x).astype(dtype)
    w = rng.standard_normal(case.w).astype(dtype)
    Ho, Wo = H + 2 * case.padding - kh + 1, W + 2 * case.padding - kw + 1
    gy = rng.standard_normal((N, O, Ho, Wo)).astype(dtype)
    return Operands((x, w, gy), (to_nhwc(x), np.ascontiguousarray(w.transpose(2, 3, 1, 0)),
                                 to_nhwc(gy)), case.padding, (H, W), (kh, kw))


def _calls(conv: Conv, ops: Operands, layout: str) -> tuple[Callable, Callable, Callable]:
    x, w, gy = ops.nchw if layout == "nchw" else ops.nhwc
    return (lambda: conv.fwd(x, w, ops.p), lambda: conv.grad_input(gy, w, ops.p, ops.hw),
            lambda: conv.grad_weight(x, gy, ops.p, ops.khw))


def check(cases=SMALL + LENET, tol: float = 1e-10) -> dict[str, float]:
    """Every NHWC formulation against dslrun's kernels in float64; the largest absolute
    difference per formulation (raises AssertionError past `tol`)."""
    worst: dict[str, float] = {}
    for case in cases:
        ops = operands(case, np.float64)
        want = [f() for f in _calls(FORMULATIONS["nchw (dslrun)"][1], ops, "nchw")]
        want = [to_nhwc(want[0]), to_nhwc(want[1]), want[2].transpose(2, 3, 1, 0)]
        for name, (layout, conv) in FORMULATIONS.items():
            if layout == "nchw":
                continue
            for part, f, ref in zip(Conv._fields, _calls(conv, ops, layout), want):
                got = f()
                assert got.shape == ref.shape, (case.name, name, part, got.shape, ref.shape)
                d = float(np.max(np.abs(got - ref)))
                assert d < tol, f"{case.name}: {name} {part} differs by {d:.3g}"
                worst[name] = max(worst.get(name, 0.0), d)
    return worst


# --------------------------------------------------------------------------- timing


def time_all(fns: dict[str, Callable], calls: int, repeat: int) -> dict[str, float]:
    """Median milliseconds per call over `repeat` runs of `calls` calls, interleaved."""
    for f in fns.values():
        f()
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            runs[k].append(1e3 * (time.perf_counter() - t0) / calls)
    return {k: statistics.median(v) for k, v in runs.items()}


def bench_case(case: Case, dtype, calls: int, repeat: int) -> dict[str, list[float]]:
    """ms of fwd, grad_input, grad_weight per formulation, and of the four layout
    transposes (x, g to NHWC; y, dx to NCHW)."""
    ops = operands(case, dtype)
    fns = {}
    for name, (layout, conv) in FORMULATIONS.items():
        for part, f in zip(Conv._fields, _calls(conv, ops, layout)):
            fns[(name, part)] = f
    x, _, gy = ops.nchw
    y_nhwc, dx_nhwc = ops.nhwc[2], ops.nhwc[0]
    fns.update({("transpose", "x"): lambda: to_nhwc(x), ("transpose", "g"): lambda: to_nhwc(gy),
                ("transpose", "y"): lambda: to_nchw(y_nhwc),
                ("transpose", "dx"): lambda: to_nchw(dx_nhwc)})
    ms = time_all(fns, calls, repeat)
    out: dict[str, list[float]] = {}
    for (name, _), t in ms.items():
        out.setdefault(name, []).append(t)
    return out


NCHW, BEST = "nchw (dslrun)", "best nhwc"  # best nhwc: the fastest NHWC kernel of each part


def _layout(name: str) -> str:
    return "nhwc" if name == BEST else FORMULATIONS[name][0]


def lenet_step_ms(case: Case, times: list[float]) -> float:
    """A conv's share of the LeNet step: the first conv's input is data, so no input
    gradient is computed for it."""
    fwd, gin, gw = times
    return fwd + gw if case.name == "conv1" else fwd + gin + gw


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only the float64 equality check")
    ap.add_argument("--wide", action="store_true", help="also x[64,32,16,16] w[64,32,3,3]")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)
    cases = LENET + ((WIDE,) if args.wide else ())
    worst = check(SMALL + cases)
    print("float64 check against nchw (dslrun): largest |difference| "
          + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    if args.check:
        return
    print(f"numpy {np.__version__}, {args.dtype}; median ms per call of {args.repeat} runs "
          f"of {args.calls} calls")
    step: dict[str, float] = {}
    boundary = 0.0
    for case in cases:
        res = bench_case(case, np.dtype(args.dtype), args.calls, args.repeat)
        base = sum(res[NCHW])
        print(f"\n{case.name}: x{list(case.x)} w{list(case.w)} padding {case.padding}")
        print(f"  {'':16s} {'fwd':>8s} {'grad_in':>8s} {'grad_w':>8s} {'total':>8s} "
              f"{'/nchw':>6s}")
        nhwc = [k for k, (layout, _) in FORMULATIONS.items() if layout == "nhwc"]
        res[BEST] = [min(res[k][part] for k in nhwc) for part in range(3)]
        for name in (*FORMULATIONS, BEST):
            t = res[name]
            print(f"  {name:16s} {t[0]:8.3f} {t[1]:8.3f} {t[2]:8.3f} {sum(t):8.3f} "
                  f"{sum(t) / base:6.2f}")
            if case in LENET:
                step[name] = step.get(name, 0.0) + lenet_step_ms(case, t)
        tx, tg, ty, tdx = res["transpose"]
        print(f"  layout transposes: x->nhwc {tx:.3f}, y->nchw {ty:.3f}, g->nhwc {tg:.3f}, "
              f"dx->nchw {tdx:.3f}; all four {tx + ty + tg + tdx:.3f} ms")
        if case in LENET:
            boundary += tx + ty + tg + (tdx if case.name != "conv1" else 0.0)
        best = min((*FORMULATIONS, BEST), key=lambda k: sum(res[k]))
        print(f"  faster: {_layout(best)} ({best}), by {base / sum(res[best]):.2f}x"
              if best != NCHW else f"  faster: nchw, by {sum(res[BEST]) / base:.2f}x over "
              f"the best NHWC kernels")
    base = step[NCHW]
    print("\nLeNet step (conv1 fwd + grad_w, conv2 fwd + grad_in + grad_w), ms:")
    for name, t in step.items():
        print(f"  {name:16s} {t:8.3f} {t / base:6.2f}")
    print(f"  layout transposes around each conv (NHWC convs in an NCHW network): "
          f"{boundary:.3f} ms")
    best = min(step, key=step.get)
    print(f"faster for the LeNet step: {_layout(best)} ({best}), {step[best]:.3f} ms against "
          f"{min(t for k, t in step.items() if _layout(k) != _layout(best)):.3f} ms for the "
          f"best {'nhwc' if _layout(best) == 'nchw' else 'nchw'}")


if __name__ == "__main__":
    main()
