"""Elementwise primitives: arithmetic, comparisons, activations, selection.

Inputs broadcast like NumPy; VJPs return output-shaped cotangents and the autodiff driver
sums them back to each input's shape.
"""

from __future__ import annotations

import importlib
import math

from runtime.dtypes import (
    DEFAULT_FLOAT,
    NP_TO_DTYPE,
    float_result_dtype,
    is_float,
    np_dtype,
    result_dtype,
)
from runtime.ir import TensorType
from runtime.ops.registry import OpDef, ShapeError, register
from runtime.ops.shapes import elementwise, float_elementwise

ew = lambda op: (lambda attrs, *ts: elementwise(op, *ts))
ew_float = lambda op: (lambda attrs, *ts: float_elementwise(op, *ts))
ew_bool = lambda op: (lambda attrs, *ts: elementwise(op, *ts, dtype="bool"))
same = lambda attrs, t: t
_DEFAULT = np_dtype(DEFAULT_FLOAT)  # float-valued kernels of non-float operands


def numeric(op, rule):
    """`rule`, refusing operands that are all bool (NumPy has no bool negation, subtraction,
    sign or square)."""
    def check(attrs, *ts):
        if all(t.dtype == "bool" for t in ts):
            raise ShapeError(f"{op}: not defined for bool operands, got "
                             + " and ".join(str(t) for t in ts))
        return rule(attrs, *ts)
    return check


def promote(xp, *xs):
    """Operands as the shape rule types them (`runtime.dtypes.result_dtype`): when floats
    meet integers or bools, the non-floats become the widest float operand's dtype (NumPy
    would pick f64 for f32 with i64); operands of one kind are returned unchanged."""
    floats = [NP_TO_DTYPE[a.dtype] for a in xs if a.dtype.kind == "f"]
    if not floats or len(floats) == len(xs):
        return xs
    dt = np_dtype(result_dtype(*floats))
    return tuple(a if a.dtype.kind == "f" else a.astype(dt) for a in xs)


def to_float(xp, *xs):
    """Operands of a float-valued op: non-floats become the widest float operand's dtype, or
    the default float when none is a float (`runtime.dtypes.float_result_dtype`)."""
    floats = [NP_TO_DTYPE[a.dtype] for a in xs if a.dtype.kind == "f"]
    if len(floats) == len(xs):
        return xs
    dt = np_dtype(float_result_dtype(*floats))
    return tuple(a if a.dtype.kind == "f" else a.astype(dt) for a in xs)


def floating(fwd):
    """A kernel computing in floats whatever its operands' dtypes (see `to_float`)."""
    def kernel(xp, *xs, **attrs):
        if any(a.dtype.kind != "f" for a in xs):
            xs = to_float(xp, *xs)
        return fwd(xp, *xs, **attrs)
    return kernel


def promoting(fwd):
    """A kernel whose mixed float/integer operands are promoted first (see `promote`)."""
    def kernel(xp, *xs, **attrs):
        if len({a.dtype.kind == "f" for a in xs}) > 1:
            xs = promote(xp, *xs)
        return fwd(xp, *xs, **attrs)
    return kernel


def unary(name, fwd, vjp, shape=None, doc="", **kw):
    if shape is None:  # float-valued: integer and bool inputs are computed in f32
        shape, f = ew_float(name), fwd
        fwd = lambda xp, x, **attrs: f(xp, x if x.dtype.kind == "f" else x.astype(_DEFAULT),
                                       **attrs)
    register(OpDef(name, shape, fwd, vjp, arity=1, elementwise=True, doc=doc, **kw))


def binary(name, fwd, vjp, shape=None, doc="", float_valued=False, **kw):
    """Operands are promoted as the shape rule types them; `float_valued`: computed in floats.
    (Two-operand fast paths: these kernels run on every step.)"""
    shape = shape or (ew_float if float_valued else ew)(name)
    if float_valued:
        def kernel(xp, a, b):
            if a.dtype.kind != "f" or b.dtype.kind != "f":
                a, b = to_float(xp, a, b)
            return fwd(xp, a, b)
    else:
        def kernel(xp, a, b):
            if (a.dtype.kind == "f") != (b.dtype.kind == "f"):
                a, b = promote(xp, a, b)
            return fwd(xp, a, b)
    register(OpDef(name, shape, kernel, vjp, arity=2, elementwise=True, doc=doc, **kw))


def side(xp, a, b):
    """-1, 0 or 1 where a < b, a == b, a > b: the piece of relu, abs, maximum, comparisons."""
    return xp.greater(a, b).astype("int8") - xp.less(a, b).astype("int8")


at_zero = lambda xp, x, **attrs: side(xp, x, 0)  # the piece of an op with a kink at x = 0

# ---- arithmetic
binary("add", lambda xp, a, b: xp.add(a, b), lambda g, out, a, b: (g, g))  # d(a+b) = da + db
binary("sub", lambda xp, a, b: xp.subtract(a, b), lambda g, out, a, b: (g, -g),
       shape=numeric("sub", ew("sub")))
binary("mul", lambda xp, a, b: xp.multiply(a, b), lambda g, out, a, b: (g * b, g * a))
binary("div", lambda xp, a, b: xp.true_divide(a, b),  # d(a/b) = da/b - a db/b²
       lambda g, out, a, b: (g / b, -g * out / b), float_valued=True)
binary("pow", lambda xp, a, b: xp.power(a, b),  # d a^b = b a^(b-1) da + a^b log(a) db
       lambda g, out, a, b: (g * b * a ** (b - 1), g * out * a.b.emit("log", a)),
       float_valued=True)
binary("maximum", lambda xp, a, b: xp.maximum(a, b),  # ties send the gradient to a
       lambda g, out, a, b: (where(a >= b, g, 0.0), where(a >= b, 0.0, g)), branch=side)
binary("minimum", lambda xp, a, b: xp.minimum(a, b),
       lambda g, out, a, b: (where(a <= b, g, 0.0), where(a <= b, 0.0, g)), branch=side)
unary("neg", lambda xp, x: xp.negative(x), lambda g, out, x: (-g,),
      shape=numeric("neg", same))


def where(c, a, b):
    """Emit `where(c, a, b)` lifting Python numbers to scalars of the other branch's dtype."""
    bld = c.b
    like = a if not isinstance(a, (int, float)) else b
    return bld.emit("where", c, bld.lift(a, like), bld.lift(b, like))


register(OpDef(
    "where", lambda attrs, c, a, b: elementwise("where", c, a, b, dtype=elementwise(
        "where", a, b).dtype),
    lambda xp, c, a, b: xp.where(c, *promote(xp, a, b)),
    lambda g, out, c, a, b: (None, where(c, g, 0.0), where(c, 0.0, g)),
    arity=3, elementwise=True, doc="select a where c else b"))  # c's comparison has the branch

# ---- comparisons and logic (no gradient)
for _name, _f in [("greater", "greater"), ("less", "less"), ("greater_equal", "greater_equal"),
                  ("less_equal", "less_equal"), ("equal", "equal"), ("not_equal", "not_equal"),
                  ("logical_and", "logical_and"), ("logical_or", "logical_or")]:
    binary(_name, (lambda f: lambda xp, a, b: getattr(xp, f)(a, b))(_f), None,
           shape=ew_bool(_name), nondiff=True,
           branch=None if _f.startswith("logical") else side)  # switch at a = b
unary("logical_not", lambda xp, x: xp.logical_not(x), None, shape=ew_bool("logical_not"),
      nondiff=True)

# ---- transcendental
unary("exp", lambda xp, x: xp.exp(x), lambda g, out, x: (g * out,))  # d exp = exp
unary("log", lambda xp, x: xp.log(x), lambda g, out, x: (g / x,))  # d log x = dx / x
unary("log1p", lambda xp, x: xp.log1p(x), lambda g, out, x: (g / (1.0 + x),))
unary("expm1", lambda xp, x: xp.expm1(x), lambda g, out, x: (g * (out + 1.0),))
unary("sqrt", lambda xp, x: xp.sqrt(x), lambda g, out, x: (g / (2.0 * out),))
unary("abs", lambda xp, x: xp.abs(x), lambda g, out, x: (g * x.b.emit("sign", x),), shape=same,
      branch=at_zero)
unary("sign", lambda xp, x: xp.sign(x), lambda g, out, x: (None,),
      shape=numeric("sign", same), branch=at_zero)
unary("sin", lambda xp, x: xp.sin(x), lambda g, out, x: (g * x.b.emit("cos", x),))
unary("cos", lambda xp, x: xp.cos(x), lambda g, out, x: (-g * x.b.emit("sin", x),))
unary("tanh", lambda xp, x: xp.tanh(x), lambda g, out, x: (g * (1.0 - out * out),))
unary("square", lambda xp, x: xp.square(x), lambda g, out, x: (g * 2.0 * x,),
      shape=numeric("square", same))

# ---- activations


def _sigmoid(xp, x):
    # σ(x) = exp(-log1p(exp(-x))) written without overflow for either sign
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def softplus_kernel(xp, x):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|)
    return (xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))).astype(x.dtype, copy=False)


unary("sigmoid", _sigmoid, lambda g, out, x: (g * out * (1.0 - out),))  # σ' = σ(1-σ)
unary("softplus", softplus_kernel, lambda g, out, x: (g * x.b.emit("sigmoid", x),))  # softplus' = σ
unary("relu", lambda xp, x: xp.maximum(x, 0).astype(x.dtype, copy=False),
      # out > 0 exactly where x > 0 (NaN: neither): reading the output leaves the input free
      # to be fused away with the op before (bias + activation in one kernel)
      lambda g, out, x: (where(out > 0.0, g, 0.0),), shape=same, branch=at_zero)
unary("leaky_relu",
      lambda xp, x, alpha: xp.where(x > 0, x, alpha * x).astype(x.dtype, copy=False),
      lambda g, out, x, alpha: (where(x > 0.0, g, g * alpha),), attrs={"alpha": 0.01},
      shape=same, branch=at_zero)
unary("swish", lambda xp, x: (x * _sigmoid(xp, x)).astype(x.dtype, copy=False),
      lambda g, out, x: (g * (lambda s: s + out * (1.0 - s))(x.b.emit("sigmoid", x)),))
unary("step", lambda xp, x: (x >= 0).astype(x.dtype if x.dtype.kind == "f" else _DEFAULT),
      lambda g, out, x: (None,), doc="1 where x >= 0 else 0 (zero gradient)", branch=at_zero)

# ---- special functions: erf and the GELU built on it

# array module -> the module of its special functions (NumPy and CuPy have no erf)
SPECIAL_MODULES = {"numpy": "scipy.special", "cupy": "cupyx.scipy.special"}


def special(xp):
    """The special functions (SciPy's `scipy.special` API) for arrays of module `xp`."""
    return importlib.import_module(SPECIAL_MODULES[xp.__name__])


def erf_kernel(xp, x):
    return special(xp).erf(x)


SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715


def _gelu(xp, x, approximate):
    if approximate == "tanh":  # ½x(1 + tanh(√(2/π)(x + 0.044715x³)))
        return 0.5 * x * (1.0 + xp.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)))
    return 0.5 * x * (1.0 + erf_kernel(xp, x * math.sqrt(0.5)))  # x Φ(x)


def _gelu_vjp(g, out, x, approximate):
    em = x.b.emit
    if approximate == "tanh":  # ½(1 + t) + ½x(1 - t²) √(2/π)(1 + 3·0.044715x²)
        t = em("tanh", (x + x * x * x * GELU_TANH_C) * SQRT_2_OVER_PI)
        return (g * ((1.0 + t) * 0.5
                     + x * (1.0 - t * t) * (1.0 + x * x * (3 * GELU_TANH_C))
                     * (0.5 * SQRT_2_OVER_PI)),)
    # d xΦ(x) = Φ(x) + x φ(x), φ(x) = exp(-x²/2) / √(2π)
    cdf = (em("erf", x * math.sqrt(0.5)) + 1.0) * 0.5
    pdf = em("exp", x * x * -0.5) * (1.0 / math.sqrt(2.0 * math.pi))
    return (g * (cdf + x * pdf),)


def _gelu_shape(attrs, t):
    if attrs["approximate"] not in ("none", "tanh"):
        raise ShapeError(f"gelu: approximate must be \"none\" or \"tanh\", got "
                         f"{attrs['approximate']!r}")
    return float_elementwise("gelu", t)


unary("erf", erf_kernel,  # d erf(x) = 2/√π exp(-x²) dx
      lambda g, out, x: (g * x.b.emit("exp", -(x * x)) * (2.0 / math.sqrt(math.pi)),),
      doc="the error function 2/√π ∫₀ˣ exp(-t²) dt")
unary("gelu", lambda xp, x, approximate: _gelu(xp, x if x.dtype.kind == "f" else
                                               x.astype(_DEFAULT), approximate),
      _gelu_vjp, shape=_gelu_shape, attrs={"approximate": "none"},
      doc="x Φ(x) with Φ the standard normal CDF (erf form, as PyTorch's default); "
          "approximate = \"tanh\": the tanh form")

# ---- casts and gradient barriers
register(OpDef("cast", lambda attrs, t: TensorType(attrs["dtype"], t.shape),
               lambda xp, x, dtype: x.astype(np_dtype(dtype), copy=False),
               lambda g, out, x, dtype: (g.b.emit("cast", g, dtype=x.type.dtype)
                                         if x.type.is_float else None,),
               attrs={"dtype": "f32"}, arity=1, elementwise=True,  # to integers: a staircase
               branch=lambda xp, x, dtype: None if is_float(dtype) else x.astype(np_dtype(dtype))))
register(OpDef("stop_gradient", same, lambda xp, x: x, lambda g, out, x: (None,), arity=1,
               elementwise=True, doc="identity whose gradient is zero"))
