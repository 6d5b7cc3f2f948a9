"""Table-driven tests of every registered op: one `Row` (or more) per op in `ROWS`.

For each row: (a) the forward kernel equals an independent NumPy reference written from the
math; (b) the shape rule's declared type equals the computed array's shape and dtype; (c) the
VJP, taken through `runtime.autodiff.gradients` of `sum(u * f(x))` for a random `u` (so the
driver's un-broadcasting is exercised too), equals central finite differences in float64 for
every float input; (d) the VJP of the VJP (gradient of `sum(w * grad)` with respect to the
inputs and the cotangent `u`) equals finite differences of the first gradient. Rows without
a gradient say why (`nondiff=`), and the op must then be marked `nondiff` or have a VJP that
returns None; ops with no VJP by design say so (`novjp=`) and differentiating them must raise
`GradError`; random ops are checked for shape, dtype, seeded determinism and statistics. The
shape rule is also checked with each row's float inputs retyped (f32, integers, bool, mixed).

To cover a new op, add a `Row(op, input_shapes, attrs, domain, reference)` to `ROWS`:
`domain` draws inputs away from kinks and singularities (one sampler for all inputs, a tuple
with one per input, or a `Joint` sampler), `reference(*inputs, **attrs)` is the NumPy formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers_numeric import (
    NORMAL,
    Joint,
    Row,
    Runner,
    Sampler,
    add_input,
    assert_grad_close,
    build_row,
    normal,
    numeric_grad,
    rng_for,
    row_params,
    sample_inputs,
)
from test_conv_norm import CONV_NORM_ROWS

from runtime.autodiff import GradError, gradients
from runtime.dtypes import NP_TO_DTYPE
from runtime.ir import TensorType, parse_type
from runtime.ops import REGISTRY, ShapeError
from runtime.ops.control import new_region, set_results

# --------------------------------------------------------------------------- input samplers

def uniform(lo: float, hi: float) -> Sampler:
    return lambda rng, shape: rng.uniform(lo, hi, shape)


def positive(lo: float = 0.5, hi: float = 2.0) -> Sampler:
    return uniform(lo, hi)


def away(gap: float = 0.2, hi: float = 2.0) -> Sampler:
    """|x| in [gap, hi] with a random sign: keeps kinks at 0 (abs, relu, sign) out of reach."""
    return lambda rng, shape: rng.uniform(gap, hi, shape) * rng.choice([-1.0, 1.0], shape)


def ints(lo: int, hi: int) -> Sampler:
    return lambda rng, shape: rng.integers(lo, hi, shape)


def bools() -> Sampler:
    return lambda rng, shape: rng.random(shape) < 0.5


def well_conditioned(n_shift: float = 3.0) -> Sampler:
    """Square matrices n_shift·I + noise: eigenvalues far from 0."""
    def draw(rng, shape):
        return np.eye(shape[-1]) * n_shift + 0.3 * rng.standard_normal(shape)
    return draw


def symmetric() -> Sampler:
    """Symmetric matrices (A + Aᵀ)/2 of a Gaussian A: distinct eigenvalues almost surely."""
    def draw(rng, shape):
        a = rng.standard_normal(shape)
        return (a + np.swapaxes(a, -1, -2)) / 2
    return draw


def distinct(gap: float = 0.2) -> Joint:
    """Two operands that differ by at least `gap` everywhere they meet after broadcasting
    (maximum, minimum, comparisons away from ties)."""
    def draw(rng, shapes):
        small, big = sorted(range(2), key=lambda i: np.prod(shapes[i], dtype=int))
        if shapes[small] == shapes[big]:
            small, big = 1, 0
        s = rng.standard_normal(shapes[small])
        off = rng.uniform(gap, 1.5, shapes[big]) * rng.choice([-1.0, 1.0], shapes[big])
        out = [None, None]
        out[small], out[big] = s, np.broadcast_to(s, shapes[big]) + off
        return out
    return Joint(draw)



# --------------------------------------------------------------------------- the table


# -- references written from the math (never calling the kernels under test)

def _softmax(x, axis=-1, temperature=1.0):
    e = np.exp(x / temperature)
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x, axis=-1, temperature=1.0):
    z = x / temperature
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _smoothed_target(m, y, smoothing, smoothing_mode):
    onehot = (np.arange(m) == y[..., None]).astype(float)
    if smoothing_mode == "m-1":  # 1-ε on the label, ε/(m-1) on each other class
        return onehot * (1 - smoothing) + (1 - onehot) * smoothing / (m - 1)
    return onehot * (1 - smoothing) + smoothing / m  # (1-ε) one-hot + ε/m uniform


def _cross_entropy(z, y, smoothing=0.0, smoothing_mode="m-1", temperature=1.0):
    target = _smoothed_target(z.shape[-1], y, smoothing, smoothing_mode)
    return -(target * _log_softmax(z, -1, temperature)).sum(-1)


def _cross_entropy_grad(z, y, g, smoothing=0.0, smoothing_mode="m-1", temperature=1.0):
    target = _smoothed_target(z.shape[-1], y, smoothing, smoothing_mode)
    p = np.exp(_log_softmax(z, -1, temperature))
    return (p - target) * g[..., None] / temperature


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _lstm_gates(z):
    i, f, g, o = np.split(z, 4, axis=-1)
    return np.concatenate([_sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)], axis=-1)


def _inv(a):
    """Adjugate over determinant (cofactor expansion), independent of LAPACK's inverse."""
    n = a.shape[-1]
    cof = np.empty_like(a)
    for i in range(n):
        for j in range(n):
            minor = np.delete(np.delete(a, i, axis=-2), j, axis=-1)
            cof[..., i, j] = (-1) ** (i + j) * np.linalg.det(minor)
    return np.swapaxes(cof, -1, -2) / np.linalg.det(a)[..., None, None]


def _eigvalsh3(a):
    """The eigenvalues of symmetric 3×3 matrices, ascending, from the trigonometric solution
    of the characteristic cubic (Smith 1961), independent of LAPACK."""
    q = np.trace(a, axis1=-2, axis2=-1) / 3
    off = a[..., 0, 1] ** 2 + a[..., 0, 2] ** 2 + a[..., 1, 2] ** 2
    p = np.sqrt((sum((a[..., i, i] - q) ** 2 for i in range(3)) + 2 * off) / 6)
    c = (a - q[..., None, None] * np.eye(3)) / p[..., None, None]
    det = (c[..., 0, 0] * (c[..., 1, 1] * c[..., 2, 2] - c[..., 1, 2] * c[..., 2, 1])
           - c[..., 0, 1] * (c[..., 1, 0] * c[..., 2, 2] - c[..., 1, 2] * c[..., 2, 0])
           + c[..., 0, 2] * (c[..., 1, 0] * c[..., 2, 1] - c[..., 1, 1] * c[..., 2, 0]))
    phi = np.arccos(np.clip(det / 2, -1, 1)) / 3
    hi, lo = q + 2 * p * np.cos(phi), q + 2 * p * np.cos(phi + 2 * np.pi / 3)
    return np.stack([lo, 3 * q - hi - lo, hi], axis=-1)


_erf = np.vectorize(math.erf)


def _gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return x * 0.5 * (1 + _erf(x / np.sqrt(2)))


def _masked_softmax(x, mask, axis=-1):
    """exp over the kept positions, normalized; a row with none kept is zeros."""
    keep = mask if mask.dtype == bool else np.isfinite(mask)
    e = np.exp(x if mask.dtype == bool else x + np.where(keep, mask, 0.0)) * keep
    s = e.sum(axis=axis, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0)


def _scores_and_mask(mask: np.ndarray) -> Joint:
    """Normal scores with a fixed boolean mask (rows with nothing kept included)."""
    return Joint(lambda rng, shapes: [rng.standard_normal(shapes[0]), mask])


HOLES = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 1, 1, 0, 1]], dtype=bool)
CAUSAL4 = np.tril(np.ones((4, 4), dtype=bool))  # [t, s]: key s kept for query t when s <= t
CATEGORICAL_P = np.array([0.1, 0.2, 0.3, 0.4])


def _categorical_stats(p, temperature):
    """Mean and std of a class drawn from softmax(log p / T)."""
    q = p ** (1 / temperature)
    q = q / q.sum()
    k = np.arange(len(p))
    mean = float((q * k).sum())
    return mean, float(np.sqrt((q * (k - mean) ** 2).sum()))


def _take_grad(g, idx, axis, size):
    out = np.zeros(g.shape[:axis] + (size,) + g.shape[axis + idx.ndim:])
    lead = (slice(None),) * axis
    for pos in np.ndindex(idx.shape):
        out[lead + (idx[pos],)] += g[lead + pos]
    return out


def _index(index):
    return tuple(None if it[0] == "n" else it[1] if it[0] == "i" else slice(*it[1:])
                 for it in index)


def _index_put(x, index, shape):
    out = np.zeros(shape)
    out[_index(index)] = x
    return out


def _red(f):
    """A reduction reference taking the op's attribute names."""
    return lambda x, axis=None, keepdims=False: f(x, axis=axis, keepdims=keepdims)


def _lse(x, axis=None, keepdims=False):
    return np.log(np.exp(x).sum(axis=axis, keepdims=keepdims))


def _norm(x, axis=None, keepdims=False, ord=2):
    if ord == 1:
        return np.abs(x).sum(axis=axis, keepdims=keepdims)
    return np.sqrt((x * x).sum(axis=axis, keepdims=keepdims))


def _argmax(x, axis=-1):
    if axis is None:
        return np.int64(np.flatnonzero(x.ravel() == x.max())[0])
    return (x == x.max(axis=axis, keepdims=True)).argmax(axis=axis)


def _fused_body(types):
    """The body of a fused `exp(x * y) + x`, for inputs of these types."""
    body, b, (x, y) = new_region(types)
    set_results(body, [b.emit("exp", x * y) + x])
    return (body,)


def _cmp(f):
    return dict(domain=distinct(), reference=f, nondiff="comparison: boolean output")


def _logic(f, arity=2):
    return dict(domain=bools(), dtypes=("bool",) * arity, reference=f,
                nondiff="logic: boolean output")


S34 = ((3, 4), (3, 4))

ROWS: list[Row] = [
    # ---- arithmetic (broadcasting rows exercise the driver's un-broadcasting)
    Row("add", S34, reference=lambda a, b: a + b),
    Row("add", ((3, 4), (4,)), reference=lambda a, b: a + b, variant="bcast"),
    Row("add", ((3, 1), (1, 4)), reference=lambda a, b: a + b, variant="bcast_both"),
    Row("sub", ((3, 4), (3, 1)), reference=lambda a, b: a - b),
    Row("mul", S34, reference=lambda a, b: a * b),
    Row("mul", ((3, 4), ()), reference=lambda a, b: a * b, variant="scalar"),
    Row("div", ((3, 4), (4,)), domain=(NORMAL, away(0.5)), reference=lambda a, b: a / b),
    Row("pow", S34, domain=(positive(), uniform(-1.5, 1.5)),
        reference=lambda a, b: np.exp(b * np.log(a))),
    Row("pow", ((3, 4), ()), domain=(positive(), uniform(-1.5, 1.5)),
        reference=lambda a, b: np.exp(b * np.log(a)), variant="scalar_exponent"),
    Row("maximum", S34, domain=distinct(), reference=lambda a, b: np.where(a > b, a, b)),
    Row("maximum", ((3, 4), (4,)), domain=distinct(),
        reference=lambda a, b: np.where(a > b, a, b), variant="bcast"),
    Row("minimum", ((4,), (3, 4)), domain=distinct(),
        reference=lambda a, b: np.where(a < b, a, b)),
    Row("neg", ((3, 4),), reference=lambda x: -x),
    Row("where", ((3, 4), (3, 4), (4,)), domain=(bools(), NORMAL, NORMAL),
        dtypes=("bool", "f64", "f64"), reference=lambda c, a, b: c * a + (1 - c) * b),
    # ---- comparisons and logic
    Row("greater", ((3, 4), (4,)), **_cmp(lambda a, b: a - b > 0)),
    Row("less", ((3, 4), (4,)), **_cmp(lambda a, b: b - a > 0)),
    Row("greater_equal", S34, **_cmp(lambda a, b: a - b >= 0)),
    Row("less_equal", S34, **_cmp(lambda a, b: b - a >= 0)),
    Row("equal", S34, domain=ints(0, 3), dtypes=("i64", "i64"),
        reference=lambda a, b: a - b == 0, nondiff="comparison: boolean output"),
    Row("not_equal", S34, domain=ints(0, 3), dtypes=("i64", "i64"),
        reference=lambda a, b: a - b != 0, nondiff="comparison: boolean output"),
    Row("logical_and", S34, **_logic(lambda a, b: a & b)),
    Row("logical_or", S34, **_logic(lambda a, b: a | b)),
    Row("logical_not", ((3, 4),), **_logic(lambda a: ~a, arity=1)),
    # ---- transcendental
    Row("exp", ((3, 4),), reference=lambda x: np.e ** x),
    Row("log", ((3, 4),), domain=positive(), reference=lambda x: np.log2(x) / np.log2(np.e)),
    Row("log1p", ((3, 4),), domain=uniform(-0.5, 2.0), reference=lambda x: np.log(1 + x)),
    Row("expm1", ((3, 4),), reference=lambda x: np.exp(x) - 1),
    Row("sqrt", ((3, 4),), domain=positive(), reference=lambda x: x ** 0.5),
    Row("abs", ((3, 4),), domain=away(), reference=lambda x: np.where(x < 0, -x, x)),
    Row("sign", ((3, 4),), domain=away(), reference=lambda x: (x > 0) * 1.0 - (x < 0) * 1.0,
        nondiff="piecewise constant: zero gradient"),
    Row("sin", ((3, 4),), reference=lambda x: np.cos(x - np.pi / 2)),
    Row("cos", ((3, 4),), reference=lambda x: np.sin(x + np.pi / 2)),
    Row("tanh", ((3, 4),), reference=lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1)),
    Row("square", ((3, 4),), reference=lambda x: x * x),
    # ---- activations
    Row("sigmoid", ((3, 4),), domain=normal(3.0), reference=_sigmoid),
    Row("lstm_gates", ((3, 8),), domain=normal(3.0), reference=_lstm_gates),
    Row("lstm_gates", ((2, 3, 4),), domain=normal(3.0), reference=_lstm_gates, variant="rank3"),
    Row("softplus", ((3, 4),), domain=normal(3.0), reference=lambda x: np.log(1 + np.exp(x))),
    Row("relu", ((3, 4),), domain=away(), reference=lambda x: x * (x > 0)),
    Row("leaky_relu", ((3, 4),), {"alpha": 0.1}, domain=away(),
        reference=lambda x, alpha: np.where(x > 0, x, alpha * x)),
    Row("swish", ((3, 4),), domain=normal(2.0), reference=lambda x: x * _sigmoid(x)),
    Row("gelu", ((3, 4),), domain=normal(2.0), reference=_gelu),
    Row("gelu", ((3, 4),), {"approximate": "tanh"}, domain=normal(2.0), reference=_gelu,
        variant="tanh"),
    Row("erf", ((3, 4),), domain=normal(1.5), reference=_erf),
    Row("step", ((3, 4),), domain=away(), reference=lambda x: (x >= 0) * 1.0,
        nondiff="piecewise constant: zero gradient"),
    # ---- casts and barriers
    Row("cast", ((3, 4),), {"dtype": "f32"}, reference=lambda x, dtype: x.astype(np.float32),
        eps=1e-2, rtol=1e-3, variant="f64_to_f32"),
    Row("cast", ((3, 4),), {"dtype": "f64"}, dtypes=("f32",),
        reference=lambda x, dtype: x.astype(np.float64), eps=1e-2, rtol=1e-3,
        variant="f32_to_f64"),
    Row("cast", ((3, 4),), {"dtype": "f64"}, domain=ints(-5, 5), dtypes=("i64",),
        reference=lambda x, dtype: x * 1.0, nondiff="integer input: no gradient",
        variant="int"),
    Row("stop_gradient", ((3, 4),), reference=lambda x: x,
        nondiff="gradient barrier by design"),
    # ---- nn
    Row("softmax", ((3, 5),), reference=_softmax),
    Row("masked_softmax", ((3, 5), (3, 5)), domain=_scores_and_mask(HOLES),
        dtypes=("f64", "bool"), reference=_masked_softmax),
    Row("masked_softmax", ((2, 4, 4), (4, 4)), domain=_scores_and_mask(CAUSAL4),
        dtypes=("f64", "bool"), reference=_masked_softmax, variant="causal_bcast"),
    Row("masked_softmax", ((5, 3), (5, 1)), {"axis": 0}, reference=_masked_softmax,
        variant="additive_axis0"),
    Row("softmax", ((3, 5),), {"axis": 0, "temperature": 2.0}, reference=_softmax,
        variant="axis0_T2"),
    Row("log_softmax", ((3, 5),), reference=_log_softmax),
    Row("log_softmax", ((3, 5),), {"axis": 0, "temperature": 0.5}, reference=_log_softmax,
        variant="axis0_T0.5"),
    Row("softmax_cross_entropy", ((4, 5), (4,)), domain=(NORMAL, ints(0, 5)),
        dtypes=("f64", "i64"), reference=_cross_entropy),
    Row("softmax_cross_entropy", ((4, 5), (4,)), {"smoothing": 0.1},
        domain=(NORMAL, ints(0, 5)), dtypes=("f64", "i64"), reference=_cross_entropy,
        variant="smooth_m-1"),
    Row("softmax_cross_entropy", ((2, 3, 5), (2, 3)),
        {"smoothing": 0.2, "smoothing_mode": "m", "temperature": 2.0},
        domain=(NORMAL, ints(0, 5)), dtypes=("f64", "i32"), reference=_cross_entropy,
        variant="smooth_m_T2_3d"),
    Row("softmax_cross_entropy_grad", ((4, 5), (4,), (4,)), domain=(NORMAL, ints(0, 5), NORMAL),
        dtypes=("f64", "i64", "f64"), reference=_cross_entropy_grad),
    Row("softmax_cross_entropy_grad", ((2, 3, 5), (2, 3), (2, 3)),
        {"smoothing": 0.2, "smoothing_mode": "m", "temperature": 2.0},
        domain=(NORMAL, ints(0, 5), NORMAL), dtypes=("f64", "i32", "f64"),
        reference=_cross_entropy_grad, variant="smooth_m_T2_3d"),
    Row("softmax_cross_entropy_grad", ((4, 5), (4,), (4,)), {"smoothing": 0.1},
        domain=(NORMAL, ints(0, 5), NORMAL), dtypes=("f64", "i64", "f64"),
        reference=_cross_entropy_grad, variant="smooth_m-1"),
    Row("sigmoid_bce", S34, domain=(normal(2.0), uniform(0.0, 1.0)),
        reference=lambda z, y: -(y * np.log(_sigmoid(z)) + (1 - y) * np.log(1 - _sigmoid(z)))),
    Row("sigmoid_bce", ((3, 4), (4,)), domain=(normal(2.0), uniform(0.0, 1.0)),
        reference=lambda z, y: -(y * np.log(_sigmoid(z)) + (1 - y) * np.log(1 - _sigmoid(z))),
        variant="bcast"),
    # ---- reductions
    Row("sum", ((3, 4),), reference=_red(np.sum)),
    Row("sum", ((3, 4),), {"axis": 1, "keepdims": True}, reference=_red(np.sum),
        variant="axis1_keep"),
    Row("sum", ((2, 3, 4),), {"axis": (0, 2)}, reference=_red(np.sum), variant="axes02"),
    Row("mean", ((3, 4),), reference=_red(lambda x, **k: np.sum(x, **k) / x.size)),
    Row("mean", ((2, 3, 4),), {"axis": (-1, 0), "keepdims": True},
        reference=lambda x, axis, keepdims: x.sum(axis=(0, 2), keepdims=True) / 8,
        variant="axes_keep"),
    Row("mean", ((3, 4),), {"axis": 0}, domain=ints(-5, 5), dtypes=("i64",),
        reference=lambda x, axis: x.sum(axis=0) / 3, nondiff="integer input: no gradient",
        variant="int"),
    Row("max", ((3, 4),), {"axis": 1}, reference=_red(np.max)),
    Row("max", ((3, 4),), reference=_red(np.max), variant="all"),
    Row("min", ((3, 4),), {"axis": 0, "keepdims": True}, reference=_red(np.min)),
    Row("logsumexp", ((3, 4),), {"axis": 1}, reference=_lse),
    Row("logsumexp", ((3, 4),), reference=_lse, variant="all"),
    Row("logsumexp", ((2, 3, 4),), {"axis": (0, -1), "keepdims": True}, reference=_lse,
        variant="axes_keep"),
    Row("argmax", ((3, 4),), reference=_argmax, nondiff="integer output"),
    Row("argmax", ((3, 4),), {"axis": None}, reference=_argmax, nondiff="integer output",
        variant="all"),
    Row("size", ((3, 4),), {"axis": 1}, reference=lambda x, axis: np.float64(x.shape[axis]),
        nondiff="depends only on the shape"),
    Row("norm", ((3, 4),), {"axis": 1}, reference=_norm),
    Row("norm", ((3, 4),), {"ord": 1}, domain=away(), reference=_norm, variant="l1"),
    # ---- linear algebra
    Row("matmul", ((3, 4), (4, 5)), reference=lambda a, b: np.einsum("ik,kj->ij", a, b)),
    Row("matmul", ((4,), (4, 5)), reference=lambda a, b: np.einsum("k,kj->j", a, b),
        variant="vec_mat"),
    Row("matmul", ((3, 4), (4,)), reference=lambda a, b: np.einsum("ik,k->i", a, b),
        variant="mat_vec"),
    Row("matmul", ((4,), (4,)), reference=lambda a, b: np.einsum("k,k->", a, b),
        variant="dot"),
    Row("matmul", ((2, 3, 4), (4, 5)), reference=lambda a, b: np.einsum("bik,kj->bij", a, b),
        variant="batched_shared"),
    Row("matmul", ((2, 1, 3, 4), (3, 4, 2)),
        reference=lambda a, b: np.einsum("xik,ykj->xyij", a[:, 0], b),
        variant="batch_bcast"),
    Row("matmul", ((4,), (2, 4, 3)), reference=lambda a, b: np.einsum("k,bkj->bj", a, b),
        variant="vec_batched"),
    Row("tensordot", ((2, 3, 4), (3, 4, 5)),
        reference=lambda a, b, axes=2: np.einsum("ijk,jkl->il", a, b)),
    Row("tensordot", ((2, 3, 4), (4, 5)), {"axes": 1},
        reference=lambda a, b, axes: np.einsum("ijk,kl->ijl", a, b), variant="one_axis"),
    Row("tensordot", ((2, 3), (4,)), {"axes": 0},
        reference=lambda a, b, axes: np.einsum("ij,k->ijk", a, b), variant="outer"),
    Row("solve", ((3, 3), (3,)), domain=(well_conditioned(), NORMAL),
        reference=lambda a, b: _inv(a) @ b),
    Row("solve", ((3, 3), (3, 2)), domain=(well_conditioned(), NORMAL),
        reference=lambda a, b: _inv(a) @ b, variant="matrix_rhs"),
    Row("solve", ((2, 3, 3), (3,)), domain=(well_conditioned(), NORMAL),
        reference=lambda a, b: np.einsum("bij,j->bi", _inv(a), b), variant="batch_vec"),
    Row("solve", ((3, 3), (2, 3, 2)), domain=(well_conditioned(), NORMAL),
        reference=lambda a, b: np.einsum("ij,bjk->bik", _inv(a), b), variant="bcast_rhs"),
    Row("solve", ((2, 1, 3, 3), (3, 3, 1)), domain=(well_conditioned(), NORMAL),
        reference=lambda a, b: np.einsum("xij,yjk->xyik", _inv(a[:, 0]), b),
        variant="batch_bcast"),
    Row("inv", ((3, 3),), domain=well_conditioned(), reference=_inv),
    Row("inv", ((2, 3, 3),), domain=well_conditioned(), reference=_inv, variant="batched"),
    Row("eigvalsh", ((3, 3),), domain=symmetric(), reference=_eigvalsh3,
        novjp="dλ = uᵀ dA u needs the eigenvectors"),
    Row("eigvalsh", ((2, 3, 3),), domain=symmetric(), reference=_eigvalsh3, variant="batched",
        novjp="dλ = uᵀ dA u needs the eigenvectors"),
    # ---- shapes and indexing
    Row("reshape", ((3, 4),), {"shape": (2, -1, 3)},
        reference=lambda x, shape: np.array(x.ravel().tolist()).reshape(2, 2, 3)),
    Row("transpose", ((2, 3, 4),), {"axes": (1, 2, 0)},
        reference=lambda x, axes: np.einsum("abc->bca", x)),
    Row("transpose", ((2, 3, 4),), reference=lambda x: np.einsum("abc->cba", x),
        variant="reverse"),
    Row("broadcast_to", ((3, 1),), {"shape": (2, 3, 4)},
        reference=lambda x, shape: x[None] * np.ones(shape)),
    Row("sum_to", ((2, 3, 4),), {"shape": (3, 1)},
        reference=lambda x, shape: x.sum(axis=0).sum(axis=1, keepdims=True)),
    Row("sum_to", ((2, 3, 4),), {"shape": (4,)},
        reference=lambda x, shape: x.sum(axis=(0, 1)), variant="drop_lead"),
    Row("concat", ((2, 3), (4, 3), (1, 3)),
        reference=lambda *xs, axis=0: np.vstack(xs)),
    Row("concat", ((2, 1), (2, 3)), {"axis": -1},
        reference=lambda *xs, axis: np.hstack(xs), variant="last_axis"),
    Row("getitem", ((4, 5),), {"index": (("i", 1), ("s", None, None, 2))},
        reference=lambda x, index: x[1, ::2]),
    Row("getitem", ((4, 5),), {"index": (("n",), ("s", 3, 0, -1), ("i", -2))},
        reference=lambda x, index: x[None, 3:0:-1, -2], variant="newaxis_negstep"),
    Row("index_put", ((2, 4),), {"index": (("s", 1, 3, None),), "shape": (5, 4)},
        reference=_index_put),
    Row("index_put", ((3,),), {"index": (("i", 2), ("s", None, None, 2)), "shape": (4, 6)},
        reference=_index_put, variant="int_step"),
    Row("take", ((5, 3), (2, 3)), domain=(NORMAL, ints(0, 5)), dtypes=("f64", "i64"),
        reference=lambda x, i: np.stack([[x[k] for k in r] for r in i])),
    Row("take", ((2, 4), (5,)), {"axis": -1}, domain=(NORMAL, ints(0, 4)),
        dtypes=("f64", "i32"), reference=lambda x, i, axis: x[:, list(i)], variant="axis-1"),
    Row("take", ((70, 3), (2, 3)), domain=(NORMAL, ints(0, 70)), dtypes=("f64", "i64"),
        reference=lambda x, i: np.stack([[x[k] for k in r] for r in i]), variant="bincount"),
    Row("take_grad", ((2, 3, 4), (2, 3)), {"axis": 0, "size": 5}, domain=(NORMAL, ints(0, 5)),
        dtypes=("f64", "i64"), reference=_take_grad),
    Row("take_grad", ((2, 3, 4), (3,)), {"axis": 1, "size": 2}, domain=(NORMAL, ints(0, 2)),
        dtypes=("f64", "i64"), reference=_take_grad, variant="axis1"),
    Row("take_grad", ((2, 3, 4), (3,)), {"axis": 1, "size": 80}, domain=(NORMAL, ints(0, 80)),
        dtypes=("f64", "i64"), reference=_take_grad, variant="axis1_bincount"),
    Row("one_hot", ((4,),), {"depth": 5, "dtype": "f64"}, domain=ints(0, 5), dtypes=("i64",),
        reference=lambda i, depth, dtype: (np.arange(depth) == i[:, None]) * 1.0,
        nondiff="integer input"),
    Row("full", (), {"shape": (2, 3), "value": 1.5, "dtype": "f64"},
        reference=lambda shape, value, dtype: value * np.ones(shape), nondiff="no inputs"),
    Row("full_like", ((2, 3),), {"value": 2.0},
        reference=lambda x, value: 0 * x + value, nondiff="constant in x"),
    # ---- made by passes
    Row("fused_elementwise", ((3, 4), (4,)), regions=_fused_body,
        reference=lambda x, y: np.exp(x * y) + x,
        novjp="a lowering that runs after differentiation"),
    # ---- random (checked by statistics)
    Row("random_normal", (), {"shape": (20000,), "mean": 1.0, "std": 2.0, "dtype": "f64"},
        stats=(1.0, 2.0), nondiff="random"),
    Row("random_uniform", (), {"shape": (100, 200), "low": -1.0, "high": 3.0},
        stats=(1.0, 4.0 / 12 ** 0.5), nondiff="random"),
    Row("random_bernoulli", (), {"shape": (20000,), "p": 0.3, "dtype": "f64"},
        stats=(0.3, (0.3 * 0.7) ** 0.5), nondiff="random"),
    Row("random_categorical", ((20000, 4),), {"temperature": 2.0},
        domain=lambda rng, shape: np.broadcast_to(np.log(CATEGORICAL_P), shape),
        stats=_categorical_stats(CATEGORICAL_P, 2.0), nondiff="random"),
    Row("random_randint", (), {"shape": (20000,), "low": 2, "high": 7},
        stats=(4.0, 2.0 ** 0.5), nondiff="random"),
]
ROWS += CONV_NORM_ROWS  # convolution, pooling and normalization rows live beside their tests

DIFF_ROWS = [r for r in ROWS if r.nondiff is None and r.novjp is None]
NONDIFF_ROWS = [r for r in ROWS if r.nondiff is not None and r.stats is None]
NOVJP_ROWS = [r for r in ROWS if r.novjp is not None]
RANDOM_ROWS = [r for r in ROWS if r.stats is not None]


def _float_inputs(xs) -> list[int]:
    return [i for i, x in enumerate(xs) if x.type.is_float]


def _first_order_graph(row: Row):
    """y = sum(u * f(x)) with a fixed random u, and dy/dx for every float input."""
    b, xs, out = build_row(row)
    u = b.const(rng_for(row.id, "u").standard_normal(out.shape), out.type.dtype)
    y = b.emit("sum", u * out)
    fl = _float_inputs(xs)
    grads = gradients(b, y.id, [xs[i].id for i in fl])
    b.graph.outputs["y"] = y.id
    for i, gi in zip(fl, grads, strict=True):
        if gi is not None:
            b.graph.outputs[f"g{i}"] = gi.id
    return b, xs, fl, grads


# --------------------------------------------------------------------------- meta


# ops with a region or several results: their own module checks them (forward against a
# NumPy loop, gradients against the unrolled graph, second order)
STRUCTURAL = {"loop": "tests/test_loops.py", "item": "tests/test_loops.py"}


def test_every_registered_op_has_a_row():
    covered = {r.op for r in ROWS} | set(STRUCTURAL)
    missing = sorted(set(REGISTRY) - covered)
    assert not missing, (
        f"{len(missing)} registered op(s) have no Row in tests/test_ops.py ROWS: "
        f"{', '.join(missing)} (add a Row with shapes, a sampler and a NumPy reference)")


def test_rows_name_registered_ops_and_are_unique():
    unknown = sorted({r.op for r in ROWS} - set(REGISTRY))
    assert not unknown, f"rows for unregistered ops: {unknown}"
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), "duplicate row ids: give variants a `variant=` name"
    for r in ROWS:
        assert r.reference is not None or r.stats is not None, f"{r.id}: needs a reference"


# --------------------------------------------------------------------------- (a) forward


@pytest.mark.parametrize("row", row_params([r for r in ROWS if r.stats is None]))
def test_forward_matches_reference(row: Row):
    b, xs, out = build_row(row)
    b.graph.outputs["out"] = out.id
    feeds = sample_inputs(row)
    got = Runner(b.graph, ["out"])(feeds)["out"]
    want = np.asarray(row.reference(*feeds.values(), **row.attrs))
    assert got.shape == want.shape, f"{row.id}: shape {got.shape} != reference {want.shape}"
    if got.dtype.kind in "fc":
        tol = 1e-10 if got.dtype == np.float64 else 1e-6  # f32 results: single precision
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 1e-2, err_msg=row.id)
    else:
        np.testing.assert_array_equal(got, want, err_msg=row.id)


# --------------------------------------------------------------------------- (b) shape rule


@pytest.mark.parametrize("row", row_params(ROWS))
def test_shape_rule_matches_result(row: Row):
    b, xs, out = build_row(row)
    b.graph.outputs["out"] = out.id
    runner = Runner(b.graph, ["out"], seed=0)
    raw = runner.plan.run(sample_inputs(row))[0]
    assert hasattr(raw, "dtype"), f"{row.id}: kernel returned {type(raw).__name__}, not an array"
    declared = out.type
    assert tuple(np.shape(raw)) == tuple(declared.shape), (
        f"{row.id}: shape rule says {declared}, kernel gave shape {np.shape(raw)}")
    assert NP_TO_DTYPE.get(raw.dtype) == declared.dtype, (
        f"{row.id}: shape rule says {declared}, kernel gave dtype {raw.dtype}")


DTYPE_VARIANTS = {  # how the f64 inputs of a row are retyped
    "f32": lambda n: ["f32"] * n,
    "i64": lambda n: ["i64"] * n,
    "i32": lambda n: ["i32"] * n,
    "bool": lambda n: ["bool"] * n,
    "f32+i64": lambda n: ["f32", "i64"] + ["f64"] * (n - 2) if n >= 2 else None,
}


@pytest.mark.parametrize("row", row_params([r for r in ROWS if r.stats is None]))
def test_shape_rule_dtype_matches_kernel_for_other_dtypes(row: Row):
    """The row again with its f64 inputs as f32, integers, bools and mixed f32/i64: wherever
    the shape rule accepts the operands, the kernel's dtype is the declared one."""
    dts = row.input_dtypes()
    fl = [i for i, d in enumerate(dts) if d == "f64"]
    base = sample_inputs(row)
    checked = 0
    for retype in DTYPE_VARIANTS.values():
        new = retype(len(fl))
        if new is None:
            continue
        types = list(dts)
        for i, d in zip(fl, new, strict=True):
            types[i] = d
        try:
            b, xs, out = build_row(Row(row.op, row.input_shapes, row.attrs, dtypes=tuple(types),
                                       regions=row.regions))
        except ShapeError:
            continue  # the rule refuses these operands: nothing runs
        b.graph.outputs["out"] = out.id
        feeds = {}
        for i, (k, v) in enumerate(base.items()):
            if i in fl and types[i] != "f64":
                v = v if types[i][0] == "f" else np.round(3 * v)
            feeds[k] = v.astype(TensorType(types[i], ()).np_dtype())
        with np.errstate(all="ignore"):
            try:
                raw = Runner(b.graph, ["out"]).plan.run(feeds)[0]
            except np.linalg.LinAlgError:
                continue  # a rounded matrix may be singular
        assert (tuple(np.shape(raw)), NP_TO_DTYPE.get(raw.dtype)) == (out.shape, out.type.dtype), (
            f"{row.id} with inputs {types}: rule says {out.type}, kernel gave "
            f"{raw.dtype}{list(np.shape(raw))}")
        checked += 1
    assert checked or not fl or row.op in ("solve", "inv")


# --------------------------------------------------------------------------- (c) first order


@pytest.mark.parametrize("row", row_params(DIFF_ROWS))
def test_vjp_matches_finite_differences(row: Row):
    opdef = REGISTRY[row.op]
    assert opdef.vjp is not None and not opdef.nondiff, f"{row.op}: expected a gradient rule"
    b, xs, fl, grads = _first_order_graph(row)
    assert fl, f"{row.id}: a differentiable row needs a float input"
    names = list(b.graph.outputs)
    run = Runner(b.graph, names)
    f_y = Runner(b.graph, ["y"])
    feeds = sample_inputs(row)
    res = run(feeds)
    num = numeric_grad(lambda fd: f_y(fd)["y"], feeds, [f"x{i}" for i in fl], eps=row.eps)
    for i, gi in zip(fl, grads, strict=True):
        assert gi is None or gi.type == xs[i].type, (
            f"{row.id}: gradient type {gi.type} != input type {xs[i].type}")
        assert_grad_close(res.get(f"g{i}"), num[f"x{i}"], row.rtol, f"{row.id} d/dx{i}")


@pytest.mark.parametrize("row", row_params(NONDIFF_ROWS))
def test_nondiff_rows_are_marked_so(row: Row):
    """The op is registered `nondiff`, or its VJP returns None for every input; either way
    `gradients` gives no gradient (and raises nothing)."""
    opdef = REGISTRY[row.op]
    b, xs, out = build_row(row)
    fl = _float_inputs(xs)
    if not opdef.nondiff and fl:  # (integer inputs are dropped by the driver itself)
        assert opdef.vjp is not None, f"{row.op}: no VJP and not marked nondiff"
        cot = b.const(np.ones(out.shape), out.type.dtype)
        contribs = opdef.vjp(cot, out, *xs, **{**opdef.attrs, **row.attrs})
        assert all(contribs[i] is None for i in fl), (
            f"{row.op} ({row.nondiff}): VJP returned a gradient but the row says nondiff")
    if xs:
        u = b.const(np.ones(out.shape), "f64")
        y = b.emit("sum", u * out)
        assert gradients(b, y.id, [x.id for x in xs]) == [None] * len(xs)


@pytest.mark.parametrize("row", row_params(NOVJP_ROWS))
def test_ops_without_vjp_raise_grad_error(row: Row):
    opdef = REGISTRY[row.op]
    assert opdef.vjp is None and not opdef.nondiff, f"{row.op}: the row says it has no VJP"
    b, xs, out = build_row(row)
    y = b.emit("sum", out)
    with pytest.raises(GradError, match=row.op):
        gradients(b, y.id, [x.id for x in xs])


# --------------------------------------------------------------------------- (d) second order


@pytest.mark.parametrize("row", row_params(DIFF_ROWS))
def test_vjp_of_vjp_matches_finite_differences(row: Row):
    """s(x, u) = Σ_i sum(w_i * d/dx_i sum(u * f(x))); ds/dx is the Hessian-vector product and
    ds/du the forward-mode derivative J w, both checked against differences of s."""
    b, xs, out = build_row(row)
    u = add_input(b, "u", out.type.dtype, out.shape)
    y = b.emit("sum", u * out)
    fl = _float_inputs(xs)
    grads = gradients(b, y.id, [xs[i].id for i in fl])
    rng = rng_for(row.id, "w")
    terms = [b.emit("sum", b.const(rng.standard_normal(gi.shape), gi.type.dtype) * gi)
             for gi in grads if gi is not None]
    assert terms, f"{row.id}: no first-order gradient to differentiate"
    s = terms[0]
    for t in terms[1:]:
        s = s + t
    wrt = [xs[i].id for i in fl] + [u.id]
    names = [f"x{i}" for i in fl] + ["u"]
    second = gradients(b, s.id, wrt)
    b.graph.outputs["s"] = s.id
    for n, h in zip(names, second, strict=True):
        if h is not None:
            b.graph.outputs[f"h_{n}"] = h.id
    feeds = sample_inputs(row)
    feeds["u"] = rng_for(row.id, "u").standard_normal(out.shape).astype(
        out.type.np_dtype())
    res = Runner(b.graph, list(b.graph.outputs))(feeds)
    f_s = Runner(b.graph, ["s"])
    num = numeric_grad(lambda fd: f_s(fd)["s"], feeds, names, eps=row.eps)
    for n in names:
        assert_grad_close(res.get(f"h_{n}"), num[n], row.rtol, f"{row.id} d²/d{n}")


# --------------------------------------------------------------------------- random ops


@pytest.mark.parametrize("row", row_params(RANDOM_ROWS))
def test_random_op_shape_determinism_and_statistics(row: Row):
    opdef = REGISTRY[row.op]
    assert opdef.random and opdef.nondiff
    b, xs, out = build_row(row)
    b.graph.outputs["out"] = out.id

    def draw(seed):
        return Runner(b.graph, ["out"], seed=seed)(sample_inputs(row))["out"]

    a, a2, c = draw(7), draw(7), draw(8)
    assert a.shape == tuple(out.shape) and NP_TO_DTYPE[a.dtype] == out.type.dtype
    np.testing.assert_array_equal(a, a2, err_msg=f"{row.id}: same seed, different draws")
    assert not np.array_equal(a, c), f"{row.id}: different seeds gave the same draws"
    mean, std = row.stats
    assert abs(a.mean() - mean) < 0.05 * std, f"{row.id}: mean {a.mean()} vs {mean}"
    assert abs(a.std() - std) < 0.05 * std, f"{row.id}: std {a.std()} vs {std}"
    if row.op == "random_uniform":
        assert a.min() >= row.attrs["low"] and a.max() < row.attrs["high"]
    if row.op == "random_randint":
        assert set(np.unique(a)) == set(range(row.attrs["low"], row.attrs["high"]))
    if row.op == "random_bernoulli":
        assert set(np.unique(a)) == {0.0, 1.0}


# --------------------------------------------------------------------------- symbolic dims

SYMBOLIC = [
    ("matmul", ["f32[B,64]", "f32[64,10]"], {}, "f32[B,10]"),
    ("matmul", ["f64[B,T,8]", "f64[8,3]"], {}, "f64[B,T,3]"),
    ("add", ["f32[B,4]", "f32[4]"], {}, "f32[B,4]"),
    ("add", ["f32[B,1]", "f32[1,T]"], {}, "f32[B,T]"),
    ("mul", ["f32[B,4]", "f32[]"], {}, "f32[B,4]"),
    ("sum", ["f32[B,T,4]"], {"axis": 1}, "f32[B,4]"),
    ("mean", ["f32[B,4]"], {"axis": 0, "keepdims": True}, "f32[1,4]"),
    ("reshape", ["f32[B,4,3]"], {"shape": ("B", -1)}, "f32[B,12]"),
    ("reshape", ["f32[B,12]"], {"shape": (-1, 3, 4)}, "f32[B,3,4]"),
    ("transpose", ["f32[B,T,4]"], {"axes": (1, 0, 2)}, "f32[T,B,4]"),
    ("concat", ["f32[B,3]", "f32[B,5]"], {"axis": 1}, "f32[B,8]"),
    ("getitem", ["f32[B,5]"], {"index": (("s", None, None, None), ("i", 0))}, "f32[B]"),
    ("softmax_cross_entropy", ["f32[B,10]", "i64[B]"], {}, "f32[B]"),
    ("take", ["f32[7,16]", "i64[B,T]"], {}, "f32[B,T,16]"),
    ("one_hot", ["i64[B]"], {"depth": 10}, "f32[B,10]"),
    ("broadcast_to", ["f32[4]"], {"shape": ("B", 4)}, "f32[B,4]"),
    ("sum_to", ["f32[B,4]"], {"shape": (4,)}, "f32[4]"),
    ("argmax", ["f32[B,10]"], {}, "i64[B]"),
    ("solve", ["f64[B,3,3]", "f64[3]"], {}, "f64[B,3]"),
]


@pytest.mark.parametrize("op, types, attrs, want", SYMBOLIC,
                         ids=[f"{s[0]}:{','.join(s[1])}" for s in SYMBOLIC])
def test_symbolic_shape_rule(op, types, attrs, want):
    """The rule keeps symbols; running with dims bound gives the concrete declared shape."""
    b, xs, out = build_row(Row(op, tuple(parse_type(t).shape for t in types), attrs,
                            dtypes=tuple(parse_type(t).dtype for t in types)))
    assert str(out.type) == want
    dims = {"B": 3, "T": 2}
    b.graph.outputs["out"] = out.id
    rng = rng_for(op, *types)
    feeds = {f"x{i}": (rng.integers(0, 3, x.type.concrete(dims)) if not x.type.is_float
                       else rng.standard_normal(x.type.concrete(dims)))
             for i, x in enumerate(xs)}
    got = Runner(b.graph, ["out"], dims=dims)(feeds)["out"]
    assert got.shape == out.type.concrete(dims)


MISMATCHES = [
    ("matmul", ["f32[B,64]", "f32[32,10]"], {}, ["[B,64]", "[32,10]"]),
    ("matmul", ["f32[B,64]", "f32[]"], {}, ["[B,64]", "f32[]"]),
    ("add", ["f32[3,4]", "f32[5]"], {}, ["[3,4]", "[5]"]),
    ("add", ["f32[B,4]", "f32[T,4]"], {}, ["[B,4]", "[T,4]"]),
    ("reshape", ["f32[3,4]"], {"shape": (5, 2)}, ["[3,4]", "[5,2]"]),
    ("softmax_cross_entropy", ["f32[B,10]", "i64[T]"], {}, ["[B,10]", "[T]"]),
    ("concat", ["f32[2,3]", "f32[2,4]"], {"axis": 0}, ["[2,3]", "[2,4]"]),
    ("solve", ["f32[3,3]", "f32[4]"], {}, ["[3,3]", "[4]"]),
    ("solve", ["f32[2,3,3]", "f32[3,3,2]"], {}, ["[2]", "[3]"]),
    ("broadcast_to", ["f32[3]"], {"shape": (4,)}, ["[3]", "[4]"]),
    ("sum_to", ["f32[3,4]"], {"shape": (5,)}, ["[3,4]", "[5]"]),
    ("neg", ["bool[3]"], {}, ["bool[3]"]),
    ("sub", ["bool[3]", "bool[2,3]"], {}, ["bool[3]", "bool[2,3]"]),
    ("index_put", ["f32[3]"], {"index": (("s", 0, 2, None),), "shape": (5,)}, ["[3]", "[5]"]),
]


@pytest.mark.parametrize("op, types, attrs, parts", MISMATCHES,
                         ids=[f"{s[0]}:{','.join(s[1])}" for s in MISMATCHES])
def test_shape_mismatch_names_both_shapes(op, types, attrs, parts):
    with pytest.raises(ShapeError) as ei:
        build_row(Row(op, tuple(parse_type(t).shape for t in types), attrs,
                   dtypes=tuple(parse_type(t).dtype for t in types)))
    msg = str(ei.value)
    assert op in msg
    for p in parts:
        assert p in msg, f"{p!r} missing from {msg!r}"


def test_symbolic_mean_gradient_divides_by_runtime_size():
    """mean over a symbolic batch: its VJP divides by the bound size, not a constant."""
    b, xs, out = build_row(Row("mean", (("B", 4),), {"axis": 0}))
    y = b.emit("sum", out * b.const(np.arange(4.0), "f64"))
    (gx,) = gradients(b, y.id, [xs[0].id])
    b.graph.outputs.update(y=y.id, g=gx.id)
    for n in (2, 5):
        x = rng_for("mean_sym", n).standard_normal((n, 4))
        res = Runner(b.graph, ["y", "g"], dims={"B": n})({"x0": x})
        np.testing.assert_allclose(res["y"], (x.mean(0) * np.arange(4.0)).sum())
        np.testing.assert_allclose(res["g"], np.broadcast_to(np.arange(4.0) / n, (n, 4)))
