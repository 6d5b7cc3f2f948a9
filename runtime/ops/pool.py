"""Pooling over NCHW tensors: max and average pooling and their gradient kernels.

Pooling gathers the windows once into `[kh*kw, N, C, Ho, Wo]` columns; max pooling's
backward builds a first-maximum one-hot mask there (boolean ops, no `where`) and scatters
`mask * g` back by one strided assignment (disjoint windows) or slice-add per kernel offset.
`max_pool2d_grad` is linear in g (its adjoint `max_pool2d_pick` gathers at the window
argmax), and `avg_pool2d_grad` is the transpose of the linear map `avg_pool2d`. Global
pooling is a composition (`mean`/`max` over axes (2, 3)) and has no op here. The geometry and
views are `runtime.ops.windows`'.
"""

from __future__ import annotations

from runtime.ir import TensorType
from runtime.ops.registry import OpDef, ShapeError, register
from runtime.ops.windows import (
    Geo,
    check_geometry,
    geometry,
    merge_axes,
    pad4,
    pair,
    planes,
    strided,
)

MAXPOOL = {"kernel": (2, 2), "stride": None, "padding": (0, 0)}
AVGPOOL = {**MAXPOOL, "count_include_pad": True}


def _pool_geo(hw, kernel, stride, padding, op="pool") -> Geo:
    k = pair(op, "kernel", kernel)
    s = k if stride is None else pair(op, "stride", stride)
    return geometry(hw, k, s, padding, (1, 1), op, allow_wide=False)


def _pool_check(op: str, t: TensorType, attrs) -> Geo:
    if t.rank != 4:
        raise ShapeError(f"{op}: expects input [N,C,H,W], got {t}")
    if not t.is_float:
        raise ShapeError(f"{op}: expects a float tensor, got {t}")
    k = pair(op, "kernel", attrs["kernel"])
    s = k if attrs["stride"] is None else pair(op, "stride", attrs["stride"])
    pad = pad4(op, attrs["padding"])
    if max(pad[0], pad[1]) * 2 > k[0] or max(pad[2], pad[3]) * 2 > k[1]:
        raise ShapeError(f"{op}: padding {attrs['padding']} exceeds half the kernel "
                         f"{k[0]}x{k[1]} (input {t})")
    return check_geometry(op, t.shape[2:], k, s, attrs["padding"], (1, 1), f"input {t}")


def _windows(xp, buf, N: int, C: int, geo: Geo):
    """The [kh, kw, N*C, Ho, Wo] view of the windows of padded planes `buf` [N, C, L]
    (trailing axes merged where contiguous)."""
    L, Wp = geo.L, geo.Wp
    tail, strides = merge_axes((N, C, geo.Ho, geo.Wo), (C * L, L, geo.sh * Wp, geo.sw))
    return strided(xp, buf, 0, (geo.kh, geo.kw) + tail, (Wp, 1) + strides)


def _pool_cols(xp, x, geo: Geo, fill: float):
    """Window columns [kh*kw, N, C, Ho, Wo] (contiguous) of x padded with `fill`."""
    N, C = x.shape[:2]
    view = _windows(xp, planes(xp, x, geo, fill), N, C, geo)
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


def _scatter_windows(xp, parts, N: int, C: int, geo: Geo, out):
    """Adjoint of `_pool_cols`: parts [kh*kw, N, C, Ho, Wo] (or one [N, C, Ho, Wo] shared by
    every offset) summed back into their windows, written into dx `out` [N, C, H, W]
    (C-contiguous). Disjoint windows (stride >= kernel) are assigned, overlapping ones
    accumulated by strided slice-adds."""
    L, Wp = geo.L, geo.Wp
    disjoint = geo.sh >= geo.kh and geo.sw >= geo.kw
    if L == geo.H * geo.W:  # no padding: the planes are dx itself
        buf = out.reshape(N, C, L)
        tiles = (geo.sh == geo.kh and geo.sw == geo.kw and geo.Ho * geo.kh == geo.H
                 and geo.Wo * geo.kw == geo.W)  # every element in exactly one window
        if not tiles:
            buf.fill(0)
    else:
        buf = xp.zeros((N, C, L), dtype=parts.dtype)
    view = _windows(xp, buf, N, C, geo)
    parts = parts.reshape((-1,) + view.shape[2:])
    for i in range(geo.kh):
        for j in range(geo.kw):
            part = parts[0] if parts.shape[0] == 1 else parts[i * geo.kw + j]
            if disjoint:
                view[i, j] = part
            else:
                dst = view[i, j]
                dst += part
    if geo.L != geo.H * geo.W:
        xp.copyto(out, strided(xp, buf, geo.top * Wp + geo.left, (N, C, geo.H, geo.W),
                               (C * L, L, Wp, 1)))
    return out


def _max_pool2d_fwd(xp, x, kernel, stride, padding):
    geo = _pool_geo(x.shape[2:], kernel, stride, padding)
    out = xp.empty((x.shape[0], x.shape[1], geo.Ho, geo.Wo), dtype=x.dtype)
    return max_pool2d_into(xp, out, x, kernel, stride, padding)


def max_pool2d_into(xp, out, x, kernel, stride, padding):
    """max_pool2d written into `out` [N, C, Ho, Wo] (the kernel, and its out= form)."""
    # y[n,c,p] = max over the window of p in the -inf-padded input
    geo = _pool_geo(x.shape[2:], kernel, stride, padding)
    N, C = x.shape[:2]
    win = _windows(xp, planes(xp, x, geo, float("-inf")), N, C, geo)
    acc = out.reshape(win.shape[2:])
    xp.copyto(acc, win[0, 0])
    for i in range(geo.kh):
        for j in range(geo.kw):
            if i or j:
                xp.maximum(acc, win[i, j], out=acc)
    return out


def _max_pool2d_grad_fwd(xp, g, x, kernel, stride, padding):
    out = xp.empty(x.shape, dtype=g.dtype)
    return max_pool2d_grad_into(xp, out, g, x, kernel, stride, padding)


def max_pool2d_grad_into(xp, out, g, x, kernel, stride, padding):
    """max_pool2d_grad written into `out` [N, C, H, W] (the kernel, and its out= form)."""
    # dx = Σ_windows onehot(first argmax) · g
    geo = _pool_geo(x.shape[2:], kernel, stride, padding)
    N, C = x.shape[:2]
    hot = _first_max_onehot(xp, _pool_cols(xp, x, geo, float("-inf")))
    return _scatter_windows(xp, xp.multiply(hot, g[None]), N, C, geo, out)


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
    win = _windows(xp, planes(xp, x, geo, 0.0), N, C, geo)
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
    parts = g * _avg_divisor(xp, geo, count_include_pad, g.dtype)
    out = xp.empty((N, C) + tuple(input_size), dtype=parts.dtype)
    return _scatter_windows(xp, parts, N, C, geo, out)


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
