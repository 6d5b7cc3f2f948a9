"""Convolution and pooling over NCHW tensors: conv2d, conv1d, max/avg pooling and their
gradient kernels.

`conv2d` is a cross-correlation computed as im2col + one GEMM. The columns are gathered from a
zero-padded, per-plane flattened copy of the input with one `as_strided` view and one
contiguous copy, laid out `[C*kh*kw, N*Ho*Wq]`, so the forward pass and the weight gradient
are each a single (group-batched) matmul. The input gradient is one matmul onto a batch-last
grid `[C*kh*kw, Ho*Wq*N]` followed by col2im: a loop over the kh*kw kernel offsets with
strided slice-adds into padded `[Hp, Wp, N]` planes (no scatter-add `ufunc.at`). With unit
column stride the grid is "wide": each output row spans the whole padded width `Wq = Wp`
(the `Wp - Wo` extra columns are computed and dropped, or carry zero gradient), which makes
the gathers and the slice-adds long contiguous runs; NumPy's per-inner-loop overhead, not
arithmetic, dominates these kernels.

Pooling gathers the windows once into `[kh*kw, N, C, Ho, Wo]` columns; max pooling's
backward builds a first-maximum one-hot mask there (boolean ops, no `where`) and scatters
`mask * g` back by one strided assignment (disjoint windows) or slice-add per kernel offset.

Every backward kernel is a registered op with its own VJP, so second-order gradients work:
`conv2d_grad_input` is linear in (g, w), `conv2d_grad_weight` in (x, g), `max_pool2d_grad`
in g (its adjoint `max_pool2d_pick` gathers at the window argmax), and `avg_pool2d_grad` is
the transpose of the linear map `avg_pool2d`.

Attributes: `stride`, `dilation`, `kernel` are ints or (h, w) pairs; `padding` is an int,
an (h, w) pair or (top, bottom, left, right). Global pooling is a composition
(`mean`/`max` over axes (2, 3)) and has no op here.
"""

from __future__ import annotations

from typing import NamedTuple

from runtime.ir import TensorType
from runtime.ops.registry import OpDef, ShapeError, register
from runtime.ops.shapes import float_result

CONV2D = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
CONV1D = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}


# --------------------------------------------------------------------------- attributes


def _pair(op: str, name: str, v) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, tuple | list) else ()
    if len(t) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in t):
        raise ShapeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    return t


def _pad4(op: str, v) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, an (h, w) pair or a 4-tuple."""
    t = (v,) * 4 if isinstance(v, int) else tuple(v) if isinstance(v, tuple | list) else ()
    if len(t) == 2:
        t = (t[0], t[0], t[1], t[1])
    if len(t) != 4 or not all(isinstance(a, int) and a >= 0 for a in t):
        raise ShapeError(f"{op}: padding must be non-negative ints (p, (ph, pw) or "
                         f"(top, bottom, left, right)), got {v!r}")
    return t


class Geo(NamedTuple):
    """Sliding-window geometry of one 2-D op on a concrete [H, W] input.

    The GEMM grid has Ho rows of Wq columns; grid column q reads padded column q*cs (+ the
    kernel offset). Wide grids (cs = 1, Wq = Wp) keep contiguous runs; narrow ones use
    Wq = Wo, cs = sw. `L` is the length of one flattened, padded plane in the buffers.
    """

    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    top: int
    left: int
    H: int
    W: int
    Hp: int
    Wp: int
    Ho: int
    Wo: int
    Wq: int
    cs: int
    L: int


def _out_len(n: int, lo: int, hi: int, k: int, s: int, d: int) -> int:
    return (n + lo + hi - d * (k - 1) - 1) // s + 1


def _geometry(hw, khw, stride, padding, dilation, op: str = "conv2d",
              allow_wide: bool = True) -> Geo:
    H, W = hw
    kh, kw = khw
    sh, sw = _pair(op, "stride", stride)
    dh, dw = _pair(op, "dilation", dilation)
    top, bottom, left, right = _pad4(op, padding)
    Hp, Wp = H + top + bottom, W + left + right
    Ho = _out_len(H, top, bottom, kh, sh, dh)
    Wo = _out_len(W, left, right, kw, sw, dw)
    wide = allow_wide and sw == 1 and Wp <= 2 * Wo
    Wq, cs = (Wp, 1) if wide else (Wo, sw)
    last = (kh - 1) * dh * Wp + (kw - 1) * dw + (Ho - 1) * sh * Wp + (Wq - 1) * cs + 1
    return Geo(kh, kw, sh, sw, dh, dw, top, left, H, W, Hp, Wp, Ho, Wo, Wq, cs,
               max(Hp * Wp, last))


def _check_geometry(op: str, hw, khw, stride, padding, dilation, shapes: str) -> Geo:
    """Validate attributes and sizes at graph-build time (ShapeError names both shapes)."""
    for name, v in (("stride", stride), ("dilation", dilation)):
        if min(_pair(op, name, v)) < 1:
            raise ShapeError(f"{op}: {name} must be positive, got {v!r} ({shapes})")
    top, bottom, left, right = _pad4(op, padding)
    dh, dw = _pair(op, "dilation", dilation)
    if not all(isinstance(d, int) for d in (*hw, *khw)):
        raise ShapeError(f"{op}: spatial sizes must be static integers ({shapes})")
    (H, W), (kh, kw) = hw, khw
    if kh < 1 or kw < 1:
        raise ShapeError(f"{op}: empty kernel {kh}x{kw} ({shapes})")
    Hp, Wp = H + top + bottom, W + left + right
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if eh > Hp or ew > Wp:
        span = f" with dilation {dh}x{dw} spans {eh}x{ew}," if (dh, dw) != (1, 1) else ""
        raise ShapeError(f"{op}: kernel {kh}x{kw}{span} larger than padded input {Hp}x{Wp} "
                         f"({shapes}, padding {(top, bottom, left, right)})")
    return _geometry(hw, khw, stride, padding, dilation, op)


# --------------------------------------------------------------------------- kernels


def _strided(xp, a, offset: int, shape, strides):
    """A view of contiguous `a` starting `offset` elements in, strides in elements."""
    flat = a.reshape(-1)[offset:]
    e = a.itemsize
    return xp.lib.stride_tricks.as_strided(flat, shape=tuple(shape),
                                           strides=tuple(s * e for s in strides))


def _merge(shape, strides):
    """Merge adjacent axes that are contiguous with each other (NumPy iterates merged views
    much faster when they are written in place)."""
    out_shape, out_strides = [shape[0]], [strides[0]]
    for d, s in zip(shape[1:], strides[1:]):
        if out_strides[-1] == d * s:
            out_shape[-1] *= d
            out_strides[-1] = s
        else:
            out_shape.append(d)
            out_strides.append(s)
    return tuple(out_shape), tuple(out_strides)


def _planes(xp, x, geo: Geo, fill: float = 0.0):
    """x [N, C, H, W] written into a [N, C, L] buffer of padded planes (pad value `fill`)."""
    N, C = x.shape[:2]
    if geo.L == geo.H * geo.W and x.flags.c_contiguous:
        return x.reshape(N, C, geo.L)  # no padding, no tail: the input itself
    buf = xp.full((N, C, geo.L), fill, dtype=x.dtype) if fill else \
        xp.zeros((N, C, geo.L), dtype=x.dtype)
    L = geo.L
    inner = _strided(xp, buf, geo.top * geo.Wp + geo.left, (N, C, geo.H, geo.W),
                     (C * L, L, geo.Wp, 1))
    inner[...] = x
    return buf


def _im2col(xp, x, geo: Geo):
    """Columns [C, kh, kw, N, Ho, Wq] (contiguous) of x [N, C, H, W]."""
    N, C = x.shape[:2]
    buf = _planes(xp, x, geo)
    L, Wp = geo.L, geo.Wp
    view = _strided(xp, buf, 0, (C, geo.kh, geo.kw, N, geo.Ho, geo.Wq),
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
    tail, tail_strides = _merge((geo.Ho, geo.Wq, N), (geo.sh * Wp * N, geo.cs * N, 1))
    view = _strided(xp, buf, 0, (geo.kh, geo.kw, C) + tail,
                    (geo.dh * Wp * N, geo.dw * N, Lc) + tail_strides)
    dcols = dcols.reshape((C, geo.kh, geo.kw) + tail)
    for i in range(geo.kh):
        for j in range(geo.kw):
            dst = view[i, j]
            dst += dcols[:, i, j]
    inner = _strided(xp, buf, (geo.top * Wp + geo.left) * N, (N, C, geo.H, geo.W),
                     (1, Lc, Wp * N, N))
    return xp.ascontiguousarray(inner)


def _conv_geo(x_hw, w, stride, padding, dilation):
    return _geometry(x_hw, w.shape[2:], stride, padding, dilation)


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
    # y[n,o,p] = Σ_{c,i,j} w[o,c,i,j] · xpad[n, c·g(o), p·s + (i,j)·d]
    geo = _conv_geo(x.shape[2:], w, stride, padding, dilation)
    N, G, O = x.shape[0], groups, w.shape[0]
    wg = w.reshape(G, O // G, -1)
    out = xp.empty((N, O, geo.Ho, geo.Wo), dtype=xp.result_type(x, w))
    for b in _batch_chunks(N, wg.shape[-1] * G, geo, x.itemsize):
        n = b.stop - b.start
        cols = _im2col(xp, x[b], geo).reshape(G, -1, n * geo.Ho * geo.Wq)
        y = xp.matmul(wg, cols).reshape(O, n, geo.Ho, geo.Wq)
        out[b] = y[..., :geo.Wo].transpose(1, 0, 2, 3)
    return out


def _conv2d_grad_input_fwd(xp, g, w, stride, padding, dilation, groups, input_size):
    # dx = col2im(Wᵀ · G): the transpose of conv2d in x
    geo = _geometry(tuple(input_size), w.shape[2:], stride, padding, dilation)
    N, O, G = g.shape[0], g.shape[1], groups
    C = w.shape[1] * G
    wt = w.reshape(G, O // G, -1).transpose(0, 2, 1)
    out = xp.empty((N, C, geo.H, geo.W), dtype=xp.result_type(g, w))
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
    geo = _geometry(x.shape[2:], (kh, kw), stride, padding, dilation)
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
    return _check_geometry(op, x.shape[2:], w.shape[2:], attrs["stride"], attrs["padding"],
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
    geo = _check_geometry("conv1d", (1, x.shape[2]), (1, w.shape[2]), a2["stride"],
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


# --------------------------------------------------------------------------- pooling

MAXPOOL = {"kernel": (2, 2), "stride": None, "padding": (0, 0)}
AVGPOOL = {**MAXPOOL, "count_include_pad": True}


def _pool_geo(hw, kernel, stride, padding, op="pool") -> Geo:
    k = _pair(op, "kernel", kernel)
    s = k if stride is None else _pair(op, "stride", stride)
    return _geometry(hw, k, s, padding, (1, 1), op, allow_wide=False)


def _pool_check(op: str, t: TensorType, attrs) -> Geo:
    if t.rank != 4:
        raise ShapeError(f"{op}: expects input [N,C,H,W], got {t}")
    if not t.is_float:
        raise ShapeError(f"{op}: expects a float tensor, got {t}")
    k = _pair(op, "kernel", attrs["kernel"])
    s = k if attrs["stride"] is None else _pair(op, "stride", attrs["stride"])
    pad = _pad4(op, attrs["padding"])
    if max(pad[0], pad[1]) * 2 > k[0] or max(pad[2], pad[3]) * 2 > k[1]:
        raise ShapeError(f"{op}: padding {attrs['padding']} exceeds half the kernel "
                         f"{k[0]}x{k[1]} (input {t})")
    return _check_geometry(op, t.shape[2:], k, s, attrs["padding"], (1, 1), f"input {t}")


def _windows(xp, buf, N: int, C: int, geo: Geo):
    """The [kh, kw, N*C, Ho, Wo] view of the windows of padded planes `buf` [N, C, L]
    (trailing axes merged where contiguous)."""
    L, Wp = geo.L, geo.Wp
    tail, strides = _merge((N, C, geo.Ho, geo.Wo), (C * L, L, geo.sh * Wp, geo.sw))
    return _strided(xp, buf, 0, (geo.kh, geo.kw) + tail, (Wp, 1) + strides)


def _pool_cols(xp, x, geo: Geo, fill: float):
    """Window columns [kh*kw, N, C, Ho, Wo] (contiguous) of x padded with `fill`."""
    N, C = x.shape[:2]
    view = _windows(xp, _planes(xp, x, geo, fill), N, C, geo)
    return xp.ascontiguousarray(view).reshape(geo.kh * geo.kw, N, C, geo.Ho, geo.Wo)


def _first_max_onehot(xp, cols):
    """Boolean [K, ...]: True at the first maximum along axis 0 (ties: first, like PyTorch)."""
    hot = cols == cols.max(axis=0)
    seen = hot[0].copy()
    for k in range(1, hot.shape[0]):
        xp.logical_and(hot[k], xp.logical_not(seen), out=hot[k])
        if k + 1 < hot.shape[0]:
            xp.logical_or(seen, hot[k], out=seen)
    return hot


def _scatter_windows(xp, parts, N: int, C: int, geo: Geo):
    """Adjoint of `_pool_cols`: parts [kh*kw, N, C, Ho, Wo] (or one [N, C, Ho, Wo] shared by
    every offset) summed back into their windows, dx [N, C, H, W]. Disjoint windows
    (stride >= kernel) are assigned, overlapping ones accumulated by strided slice-adds."""
    L, Wp = geo.L, geo.Wp
    buf = xp.zeros((N, C, L), dtype=parts.dtype)
    view = _windows(xp, buf, N, C, geo)
    parts = parts.reshape((-1,) + view.shape[2:])
    disjoint = geo.sh >= geo.kh and geo.sw >= geo.kw
    for i in range(geo.kh):
        for j in range(geo.kw):
            part = parts[0] if parts.shape[0] == 1 else parts[i * geo.kw + j]
            if disjoint:
                view[i, j] = part
            else:
                dst = view[i, j]
                dst += part
    if geo.L == geo.H * geo.W:
        return buf.reshape(N, C, geo.H, geo.W)
    inner = _strided(xp, buf, geo.top * Wp + geo.left, (N, C, geo.H, geo.W),
                     (C * L, L, Wp, 1))
    return xp.ascontiguousarray(inner)


def _max_pool2d_fwd(xp, x, kernel, stride, padding):
    # y[n,c,p] = max over the window of p in the -inf-padded input
    geo = _pool_geo(x.shape[2:], kernel, stride, padding)
    N, C = x.shape[:2]
    win = _windows(xp, _planes(xp, x, geo, float("-inf")), N, C, geo)
    out = win[0, 0].copy()
    for i in range(geo.kh):
        for j in range(geo.kw):
            if i or j:
                xp.maximum(out, win[i, j], out=out)
    return out.reshape(N, C, geo.Ho, geo.Wo)


def _max_pool2d_grad_fwd(xp, g, x, kernel, stride, padding):
    # dx = Σ_windows onehot(first argmax) · g
    geo = _pool_geo(x.shape[2:], kernel, stride, padding)
    N, C = x.shape[:2]
    hot = _first_max_onehot(xp, _pool_cols(xp, x, geo, float("-inf")))
    return _scatter_windows(xp, xp.multiply(hot, g[None]), N, C, geo)


def _max_pool2d_pick_fwd(xp, u, x, kernel, stride, padding):
    # y[n,c,p] = u at the first argmax of x's window p (adjoint of max_pool2d_grad in g)
    geo = _pool_geo(x.shape[2:], kernel, stride, padding)
    hot = _first_max_onehot(xp, _pool_cols(xp, x, geo, float("-inf")))
    return xp.sum(xp.multiply(hot, _pool_cols(xp, u, geo, 0.0)), axis=0)


def _max_pool2d_branch(xp, x, kernel, stride, padding):
    # the piece of max pooling and its backward kernels: each window's first argmax
    geo = _pool_geo(x.shape[2:], kernel, stride, padding)
    return _first_max_onehot(xp, _pool_cols(xp, x, geo, float("-inf")))


def _max_pool2d_shape(attrs, x):
    geo = _pool_check("max_pool2d", x, attrs)
    return TensorType(x.dtype, (x.shape[0], x.shape[1], geo.Ho, geo.Wo))


def _pool_grad_shape(op):
    # max_pool2d_grad: (g [N,C,Ho,Wo], x) -> x's shape; max_pool2d_pick: (u like x, x) -> y's
    def rule(attrs, g, x):
        geo = _pool_check(op, x, attrs)
        y = (x.shape[0], x.shape[1], geo.Ho, geo.Wo)
        grad = op.endswith("grad")
        want = y if grad else tuple(x.shape)
        if g.rank != 4 or tuple(g.shape) != want or not g.is_float:
            raise ShapeError(f"{op}: {'cotangent' if grad else 'u'} {g} does not fit input {x} "
                             f"(expected [{','.join(map(str, want))}] floats)")
        return TensorType(g.dtype, x.shape if grad else y)
    return rule


register(OpDef("max_pool2d", _max_pool2d_shape, _max_pool2d_fwd,
               lambda g, out, x, **a: (g.b.emit("max_pool2d_grad", g, x, **a),),
               attrs=dict(MAXPOOL), arity=1, branch=_max_pool2d_branch,
               doc="max over kernel windows (stride None = kernel, -inf padding)"))
register(OpDef("max_pool2d_grad", _pool_grad_shape("max_pool2d_grad"), _max_pool2d_grad_fwd,
               lambda u, out, g, x, **a: (u.b.emit("max_pool2d_pick", u, x, **a), None),
               attrs=dict(MAXPOOL), arity=2,
               branch=lambda xp, g, x, **a: _max_pool2d_branch(xp, x, **a),
               doc="(g, x) -> dx: g routed to the first argmax of each window"))
register(OpDef("max_pool2d_pick", _pool_grad_shape("max_pool2d_pick"), _max_pool2d_pick_fwd,
               lambda v, out, u, x, **a: (v.b.emit("max_pool2d_grad", v, x, **a), None),
               attrs=dict(MAXPOOL), arity=2,
               branch=lambda xp, u, x, **a: _max_pool2d_branch(xp, x, **a),
               doc="(u, x) -> u at the first argmax of each window of x"))


def _avg_divisor(xp, geo: Geo, count_include_pad: bool, dtype):
    """1 / (number of averaged elements) per output position, broadcastable to [Ho, Wo]."""
    if count_include_pad:
        return 1.0 / (geo.kh * geo.kw)

    def count(n, lo, k, s, m):
        start = xp.arange(m) * s - lo
        return xp.minimum(start + k, n) - xp.maximum(start, 0)

    ch = count(geo.H, geo.top, geo.kh, geo.sh, geo.Ho)
    cw = count(geo.W, geo.left, geo.kw, geo.sw, geo.Wo)
    return (1.0 / (ch[:, None] * cw[None, :])).astype(dtype)


def _avg_pool2d_fwd(xp, x, kernel, stride, padding, count_include_pad):
    # y[n,c,p] = Σ_window xpad / count (count = kh·kw, or the unpadded elements)
    geo = _pool_geo(x.shape[2:], kernel, stride, padding)
    N, C = x.shape[:2]
    win = _windows(xp, _planes(xp, x, geo, 0.0), N, C, geo)
    out = win[0, 0].copy()
    for i in range(geo.kh):
        for j in range(geo.kw):
            if i or j:
                xp.add(out, win[i, j], out=out)
    out = out.reshape(N, C, geo.Ho, geo.Wo)
    out *= _avg_divisor(xp, geo, count_include_pad, x.dtype)
    return out


def _avg_pool2d_grad_fwd(xp, g, kernel, stride, padding, count_include_pad, input_size):
    # dx = Σ_windows g / count (the transpose of avg_pool2d)
    geo = _pool_geo(tuple(input_size), kernel, stride, padding)
    N, C = g.shape[:2]
    return _scatter_windows(xp, g * _avg_divisor(xp, geo, count_include_pad, g.dtype), N, C,
                            geo)


def _avg_pool2d_shape(attrs, x):
    geo = _pool_check("avg_pool2d", x, attrs)
    return TensorType(x.dtype, (x.shape[0], x.shape[1], geo.Ho, geo.Wo))


def _avg_pool2d_grad_shape(attrs, g):
    op = "avg_pool2d_grad"
    size = attrs["input_size"]
    if size is None or len(tuple(size)) != 2:
        raise ShapeError(f"{op}: needs input_size=(H, W), got {size!r}")
    if g.rank != 4:
        raise ShapeError(f"{op}: expects g [N,C,Ho,Wo], got {g}")
    x = TensorType(g.dtype, (g.shape[0], g.shape[1], *size))
    geo = _pool_check(op, x, attrs)
    if tuple(g.shape[2:]) != (geo.Ho, geo.Wo):
        raise ShapeError(f"{op}: gradient {g} does not fit input {x} "
                         f"(expected [{g.shape[0]},{g.shape[1]},{geo.Ho},{geo.Wo}])")
    return x


register(OpDef("avg_pool2d", _avg_pool2d_shape, _avg_pool2d_fwd,
               lambda g, out, x, **a: (g.b.emit("avg_pool2d_grad", g,
                                                input_size=tuple(x.shape[2:]), **a),),
               attrs=dict(AVGPOOL), arity=1,
               doc="mean over kernel windows (zero padding; count_include_pad like PyTorch)"))
register(OpDef("avg_pool2d_grad", _avg_pool2d_grad_shape, _avg_pool2d_grad_fwd,
               lambda u, out, g, input_size, **a: (u.b.emit("avg_pool2d", u, **a),),
               attrs={**AVGPOOL, "input_size": None}, arity=1,
               doc="g [N,C,Ho,Wo] -> dx [N,C,H,W], the transpose of avg_pool2d"))
