"""Reductions over axes: sum, mean, max, min, logsumexp, prod-free norms, argmax."""

from __future__ import annotations

from runtime.dtypes import DEFAULT_FLOAT, float_result_dtype, np_dtype
from runtime.ir import TensorType
from runtime.ops.elementwise import to_float
from runtime.ops.registry import OpDef, ShapeError, register
from runtime.ops.row_reduce import row_max, row_mean, row_sum
from runtime.ops.shapes import norm_axes, reduced_shape

RED = {"axis": None, "keepdims": False}


FLOAT_VALUED = ("mean", "logsumexp", "norm")  # integer/bool inputs give f32


def _red_shape(op, dtype=None):
    def rule(attrs, t):
        shape = reduced_shape(op, t.shape, attrs["axis"], attrs["keepdims"])
        dt = dtype or t.dtype
        if op in FLOAT_VALUED:
            dt = float_result_dtype(t.dtype)
        elif op == "sum" and dt == "bool":
            dt = "i64"  # a count, as in NumPy
        return TensorType(dt, shape)
    return rule


def keep(g, x, axis, keepdims):
    """Reshape a reduction's cotangent `g` so that it broadcasts against `x`."""
    if keepdims:
        return g
    axes = norm_axes("reduce", axis, x.type.rank)
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return g.b.emit("reshape", g, shape=shape)


def expand(g, x, axis, keepdims):
    """The cotangent broadcast back to x's full shape."""
    return g.b.emit("broadcast_to", keep(g, x, axis, keepdims), shape=x.shape)


def _count(x, axis):
    axes = norm_axes("mean", axis, x.type.rank)
    n = 1
    for a in axes:
        d = x.shape[a]
        if not isinstance(d, int):
            return None
        n *= d
    return n


def _mean_vjp(g, out, x, axis, keepdims):
    n = _count(x, axis)
    full = expand(g, x, axis, keepdims)
    if n is None:  # symbolic extent: divide by the runtime size
        n = x.b.emit("size", x, axis=axis)
        return (full / n,)
    return (full * (1.0 / n),)


def _minmax_vjp(g, out, x, axis, keepdims):
    # gradient split equally among the positions that attain the extreme value
    o = keep(out, x, axis, keepdims)
    mask = x.b.emit("cast", x.b.emit("equal", x, o), dtype=x.type.dtype)
    count = x.b.emit("sum", mask, axis=axis, keepdims=True)
    return (keep(g, x, axis, keepdims) * mask / count,)


def _sum_fwd(xp, x, axis, keepdims):
    if x.dtype.kind == "f":
        return row_sum(xp, x, axis, keepdims)
    # integers keep their width (NumPy would widen i32 to i64), bools count in i64
    dt = "int64" if x.dtype.kind == "b" else x.dtype
    return xp.sum(x, axis=axis, keepdims=keepdims, dtype=dt)


def _mean_fwd(xp, x, axis, keepdims):
    if x.dtype.kind == "f":
        return row_mean(xp, x, axis, keepdims)
    # integers: f64 accumulation, f32 result
    return xp.mean(x, axis=axis, keepdims=keepdims).astype(np_dtype(DEFAULT_FLOAT))


register(OpDef("sum", _red_shape("sum"), _sum_fwd,  # d Σx = broadcast g
               lambda g, out, x, axis, keepdims: (expand(g, x, axis, keepdims),),
               attrs=RED, arity=1))
register(OpDef("mean", _red_shape("mean"), _mean_fwd, _mean_vjp, attrs=RED, arity=1))
register(OpDef("max", _red_shape("max"),
               lambda xp, x, axis, keepdims: xp.max(x, axis=axis, keepdims=keepdims),
               _minmax_vjp, attrs=RED, arity=1,  # piece: the positions attaining the max
               branch=lambda xp, x, axis, keepdims: x == xp.max(x, axis=axis, keepdims=True)))
register(OpDef("min", _red_shape("min"),
               lambda xp, x, axis, keepdims: xp.min(x, axis=axis, keepdims=keepdims),
               _minmax_vjp, attrs=RED, arity=1,
               branch=lambda xp, x, axis, keepdims: x == xp.min(x, axis=axis, keepdims=True)))


def _lse(xp, x, axis, keepdims):
    # log Σ e^x = m + log Σ e^(x - m), m = max x (finite for any input with a finite max)
    (x,) = to_float(xp, x)
    m = row_max(xp, x, axis)
    m = xp.where(xp.isfinite(m), m, 0)
    s = xp.log(row_sum(xp, xp.exp(x - m), axis, keepdims=True)) + m
    return s if keepdims else xp.squeeze(s, axis=axis) if axis is not None else s.reshape(())


register(OpDef("logsumexp", _red_shape("logsumexp"), _lse,
               lambda g, out, x, axis, keepdims: (  # d lse = softmax(x)
                   keep(g, x, axis, keepdims) * x.b.emit("exp", x - keep(out, x, axis, keepdims)),),
               attrs=RED, arity=1))


def _argmax_shape(attrs, t):
    if attrs["axis"] is None:
        return TensorType("i64", ())
    return TensorType("i64", reduced_shape("argmax", t.shape, attrs["axis"], False))


register(OpDef("argmax", _argmax_shape, lambda xp, x, axis: xp.argmax(x, axis=axis),
               None, attrs={"axis": -1}, arity=1, nondiff=True,
               branch=lambda xp, x, axis: xp.argmax(x, axis=axis)))


def _size_shape(attrs, t):
    norm_axes("size", attrs["axis"], t.rank)
    return TensorType(float_result_dtype(t.dtype), ())


def _size_fwd(xp, x, axis):
    axes = range(x.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    n = 1
    for a in axes:
        n *= x.shape[a]
    return xp.asarray(n, dtype=x.dtype if x.dtype.kind == "f" else np_dtype(DEFAULT_FLOAT))


register(OpDef("size", _size_shape, _size_fwd, lambda g, out, x, axis: (None,),
               attrs={"axis": None}, arity=1, nondiff=True,
               doc="number of elements over `axis` (a runtime scalar; symbolic dims)"))


def _norm_shape(attrs, t):
    if attrs["ord"] not in (1, 2):
        raise ShapeError(f"norm: ord must be 1 or 2, got {attrs['ord']}")
    return _red_shape("norm")(attrs, t)


def _norm_fwd(xp, x, axis, keepdims, ord):
    (x,) = to_float(xp, x)
    if ord == 1:
        return row_sum(xp, xp.abs(x), axis, keepdims)
    return xp.sqrt(row_sum(xp, x * x, axis, keepdims))


def _norm_vjp(g, out, x, axis, keepdims, ord):
    gk = keep(g, x, axis, keepdims)
    if ord == 1:  # d Σ|x| = sign(x)
        return (gk * x.b.emit("sign", x),)
    return (gk * x / keep(out, x, axis, keepdims),)  # d ‖x‖ = x / ‖x‖


register(OpDef("norm", _norm_shape, _norm_fwd, _norm_vjp,
               attrs={**RED, "ord": 2}, arity=1, doc="vector p-norm (p = 1 or 2) over axes",
               branch=lambda xp, x, axis, keepdims, ord: xp.sign(x) if ord == 1 else None))
