"""Normalization primitives: batch norm (training mode), layer norm, group norm, and the
`variance` reduction the language uses for running statistics.

Forward kernels are fused (one mean, one centered variance, one affine pass). Their VJPs are
the standard closed forms written with registered ops (mean, sum, sqrt, reshape, arithmetic),
so second-order gradients come for free. With x̂ = (x - μ)/σ, σ = sqrt(var + ε) (biased
variance, like PyTorch) and gy = g·γ, over the m normalized elements:

    dx = (gy - mean(gy) - x̂ · mean(gy · x̂)) / σ,   dγ = Σ g·x̂,   dβ = Σ g.

`batch_norm_eval` is a composition `(x - running_mean) / sqrt(running_var + eps) * γ + β`
and `instance_norm` is `group_norm` with groups = C; neither has an op here. The running
statistics update composes `mean` and `variance(correction=1)` (unbiased, like PyTorch's
running_var).
"""

from __future__ import annotations

from runtime.ir import TensorType
from runtime.ops.registry import OpDef, ShapeError, register
from runtime.ops.row_reduce import row_mean
from runtime.ops.shapes import float_result, norm_axes, reduced_shape

# --------------------------------------------------------------------------- helpers


def _standardize(xp, x, axes, eps):
    """(x - μ, 1/sqrt(var + ε)) with statistics over `axes` (kept as size-1 dims)."""
    mu = row_mean(xp, x, axes, keepdims=True)
    xc = x - mu
    var = row_mean(xp, xc * xc, axes, keepdims=True)
    return xc, 1.0 / xp.sqrt(var + eps)


def _count(x, axes):
    """The number m of elements of x over `axes`: an int, or a runtime scalar Val (`size`)
    when a dim is symbolic."""
    n = 1
    for a in axes:
        d = x.shape[a]
        if not isinstance(d, int):
            return x.b.emit("size", x, axis=tuple(axes))
        n *= d
    return n


def _affine(xp, y, scale, shift):
    """y·scale + shift, in place on the fresh array y when the dtypes allow it."""
    dt = xp.result_type(y, scale, shift)
    y = y if y.dtype == dt else y.astype(dt)
    y *= scale
    y += shift
    return y


def _inv_count(x, axes):
    """1/m as a float, or as a Val for symbolic dims."""
    m = _count(x, axes)
    return 1.0 / m if not isinstance(m, int) or m else float("nan")


def _bshape(shape, keep_axes):
    """`shape` with every axis outside `keep_axes` set to 1 (for broadcasting parameters)."""
    return tuple(d if i in keep_axes else 1 for i, d in enumerate(shape))


def _std_vjp(gy, x, axes, eps):
    """(dx, x̂) for y = x̂ = (x - μ)/σ over `axes`, given the cotangent gy of x̂ (composed)."""
    em = gy.b.emit
    mu = em("mean", x, axis=axes, keepdims=True)
    xc = x - mu
    var = em("mean", xc * xc, axis=axes, keepdims=True)
    rstd = 1.0 / em("sqrt", var + eps)
    xhat = xc * rstd
    mg = em("mean", gy, axis=axes, keepdims=True)
    mgx = em("mean", gy * xhat, axis=axes, keepdims=True)
    return (gy - mg - xhat * mgx) * rstd, xhat


def _param_check(op: str, x: TensorType, gamma: TensorType, beta: TensorType, want) -> None:
    want = tuple(want)
    for name, t in (("gamma", gamma), ("beta", beta)):
        if tuple(t.shape) != want:
            raise ShapeError(f"{op}: {name} {t} does not fit input {x} "
                             f"(expected [{','.join(map(str, want))}])")


# --------------------------------------------------------------------------- batch norm

BN = {"axis": 1, "eps": 1e-5}


def _bn_axes(op: str, rank: int, axis: int) -> tuple[int, tuple[int, ...]]:
    """(channel axis, reduced axes = every other axis)."""
    if rank < 2:
        raise ShapeError(f"{op}: needs a batch axis and a feature axis, got rank {rank}")
    c = norm_axes(op, axis, rank)[0]
    return c, tuple(i for i in range(rank) if i != c)


def _bn_shape(attrs, x, gamma, beta):
    dt = float_result("batch_norm_train", x, gamma, beta)
    c, _ = _bn_axes("batch_norm_train", x.rank, attrs["axis"])
    _param_check("batch_norm_train", x, gamma, beta, (x.shape[c],))
    return TensorType(dt, x.shape)


def _bn_fwd(xp, x, gamma, beta, axis, eps):
    # y = (x - μ_B)/sqrt(var_B + ε)·γ + β, statistics over every axis but `axis`
    c, axes = _bn_axes("batch_norm_train", x.ndim, axis)
    xc, rstd = _standardize(xp, x, axes, eps)
    bs = _bshape(x.shape, (c,))
    return _affine(xp, xc, rstd * gamma.reshape(bs), beta.reshape(bs))


def _bn_vjp(g, out, x, gamma, beta, axis, eps):
    # dx = γ/σ · (g - Σg/m - x̂ Σ(g x̂)/m), dγ = Σ g x̂, dβ = Σ g
    em = g.b.emit
    c, axes = _bn_axes("batch_norm_train", x.type.rank, axis)
    bs = _bshape(x.shape, (c,))
    # the batch mean as the running-statistics update computes it (no keepdims), so that
    # common-subexpression merging computes it once
    mu = em("reshape", em("mean", x, axis=axes), shape=bs)
    xc = x - mu
    var = em("mean", xc * xc, axis=axes, keepdims=True)
    rstd = 1.0 / em("sqrt", var + eps)
    dbeta = em("sum", g, axis=axes)
    s_gxc = em("sum", g * xc, axis=axes, keepdims=True)  # σ · Σ g x̂
    dgamma = em("reshape", s_gxc * rstd, shape=gamma.shape)
    inv_m = _inv_count(x, axes)
    scale = em("reshape", gamma, shape=bs) * rstd
    mean_g = em("reshape", dbeta, shape=bs) * inv_m
    coef = s_gxc * (rstd * rstd) * inv_m
    dx = (g - mean_g - xc * coef) * scale
    return dx, dgamma, dbeta


register(OpDef("batch_norm_train", _bn_shape, _bn_fwd, _bn_vjp, attrs=dict(BN), arity=3,
               doc="batch norm with batch statistics over every axis but `axis` (features)"))


# --------------------------------------------------------------------------- layer norm

LN = {"axes": (-1,), "eps": 1e-5}


def _ln_axes(op: str, rank: int, axes) -> tuple[int, ...]:
    a = norm_axes(op, axes, rank)
    if not a:
        raise ShapeError(f"{op}: needs at least one axis to normalize over")
    return a


def _ln_shape(attrs, x, gamma, beta):
    dt = float_result("layer_norm", x, gamma, beta)
    axes = _ln_axes("layer_norm", x.rank, attrs["axes"])
    _param_check("layer_norm", x, gamma, beta, tuple(x.shape[a] for a in axes))
    return TensorType(dt, x.shape)


def _ln_fwd(xp, x, gamma, beta, axes, eps):
    # y = (x - μ)/sqrt(var + ε)·γ + β, statistics per example over `axes`
    axes = _ln_axes("layer_norm", x.ndim, axes)
    xc, rstd = _standardize(xp, x, axes, eps)
    bs = _bshape(x.shape, axes)
    xc *= rstd
    return _affine(xp, xc, gamma.reshape(bs), beta.reshape(bs))


def _ln_vjp(g, out, x, gamma, beta, axes, eps):
    # dx from the closed form with gy = g·γ; dγ, dβ sum over the other axes
    em = g.b.emit
    axes = _ln_axes("layer_norm", x.type.rank, axes)
    rest = tuple(i for i in range(x.type.rank) if i not in axes)
    gb = em("reshape", gamma, shape=_bshape(x.shape, axes))
    dx, xhat = _std_vjp(g * gb, x, axes, eps)
    gxh = g * xhat
    if rest:
        return dx, em("sum", gxh, axis=rest), em("sum", g, axis=rest)
    return dx, gxh, g


register(OpDef("layer_norm", _ln_shape, _ln_fwd, _ln_vjp, attrs=dict(LN), arity=3,
               doc="normalize each example over `axes`; gamma/beta have those axes' shape"))


# --------------------------------------------------------------------------- group norm

GN = {"groups": 1, "eps": 1e-5}


def _gn_shape(attrs, x, gamma, beta):
    op = "group_norm"
    dt = float_result(op, x, gamma, beta)
    if x.rank < 2:
        raise ShapeError(f"{op}: expects input [N,C,...], got {x}")
    C, G = x.shape[1], attrs["groups"]
    if not isinstance(G, int) or G < 1:
        raise ShapeError(f"{op}: groups must be a positive int, got {G!r}")
    if not isinstance(C, int) or C % G:
        raise ShapeError(f"{op}: groups={G} does not divide {C} channels (input {x})")
    for d in x.shape[2:]:
        if not isinstance(d, int):
            raise ShapeError(f"{op}: spatial sizes must be static integers (input {x})")
    _param_check(op, x, gamma, beta, (C,))
    return TensorType(dt, x.shape)


def _gn_fwd(xp, x, gamma, beta, groups, eps):
    # y = (x - μ_g)/sqrt(var_g + ε)·γ_c + β_c, statistics per example and channel group
    N = x.shape[0]
    xc, rstd = _standardize(xp, x.reshape(N, groups, -1), 2, eps)
    bs = _bshape(x.shape, (1,))
    xc *= rstd
    return _affine(xp, xc.reshape(x.shape), gamma.reshape(bs), beta.reshape(bs))


def _gn_vjp(g, out, x, gamma, beta, groups, eps):
    # the closed form on the [N, G, C/G·spatial] view; dγ, dβ sum over N and spatial axes
    em = g.b.emit
    grouped = (x.shape[0], groups, -1)
    gb = em("reshape", gamma, shape=_bshape(x.shape, (1,)))
    gy = em("reshape", g * gb, shape=grouped)
    dx, xhat = _std_vjp(gy, em("reshape", x, shape=grouped), (2,), eps)
    rest = (0,) + tuple(range(2, x.type.rank))
    xhat = em("reshape", xhat, shape=x.shape)
    return (em("reshape", dx, shape=x.shape), em("sum", g * xhat, axis=rest),
            em("sum", g, axis=rest))


register(OpDef("group_norm", _gn_shape, _gn_fwd, _gn_vjp, attrs=dict(GN), arity=3,
               doc="normalize [N,C,...] per example over channel groups; per-channel γ, β "
                   "(instance norm: groups = C)"))


# --------------------------------------------------------------------------- variance

VAR = {"axis": None, "keepdims": False, "correction": 0}


def _var_shape(attrs, x):
    if not x.is_float:
        raise ShapeError(f"variance: expects a float tensor, got {x}")
    c = attrs["correction"]
    if not isinstance(c, (int, float)) or c < 0:
        raise ShapeError(f"variance: correction must be a non-negative number, got {c!r}")
    return TensorType(x.dtype, reduced_shape("variance", x.shape, attrs["axis"],
                                             attrs["keepdims"]))


def _var_fwd(xp, x, axis, keepdims, correction):
    # var = Σ (x - μ)² / (m - correction)
    return xp.var(x, axis=axis, keepdims=keepdims, ddof=correction)


def _var_vjp(g, out, x, axis, keepdims, correction):
    # d var = 2 (x - μ) / (m - correction)
    em = g.b.emit
    axes = norm_axes("variance", axis, x.type.rank)
    mu = em("mean", x, axis=axes, keepdims=True)
    if not keepdims:
        g = em("reshape", g, shape=tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    m = _count(x, axes)
    factor = 2.0 / (m - correction) if isinstance(m, int) and m > correction else \
        2.0 / (m - float(correction)) if not isinstance(m, int) else float("nan")
    return ((x - mu) * (g * factor),)


register(OpDef("variance", _var_shape, _var_fwd, _var_vjp, attrs=dict(VAR), arity=1,
               doc="Σ (x - mean)² / (m - correction) over `axis` (correction=1: unbiased)"))
