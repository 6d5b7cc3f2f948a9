"""Numerically dangerous functions as primitives with stable forward kernels and VJPs:
softmax, log_softmax (with temperature), masked softmax (attention), softmax cross-entropy
(label smoothing) and sigmoid binary cross-entropy on logits; and the four gate activations of
an LSTM cell as one kernel (`lstm_gates`, introduced by a rewrite in `runtime.passes.rules`)."""

from __future__ import annotations

import numpy as np

from runtime.dtypes import NP_TO_DTYPE, float_result_dtype, np_dtype
from runtime.ir import TensorType
from runtime.ops.elementwise import floating, softplus_kernel, to_float
from runtime.ops.registry import OpDef, ShapeError, register
from runtime.ops.row_reduce import row_max, row_sum
from runtime.ops.shapes import broadcast_shapes, check_range, float_elementwise, norm_axes

SM = {"axis": -1, "temperature": 1.0}


def _sm_shape(op):
    def rule(attrs, t):
        norm_axes(op, attrs["axis"], t.rank)
        if attrs["temperature"] <= 0:
            raise ShapeError(f"{op}: temperature must be positive")
        return TensorType(float_result_dtype(t.dtype), t.shape)
    return rule


def _shifted(xp, x, axis, temperature):
    """x/T less its maximum along `axis`: what log-softmax and its uses exponentiate."""
    z = x / temperature if temperature != 1.0 else x
    return z - row_max(xp, z, axis)


def _log_softmax(xp, x, axis, temperature):
    s = _shifted(xp, x, axis, temperature)
    return s - xp.log(row_sum(xp, xp.exp(s), axis, keepdims=True))


def softmax_into(xp, out, x, axis, temperature, stats=(None, None)):
    """softmax(x/T) along `axis` written into `out` (x's shape and float dtype): exp(z -
    max z) / Σ, z = x/T. `stats`: buffers of the keepdims shape for the maximum and the sum
    (None: new arrays). The softmax kernel, its out= form and cross-entropy's gradient."""
    z = xp.divide(x, temperature, out=out) if temperature != 1.0 else x
    m = row_max(xp, z, axis, out=stats[0])
    xp.subtract(z, m, out=out)
    xp.exp(out, out=out)
    xp.divide(out, row_sum(xp, out, axis, keepdims=True, out=stats[1]), out=out)
    return out


def _softmax(xp, x, axis, temperature):
    return softmax_into(xp, xp.empty(x.shape, dtype=x.dtype), x, axis, temperature)


def _softmax_vjp(g, out, x, axis, temperature):
    # dp = p ⊙ (g - Σ g p) / T
    s = g.b.emit("sum", g * out, axis=axis, keepdims=True)
    return (out * (g - s) * (1.0 / temperature),)


def _log_softmax_vjp(g, out, x, axis, temperature):
    # d log p = (g - p Σ g) / T, with p = exp(log p): no second softmax
    p = g.b.emit("exp", out)
    s = g.b.emit("sum", g, axis=axis, keepdims=True)
    return ((g - p * s) * (1.0 / temperature),)


register(OpDef("softmax", _sm_shape("softmax"), floating(_softmax), _softmax_vjp, attrs=SM,
               arity=1))
register(OpDef("log_softmax", _sm_shape("log_softmax"), floating(_log_softmax), _log_softmax_vjp,
               attrs=SM, arity=1))


def _masked_sm_shape(attrs, x, mask):
    norm_axes("masked_softmax", attrs["axis"], x.rank)
    if not (mask.is_float or mask.dtype == "bool"):
        raise ShapeError(f"masked_softmax: the mask must be bool (true = keep) or float "
                         f"(added to the scores), got {mask}")
    if broadcast_shapes("masked_softmax", x.shape, mask.shape) != tuple(x.shape):
        raise ShapeError(f"masked_softmax: the mask {mask} does not broadcast to the scores {x}")
    return TensorType(float_result_dtype(x.dtype), x.shape)


def _masked_softmax(xp, x, mask, axis):
    # p = exp(z) 1[kept] / Σ exp(z) 1[kept], z = x (bool mask) or x + mask (float mask,
    # -inf hides); a row with nothing kept is all zeros instead of 0/0
    if x.dtype.kind != "f":
        x = x.astype(np_dtype(float_result_dtype(NP_TO_DTYPE[x.dtype])))
    if mask.dtype.kind == "b":
        z = xp.where(mask, x, -xp.inf)
    else:
        z = x + mask.astype(x.dtype, copy=False)
    m = row_max(xp, z, axis)
    e = xp.exp(z - xp.where(xp.isfinite(m), m, 0))
    s = row_sum(xp, e, axis, keepdims=True)
    return (e / xp.where(s > 0, s, 1)).astype(x.dtype, copy=False)


def _masked_softmax_vjp(g, out, x, mask, axis):
    # as softmax (hidden positions have p = 0, so they get none); z = x + mask for a float mask
    (dz,) = _softmax_vjp(g, out, x, axis, 1.0)
    if mask.type.dtype == "bool":
        return dz, None
    dm = dz if mask.type.dtype == dz.type.dtype else g.b.emit("cast", dz, dtype=mask.type.dtype)
    return dz, dm


register(OpDef("masked_softmax", _masked_sm_shape, _masked_softmax, _masked_softmax_vjp,
               attrs={"axis": -1}, arity=2,
               doc="softmax over the positions a mask keeps (bool: true = keep; float: added, "
                   "-inf hides); a row with nothing kept gives zeros"))


CE = {"smoothing": 0.0, "smoothing_mode": "m-1", "temperature": 1.0}


def _ce_shape(attrs, z, y):
    if z.rank < 1:
        raise ShapeError(f"softmax_cross_entropy: logits must have a class axis, got {z}")
    if y.is_float or y.dtype == "bool":
        raise ShapeError(f"softmax_cross_entropy: labels must be integers, got {y}")
    if tuple(y.shape) != tuple(z.shape[:-1]):
        raise ShapeError(f"softmax_cross_entropy: labels {y} do not match logits {z}")
    if attrs["smoothing_mode"] not in ("m-1", "m"):
        raise ShapeError("softmax_cross_entropy: smoothing_mode must be 'm-1' or 'm'")
    if attrs["smoothing"] and attrs["smoothing_mode"] == "m-1" and z.shape[-1] == 1:
        raise ShapeError(f"softmax_cross_entropy: smoothing_mode 'm-1' spreads the smoothing "
                         f"over the other classes, and logits {z} have one class")
    return TensorType(float_result_dtype(z.dtype), z.shape[:-1])


def _smooth_weights(eps, mode, m):
    """(weight on the true class, weight on every other class) of the smoothed target."""
    if mode == "m-1":  # B 6.13: 1-ε on y, ε/(m-1) elsewhere
        return 1.0 - eps, eps / (m - 1)
    return 1.0 - eps + eps / m, eps / m  # PyTorch: (1-ε) one-hot + ε/m uniform


def _ce_fwd(xp, z, y, smoothing, smoothing_mode, temperature):
    (z,) = to_float(xp, z)
    check_range(xp, y, z.shape[-1], "softmax_cross_entropy: a label", z.ndim - 1)
    if smoothing == 0.0:  # -log softmax(z)[y] = log Σ exp(s) - s[y], s = z/T - max: one
        # pass less than through the whole log-softmax (the same IEEE operations per value)
        s = _shifted(xp, z, -1, temperature)
        lse = xp.log(row_sum(xp, xp.exp(s), -1))
        if s.ndim == 2:  # (a fancy index: a third of take_along_axis's time at [128, 10])
            return lse - s[xp.arange(s.shape[0]), y]
        return lse - xp.take_along_axis(s, y[..., None].astype("int64"), axis=-1)[..., 0]
    lp = _log_softmax(xp, z, -1, temperature)
    picked = xp.take_along_axis(lp, y[..., None].astype("int64"), axis=-1)[..., 0]
    on, off = _smooth_weights(smoothing, smoothing_mode, z.shape[-1])
    total = row_sum(xp, lp, -1)
    return -(on * picked + off * (total - picked))


def _ce_vjp(g, out, z, y, smoothing, smoothing_mode, temperature):
    # d/dz = (softmax(z/T) - target) g / T in one kernel, target the (smoothed) one-hot
    return (g.b.emit("softmax_cross_entropy_grad", z, y, g, smoothing=smoothing,
                     smoothing_mode=smoothing_mode, temperature=temperature), None)


register(OpDef("softmax_cross_entropy", _ce_shape, _ce_fwd, _ce_vjp, attrs=CE, arity=2,
               index_operands=frozenset({1}),
               doc="per-example -log softmax(z/T)[y] with optional label smoothing"))


def _ce_grad_shape(attrs, z, y, g):
    _ce_shape(attrs, z, y)
    if not g.is_float or tuple(g.shape) != tuple(z.shape[:-1]):
        raise ShapeError(f"softmax_cross_entropy_grad: the gradient {g} does not match the "
                         f"per-example losses of {z}")
    return TensorType(float_result_dtype(z.dtype), z.shape)


def ce_grad_kernel(xp, out, z, y, g, smoothing, smoothing_mode, temperature):
    """(softmax(z/T) - target) g / T written into `out` (z's shape and float dtype): the
    softmax in place, the target's weights subtracted at the labels, one scaling."""
    m = z.shape[-1]
    check_range(xp, y, m, "softmax_cross_entropy_grad: a label", z.ndim - 1)
    softmax_into(xp, out, z, -1, temperature)
    on, off = _smooth_weights(smoothing, smoothing_mode, m) if smoothing else (1.0, 0.0)
    if off:
        xp.subtract(out, off, out=out)
    rows = out.reshape(-1, m)
    rows[xp.arange(rows.shape[0]), y.reshape(-1)] -= on - off
    scale = g[..., None] if temperature == 1.0 else g[..., None] * (1.0 / temperature)
    xp.multiply(out, scale, out=out)
    return out


def _ce_grad_fwd(xp, z, y, g, smoothing, smoothing_mode, temperature):
    (z,) = to_float(xp, z)
    out = xp.empty(z.shape, dtype=z.dtype)
    return ce_grad_kernel(xp, out, z, y, g, smoothing, smoothing_mode, temperature)


def _ce_grad_vjp(u, out, z, y, g, smoothing, smoothing_mode, temperature):
    # out = (p - t) g / T, p = softmax(z/T): linear in g; in z, p's own VJP with u g / T
    em = u.b.emit
    m = z.shape[-1]
    p = em("softmax", z, axis=-1, temperature=temperature)
    t = em("one_hot", y, depth=m, dtype=z.type.dtype)
    if smoothing:
        on, off = _smooth_weights(smoothing, smoothing_mode, m)
        t = t * (on - off) + off
    gz = em("reshape", g, shape=g.shape + (1,))
    (dz,) = _softmax_vjp(u * gz * (1.0 / temperature), p, z, -1, temperature)
    dg = em("sum", u * (p - t), axis=-1, keepdims=False) * (1.0 / temperature)
    return dz, None, dg


register(OpDef("softmax_cross_entropy_grad", _ce_grad_shape, _ce_grad_fwd, _ce_grad_vjp,
               attrs=CE, arity=3, index_operands=frozenset({1}),
               doc="the gradient of softmax_cross_entropy in its logits: (softmax(z/T) - "
                   "target) g / T"))


def _sbce_fwd(xp, z, y):
    z, y = to_float(xp, z, y)
    return softplus_kernel(xp, z) - y * z


register(OpDef("sigmoid_bce", lambda attrs, z, y: float_elementwise("sigmoid_bce", z, y),
               _sbce_fwd,
               lambda g, out, z, y: (g * (z.b.emit("sigmoid", z) - y), -g * z),
               arity=2, elementwise=True, doc="elementwise BCE of sigmoid(z) against y"))


# ---- LSTM gates: the four gate activations of a cell in one kernel

LSTM_GATES = 4  # PyTorch's order i, f, g, o: sigmoid, sigmoid, tanh, sigmoid


def _gates_shape(attrs, z):
    n = z.shape[-1] if z.rank else None
    if not isinstance(n, int) or n % LSTM_GATES:
        raise ShapeError(f"lstm_gates: the last axis must be a static multiple of "
                         f"{LSTM_GATES} (gates i, f, g, o), got {z}")
    return TensorType(float_result_dtype(z.dtype), z.shape)


def gate_affine(xp, dtype, n):
    """(s, b) of length n: s = 1/2, b = 1/2 on the sigmoid gates i, f, o; s = 1, b = 0 on g."""
    h = n // LSTM_GATES
    s, b = xp.full(n, 0.5, dtype=dtype), xp.full(n, 0.5, dtype=dtype)
    s[2 * h:3 * h], b[2 * h:3 * h] = 1.0, 0.0
    return s, b


def _lstm_gates(xp, z):
    # σ(x) = tanh(x/2)/2 + 1/2 on i, f, o and tanh(x) on g: act = tanh(z s) s + b
    s, b = gate_affine(xp, z.dtype, z.shape[-1])
    t = xp.tanh(z * s)
    return t * s + b


def _lstm_gates_vjp(g, out, z):
    # σ' = σ - σ² on i, f, o and tanh' = 1 - tanh² on g: g ⊙ (act ⊙ k + (1 - k) - act²)
    s, _ = gate_affine(np, np.float64, z.shape[-1])
    k = (s == 0.5).astype(np.float64)  # 1 on i, f, o; 0 on g
    dt = out.type.dtype
    return (g * (out * g.b.const(k, dt) + g.b.const(1.0 - k, dt) - out * out),)


register(OpDef("lstm_gates", _gates_shape, floating(_lstm_gates), _lstm_gates_vjp, arity=1,
               doc="the gate activations of an LSTM cell on its pre-activations x [..., 4H] "
                   "in PyTorch's order i, f, g, o: sigmoid, sigmoid, tanh, sigmoid (the "
                   "rewrite `simplify` makes it from a split cell)"))
