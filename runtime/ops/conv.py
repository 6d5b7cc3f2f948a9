"""Convolution over NCHW tensors: conv2d, conv1d and their gradient kernels.

`conv2d` is a cross-correlation computed as im2col + one GEMM. The columns are gathered from a
zero-padded, per-plane flattened copy of the input with one `as_strided` view and one
contiguous copy, laid out `[C*kh*kw, N*Ho*Wq]`, so the forward pass and the weight gradient
are each a single (group-batched) matmul. The input gradient is one matmul onto a batch-last
grid `[C*kh*kw, Ho*Wq*N]` followed by col2im: a loop over the kh*kw kernel offsets with
strided slice-adds into padded `[Hp, Wp, N]` planes (no scatter-add `ufunc.at`). With unit
column stride the grid is "wide": each output row spans the whole padded width `Wq = Wp`
(the `Wp - Wo` extra columns are computed and dropped, or carry zero gradient), which makes
the gathers and the slice-adds long contiguous runs; NumPy's per-inner-loop overhead, not
arithmetic, dominates these kernels. (Channels-last layouts were measured against this one:
`bench/conv_layouts.py`.)

Every backward kernel is a registered op with its own VJP, so second-order gradients work:
`conv2d_grad_input` is linear in (g, w), `conv2d_grad_weight` in (x, g). The geometry and
the strided views are `runtime.ops.windows`'; pooling is `runtime.ops.pool`.
"""

from __future__ import annotations

from runtime.ir import TensorType
from runtime.ops.registry import OpDef, ShapeError, register
from runtime.ops.shapes import float_result
from runtime.ops.windows import (
    Geo,
    check_geometry,
    geometry,
    merge_axes,
    planes,
    strided,
)

CONV2D = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
CONV1D = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}


# --------------------------------------------------------------------------- kernels


def _im2col(xp, x, geo: Geo):
    """Columns [C, kh, kw, N, Ho, Wq] (contiguous) of x [N, C, H, W]."""
    N, C = x.shape[:2]
    buf = planes(xp, x, geo)
    L, Wp = geo.L, geo.Wp
    view = strided(xp, buf, 0, (C, geo.kh, geo.kw, N, geo.Ho, geo.Wq),
                    (L, geo.dh * Wp, geo.dw, C * L, geo.sh * Wp, geo.cs))
    return xp.ascontiguousarray(view)


def _to_grid(xp, g, geo: Geo):
    """g [N, O, Ho, Wo] as the GEMM grid [O, N, Ho, Wq] (zeros in the dropped columns)."""
    N, O = g.shape[:2]
    if geo.Wq == geo.Wo:
        return xp.ascontiguousarray(g.transpose(1, 0, 2, 3))
    out = xp.zeros((O, N, geo.Ho, geo.Wq), dtype=g.dtype)
    out[..., :geo.Wo] = g.transpose(1, 0, 2, 3)
    return out


def _to_grid_last(xp, g, geo: Geo):
    """g [N, O, Ho, Wo] as a batch-last GEMM grid [O, Ho, Wq, N]."""
    N, O = g.shape[:2]
    gt = g.transpose(1, 2, 3, 0)
    if geo.Wq == geo.Wo:
        return xp.ascontiguousarray(gt)
    out = xp.zeros((O, geo.Ho, geo.Wq, N), dtype=g.dtype)
    out[:, :, :geo.Wo] = gt
    return out


def _col2im_last(xp, dcols, N: int, C: int, geo: Geo):
    """Adjoint of im2col on a batch-last grid: dcols [C, kh, kw, Ho, Wq, N] summed into
    dx [N, C, H, W]. Planes are [Hp, Wp, N], so each kernel offset adds one long run per
    channel (per output row when strided)."""
    Wp, Lc = geo.Wp, geo.L * N
    buf = xp.zeros((C, Lc), dtype=dcols.dtype)
    tail, tail_strides = merge_axes((geo.Ho, geo.Wq, N), (geo.sh * Wp * N, geo.cs * N, 1))
    view = strided(xp, buf, 0, (geo.kh, geo.kw, C) + tail,
                    (geo.dh * Wp * N, geo.dw * N, Lc) + tail_strides)
    dcols = dcols.reshape((C, geo.kh, geo.kw) + tail)
    for i in range(geo.kh):
        for j in range(geo.kw):
            dst = view[i, j]
            dst += dcols[:, i, j]
    inner = strided(xp, buf, (geo.top * Wp + geo.left) * N, (N, C, geo.H, geo.W),
                     (1, Lc, Wp * N, N))
    return xp.ascontiguousarray(inner)


def _conv_geo(x_hw, w, stride, padding, dilation):
    return geometry(x_hw, w.shape[2:], stride, padding, dilation)


# The columns of one GEMM are cut to about this many bytes by splitting the batch: unsplit,
# a LeNet conv at batch 1024 costs 2.2x per sample what it does at batch 16 (its columns
# leave the caches: 1 MiB L2 per core here); split too finely, the per-chunk Python work
# (col2im's kh*kw slice-adds) dominates, so the input gradient takes chunks twice as large.
# Measured with `bench/batch_scaling.py` and per kernel at batch 64 and 1024. On a GPU the
# chunks are a few launches more per conv (2 MiB of columns is still thousands of threads).
COLS_BYTES = 2 << 20


def _batch_chunks(N: int, rows: int, geo: Geo, itemsize: int,
                  scale: int = 1) -> list[slice]:
    """The slices of the batch whose im2col columns ([rows, n*Ho*Wq]) fit `scale` times
    COLS_BYTES."""
    n = max(1, scale * COLS_BYTES // max(1, rows * geo.Ho * geo.Wq * itemsize))
    return [slice(i, min(i + n, N)) for i in range(0, N, n)]


def _conv2d_fwd(xp, x, w, stride, padding, dilation, groups):
    geo = _conv_geo(x.shape[2:], w, stride, padding, dilation)
    out = xp.empty((x.shape[0], w.shape[0], geo.Ho, geo.Wo), dtype=xp.result_type(x, w))
    return conv2d_into(xp, out, x, w, stride, padding, dilation, groups)


def conv2d_into(xp, out, x, w, stride, padding, dilation, groups):
    """conv2d written into `out` [N, O, Ho, Wo] (the kernel, and its out= form)."""
    # y[n,o,p] = Σ_{c,i,j} w[o,c,i,j] · xpad[n, c·g(o), p·s + (i,j)·d]
    geo = _conv_geo(x.shape[2:], w, stride, padding, dilation)
    N, G, O = x.shape[0], groups, w.shape[0]
    wg = w.reshape(G, O // G, -1)
    for b in _batch_chunks(N, wg.shape[-1] * G, geo, x.itemsize):
        n = b.stop - b.start
        cols = _im2col(xp, x[b], geo).reshape(G, -1, n * geo.Ho * geo.Wq)
        y = xp.matmul(wg, cols).reshape(O, n, geo.Ho, geo.Wq)
        out[b] = y[..., :geo.Wo].transpose(1, 0, 2, 3)
    return out


def _conv2d_grad_input_fwd(xp, g, w, stride, padding, dilation, groups, input_size):
    out = xp.empty((g.shape[0], w.shape[1] * groups) + tuple(input_size),
                   dtype=xp.result_type(g, w))
    return conv2d_grad_input_into(xp, out, g, w, stride, padding, dilation, groups, input_size)


def conv2d_grad_input_into(xp, out, g, w, stride, padding, dilation, groups, input_size):
    """conv2d_grad_input written into `out` [N, C, H, W] (the kernel, and its out= form)."""
    # dx = col2im(Wᵀ · G): the transpose of conv2d in x
    geo = geometry(tuple(input_size), w.shape[2:], stride, padding, dilation)
    N, O, G = g.shape[0], g.shape[1], groups
    C = w.shape[1] * G
    wt = w.reshape(G, O // G, -1).transpose(0, 2, 1)
    for b in _batch_chunks(N, C * geo.kh * geo.kw, geo, g.itemsize, scale=2):
        n = b.stop - b.start
        gt = _to_grid_last(xp, g[b], geo).reshape(G, O // G, -1)
        dcols = xp.matmul(wt, gt)
        out[b] = _col2im_last(xp, dcols.reshape(C, geo.kh, geo.kw, geo.Ho, geo.Wq, n), n, C,
                              geo)
    return out


def _conv2d_grad_weight_fwd(xp, x, g, stride, padding, dilation, groups, kernel_size):
    # dw[o,c,i,j] = Σ_{n,p} g[n,o,p] · xpad[n, c, p·s + (i,j)·d]  (G · colsᵀ)
    kh, kw = kernel_size
    geo = geometry(x.shape[2:], (kh, kw), stride, padding, dilation)
    N, C, O, G = x.shape[0], x.shape[1], g.shape[1], groups
    dwt = xp.zeros((G, C // G * kh * kw, O // G), dtype=xp.result_type(x, g))
    for b in _batch_chunks(N, C * kh * kw, geo, x.itemsize):
        cols = _im2col(xp, x[b], geo).reshape(G, C // G * kh * kw, -1)
        gt = _to_grid(xp, g[b], geo).reshape(G, O // G, -1)
        # as (cols · Gᵀ)ᵀ: BLAS runs this long reduction ~1.5-2x faster than G · colsᵀ
        dwt += xp.matmul(cols, gt.transpose(0, 2, 1))
    return xp.ascontiguousarray(dwt.transpose(0, 2, 1)).reshape(O, C // G, kh, kw)


# --------------------------------------------------------------------------- shape rules


def _check_groups(op: str, C, O, groups, shapes: str) -> None:
    if not isinstance(groups, int) or groups < 1:
        raise ShapeError(f"{op}: groups must be a positive int, got {groups!r}")
    if not isinstance(C, int):
        raise ShapeError(f"{op}: the channel count must be static ({shapes})")
    if C % groups:
        raise ShapeError(f"{op}: groups={groups} does not divide {C} channels ({shapes})")
    if O % groups:
        raise ShapeError(f"{op}: groups={groups} does not divide {O} output channels "
                         f"({shapes})")


def _conv_check(op: str, x: TensorType, w: TensorType, attrs) -> Geo:
    shapes = f"input {x}, weight {w}"
    if x.rank != 4 or w.rank != 4:
        raise ShapeError(f"{op}: expects input [N,C,H,W] and weight [O,C/groups,kh,kw], "
                         f"got {shapes}")
    C, O, groups = x.shape[1], w.shape[0], attrs["groups"]
    _check_groups(op, C, O, groups, shapes)
    if w.shape[1] * groups != C:
        raise ShapeError(f"{op}: input has {C} channels but the weight expects "
                         f"{w.shape[1] * groups} ({shapes}, groups={groups})")
    return check_geometry(op, x.shape[2:], w.shape[2:], attrs["stride"], attrs["padding"],
                           attrs["dilation"], shapes)


def _conv2d_shape(attrs, x, w):
    dt = float_result("conv2d", x, w)
    geo = _conv_check("conv2d", x, w, attrs)
    return TensorType(dt, (x.shape[0], w.shape[0], geo.Ho, geo.Wo))


def _conv2d_grad_input_shape(attrs, g, w):
    op = "conv2d_grad_input"
    dt = float_result(op, g, w)
    size = attrs["input_size"]
    if size is None or len(tuple(size)) != 2:
        raise ShapeError(f"{op}: needs input_size=(H, W), got {size!r}")
    if g.rank != 4 or w.rank != 4:
        raise ShapeError(f"{op}: expects g [N,O,Ho,Wo] and weight [O,C/groups,kh,kw], "
                         f"got g {g}, weight {w}")
    x = TensorType(dt, (g.shape[0], w.shape[1] * attrs["groups"], *size))
    geo = _conv_check(op, x, w, attrs)
    if (g.shape[1], *g.shape[2:]) != (w.shape[0], geo.Ho, geo.Wo):
        raise ShapeError(f"{op}: gradient {g} does not fit input {x} and weight {w} "
                         f"(expected [{g.shape[0]},{w.shape[0]},{geo.Ho},{geo.Wo}])")
    return x


def _conv2d_grad_weight_shape(attrs, x, g):
    op = "conv2d_grad_weight"
    dt = float_result(op, x, g)
    ks = attrs["kernel_size"]
    if ks is None or len(tuple(ks)) != 2:
        raise ShapeError(f"{op}: needs kernel_size=(kh, kw), got {ks!r}")
    if x.rank != 4 or g.rank != 4:
        raise ShapeError(f"{op}: expects input [N,C,H,W] and g [N,O,Ho,Wo], got "
                         f"input {x}, g {g}")
    groups = attrs["groups"]
    _check_groups(op, x.shape[1], g.shape[1], groups, f"input {x}, g {g}")
    w = TensorType(dt, (g.shape[1], x.shape[1] // groups, *ks))
    geo = _conv_check(op, x, w, attrs)
    if g.shape[2:] != (geo.Ho, geo.Wo) or g.shape[0] != x.shape[0]:
        raise ShapeError(f"{op}: gradient {g} does not fit input {x} and weight {w} "
                         f"(expected [{x.shape[0]},{w.shape[0]},{geo.Ho},{geo.Wo}])")
    return w


# --------------------------------------------------------------------------- VJPs


def _conv_attrs(attrs):
    return {k: attrs[k] for k in ("stride", "padding", "dilation", "groups")}


def _conv2d_vjp(g, out, x, w, **attrs):
    # dx = conv2d_grad_input(g, w), dw = conv2d_grad_weight(x, g)
    em, a = g.b.emit, _conv_attrs(attrs)
    return (em("conv2d_grad_input", g, w, input_size=tuple(x.shape[2:]), **a),
            em("conv2d_grad_weight", x, g, kernel_size=tuple(w.shape[2:]), **a))


def _conv2d_grad_input_vjp(u, out, g, w, input_size, **attrs):
    # dx = Aᵀ(w) g is bilinear: ⟨u, Aᵀ(w) g⟩ = ⟨conv2d(u, w), g⟩
    em, a = u.b.emit, _conv_attrs(attrs)
    return (em("conv2d", u, w, **a),
            em("conv2d_grad_weight", u, g, kernel_size=tuple(w.shape[2:]), **a))


def _conv2d_grad_weight_vjp(v, out, x, g, kernel_size, **attrs):
    # ⟨v, dw(x, g)⟩ = ⟨conv2d(x, v), g⟩
    em, a = v.b.emit, _conv_attrs(attrs)
    return (em("conv2d_grad_input", g, v, input_size=tuple(x.shape[2:]), **a),
            em("conv2d", x, v, **a))


register(OpDef("conv2d", _conv2d_shape, _conv2d_fwd, _conv2d_vjp, attrs=dict(CONV2D),
               arity=2, doc="2-D cross-correlation, x [N,C,H,W] * w [O,C/groups,kh,kw]"))
register(OpDef("conv2d_grad_input", _conv2d_grad_input_shape, _conv2d_grad_input_fwd,
               _conv2d_grad_input_vjp, attrs={**CONV2D, "input_size": None}, arity=2,
               doc="gradient of conv2d in its input: (g [N,O,Ho,Wo], w) -> [N,C,H,W]"))
register(OpDef("conv2d_grad_weight", _conv2d_grad_weight_shape, _conv2d_grad_weight_fwd,
               _conv2d_grad_weight_vjp, attrs={**CONV2D, "kernel_size": None}, arity=2,
               doc="gradient of conv2d in its weight: (x, g [N,O,Ho,Wo]) -> [O,C/g,kh,kw]"))


# --------------------------------------------------------------------------- conv1d


def _pad1(op: str, v) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or not all(isinstance(a, int) and a >= 0 for a in t):
        raise ShapeError(f"{op}: padding must be an int or (left, right), got {v!r}")
    return t


def _as2d(stride, padding, dilation, groups, op="conv1d"):
    lo, hi = _pad1(op, padding)
    s = stride if isinstance(stride, int) else tuple(stride)[0]
    d = dilation if isinstance(dilation, int) else tuple(dilation)[0]
    return {"stride": (1, s), "padding": (0, 0, lo, hi), "dilation": (1, d), "groups": groups}


def _conv1d_fwd(xp, x, w, stride, padding, dilation, groups):
    # y[n,o,t] = Σ_{c,k} w[o,c,k] · xpad[n, c, t·s + k·d]  (conv2d with H = 1)
    y = _conv2d_fwd(xp, x[:, :, None, :], w[:, :, None, :],
                    **_as2d(stride, padding, dilation, groups))
    return y[:, :, 0, :]


def _conv1d_shape(attrs, x, w):
    dt = float_result("conv1d", x, w)
    shapes = f"input {x}, weight {w}"
    if x.rank != 3 or w.rank != 3:
        raise ShapeError(f"conv1d: expects input [N,C,L] and weight [O,C/groups,k], "
                         f"got {shapes}")
    for name in ("stride", "dilation"):
        if not isinstance(attrs[name], int):
            raise ShapeError(f"conv1d: {name} must be an int, got {attrs[name]!r}")
    a2 = _as2d(attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"])
    C, O, groups = x.shape[1], w.shape[0], attrs["groups"]
    _check_groups("conv1d", C, O, groups, shapes)
    if w.shape[1] * groups != C:
        raise ShapeError(f"conv1d: input has {C} channels but the weight expects "
                         f"{w.shape[1] * groups} ({shapes}, groups={groups})")
    geo = check_geometry("conv1d", (1, x.shape[2]), (1, w.shape[2]), a2["stride"],
                          a2["padding"], a2["dilation"], shapes)
    return TensorType(dt, (x.shape[0], O, geo.Wo))


def _conv1d_vjp(g, out, x, w, stride, padding, dilation, groups):
    # through conv2d's gradient kernels on [N,C,1,L] views
    em = g.b.emit
    a2 = _as2d(stride, padding, dilation, groups)
    g4 = em("reshape", g, shape=(g.shape[0], g.shape[1], 1, g.shape[2]))
    x4 = em("reshape", x, shape=(x.shape[0], x.shape[1], 1, x.shape[2]))
    w4 = em("reshape", w, shape=(w.shape[0], w.shape[1], 1, w.shape[2]))
    dx = em("conv2d_grad_input", g4, w4, input_size=(1, x.shape[2]), **a2)
    dw = em("conv2d_grad_weight", x4, g4, kernel_size=(1, w.shape[2]), **a2)
    return em("reshape", dx, shape=x.shape), em("reshape", dw, shape=w.shape)


register(OpDef("conv1d", _conv1d_shape, _conv1d_fwd, _conv1d_vjp, attrs=dict(CONV1D),
               arity=2, doc="1-D cross-correlation, x [N,C,L] * w [O,C/groups,k]"))
