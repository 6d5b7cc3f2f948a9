"""Linear algebra: batched matmul (NumPy semantics, 1-D operands included), tensordot, solve,
inv, eigvalsh."""

from __future__ import annotations

from runtime.dtypes import float_result_dtype, result_dtype
from runtime.ir import TensorType
from runtime.ops.elementwise import promoting, to_float
from runtime.ops.registry import OpDef, ShapeError, register
from runtime.ops.shapes import broadcast_shapes


def _matmul_shape(attrs, a, b):
    if a.rank == 0 or b.rank == 0:
        raise ShapeError(f"matmul: operands must have rank >= 1: {a} @ {b}")
    ash = a.shape if a.rank > 1 else (1,) + a.shape
    bsh = b.shape if b.rank > 1 else b.shape + (1,)
    if ash[-1] != bsh[-2]:
        raise ShapeError(f"matmul: inner dimensions differ: {a} @ {b}")
    batch = broadcast_shapes("matmul", ash[:-2], bsh[:-2])
    out = batch + (ash[-2],) * (a.rank > 1) + (bsh[-1],) * (b.rank > 1)
    return TensorType(result_dtype(a.dtype, b.dtype), out)


def _swap(x):
    r = x.type.rank
    return x.b.emit("transpose", x, axes=tuple(range(r - 2)) + (r - 1, r - 2))


def _matmul_vjp(g, out, a, b):
    em = g.b.emit
    a2 = a if a.type.rank > 1 else em("reshape", a, shape=(1,) + a.shape)
    b2 = b if b.type.rank > 1 else em("reshape", b, shape=b.shape + (1,))
    gshape = g.shape
    if a.type.rank == 1:
        gshape = gshape[:-1] + (1,) + gshape[-1:] if b.type.rank > 1 else gshape + (1,)
    if b.type.rank == 1:
        gshape = gshape + (1,)
    g2 = em("reshape", g, shape=gshape) if gshape != g.shape else g
    da = em("matmul", g2, _swap(b2))  # dA = G Bᵀ
    db = em("matmul", _swap(a2), g2)  # dB = Aᵀ G
    da = em("sum_to", da, shape=a2.shape) if da.shape != a2.shape else da
    db = em("sum_to", db, shape=b2.shape) if db.shape != b2.shape else db
    if a.type.rank == 1:
        da = em("reshape", da, shape=a.shape)
    if b.type.rank == 1:
        db = em("reshape", db, shape=b.shape)
    return da, db


register(OpDef("matmul", _matmul_shape, promoting(lambda xp, a, b: xp.matmul(a, b)),
               _matmul_vjp, arity=2))


def _tensordot_shape(attrs, a, b):
    n = attrs["axes"]
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= min(a.rank, b.rank):
        raise ShapeError(f"tensordot: axes must be an integer in 0 .. {min(a.rank, b.rank)} "
                         f"(the rank of the smaller operand), got {n!r}: {a}, {b}")
    if a.shape[a.rank - n:] != b.shape[:n]:
        raise ShapeError(f"tensordot: the last {n} dimension(s) of the first operand differ "
                         f"from the first {n} of the second: {a}, {b}")
    return TensorType(result_dtype(a.dtype, b.dtype), a.shape[:a.rank - n] + b.shape[n:])


def _rotate(x, k):
    """x with its first k axes moved after the others (a transpose, or x when k is 0 or all)."""
    r = x.type.rank
    if r == 0 or k % r == 0:
        return x
    return x.b.emit("transpose", x, axes=tuple(range(k, r)) + tuple(range(k)))


def _tensordot_vjp(g, out, a, b, axes):
    # out[i, j] = Σ_c a[i, c] b[c, j] (i, c, j groups of axes): da = g · b over j, db = a · g
    # over i, each one tensordot with the other operand's axes rotated into place
    fa, fb = a.type.rank - axes, b.type.rank - axes
    em = g.b.emit
    return (em("tensordot", g, _rotate(b, axes), axes=fb),
            em("tensordot", _rotate(a, fa), g, axes=fa))


register(OpDef("tensordot", _tensordot_shape,
               promoting(lambda xp, a, b, axes: xp.tensordot(a, b, axes=axes)),
               _tensordot_vjp, attrs={"axes": 2}, arity=2,
               doc="NumPy's tensordot with an integer `axes`: the last `axes` dimensions of "
                   "the first operand contracted with the first `axes` of the second (one "
                   "matrix product over the flattened axes)"))


def _square(op, t):
    if t.rank < 2 or t.shape[-1] != t.shape[-2]:
        raise ShapeError(f"{op}: needs square matrices, got {t}")


def _solve_shape(attrs, a, b):
    _square("solve", a)
    if b.rank == 0 or b.shape[0 if b.rank == 1 else -2] != a.shape[-1]:
        raise ShapeError(f"solve: {a} and right-hand side {b} do not fit")
    dt = float_result_dtype(a.dtype, b.dtype)
    if b.rank == 1:  # one vector, solved against every matrix of the batch
        shape = a.shape[:-1]
    else:
        shape = broadcast_shapes("solve", a.shape[:-2], b.shape[:-2]) + b.shape[-2:]
    return TensorType(dt, shape)


def _solve_vjp(g, out, a, b):
    # x = A⁻¹b: db = A⁻ᵀ g, dA = -db xᵀ (a vector b is one column; the driver sums batches)
    em = g.b.emit
    col = lambda v: em("reshape", v, shape=v.shape + (1,))
    g2, x2 = (col(g), col(out)) if b.type.rank == 1 else (g, out)
    db = em("solve", _swap(a), g2)
    da = -(db @ _swap(x2))
    return da, em("reshape", db, shape=g.shape) if b.type.rank == 1 else db


register(OpDef("solve", _solve_shape, lambda xp, a, b: xp.linalg.solve(*to_float(xp, a, b)),
               _solve_vjp, arity=2, doc="x with A x = b"))


def _inv_shape(attrs, a):
    _square("inv", a)
    return TensorType(float_result_dtype(a.dtype), a.shape)


register(OpDef("inv", _inv_shape, lambda xp, a: xp.linalg.inv(*to_float(xp, a)),
               lambda g, out, a: (-(_swap(out) @ g @ _swap(out)),),  # d A⁻¹ = -A⁻ᵀ G A⁻ᵀ
               arity=1))


def _eigvalsh_shape(attrs, a):
    _square("eigvalsh", a)
    return TensorType(float_result_dtype(a.dtype), a.shape[:-1])


# λ of a symmetric A, ascending; dλᵢ = uᵢᵀ dA uᵢ needs the eigenvectors, so no VJP
register(OpDef("eigvalsh", _eigvalsh_shape,
               lambda xp, a: xp.linalg.eigvalsh(*to_float(xp, a)), None, arity=1,
               doc="the eigenvalues of symmetric matrices [..., n, n] in ascending order, "
                   "[..., n] (NumPy's eigvalsh: only the lower triangle is read); no gradient"))
