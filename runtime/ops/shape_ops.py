"""Shape and indexing primitives: reshape, transpose, broadcast, sum_to, concat, slicing,
gather (`take`, indices checked against the axis) and its adjoint (`take_grad`, a scatter-add
without `ufunc.at`), one_hot, and constant fills.

Static indices are attributes: `getitem` takes `index`, a tuple whose items are
`("i", k)` (an integer), `("s", start, stop, step)` (a slice), or `("n",)` (a new axis).
"""

from __future__ import annotations

import math

from runtime.dtypes import np_dtype, result_dtype
from runtime.ir import Dim, TensorType, at_loc
from runtime.ops.elementwise import promoting
from runtime.ops.registry import OpDef, ShapeError, register
from runtime.ops.shapes import (  # noqa: F401 - IndexRangeError: imported from here too
    IndexRangeError,
    broadcast_shapes,
    check_range,
    norm_axes,
    reshape_shape,
)

# ---- reshape / transpose
register(OpDef(
    "reshape", lambda attrs, t: TensorType(t.dtype, reshape_shape("reshape", t.shape,
                                                                  tuple(attrs["shape"]))),
    lambda xp, x, shape: xp.reshape(x, shape),
    lambda g, out, x, shape: (g.b.emit("reshape", g, shape=x.shape),),
    attrs={"shape": ()}, arity=1, doc="shape may hold symbols and one -1"))


def _transpose_shape(attrs, t):
    axes = attrs["axes"]
    if axes is None:
        return TensorType(t.dtype, t.shape[::-1])
    if len(axes) != t.rank or not all(isinstance(a, int) and not isinstance(a, bool)
                                      and -t.rank <= a < t.rank for a in axes) \
            or sorted(a % t.rank for a in axes) != list(range(t.rank)):
        raise ShapeError(f"transpose: axes {tuple(axes)} are not a permutation of rank {t.rank}")
    return TensorType(t.dtype, tuple(t.shape[a] for a in axes))


def _inverse_perm(axes, rank):
    if axes is None:
        return None
    inv = [0] * rank
    for i, a in enumerate(axes):
        inv[a % rank] = i
    return tuple(inv)


register(OpDef(
    "transpose", _transpose_shape, lambda xp, x, axes: xp.transpose(x, axes),
    lambda g, out, x, axes: (g.b.emit("transpose", g, axes=_inverse_perm(axes, x.type.rank)),),
    attrs={"axes": None}, arity=1))


# ---- broadcasting and its adjoint
def _bcast_shape(attrs, t):
    target = tuple(attrs["shape"])
    if broadcast_shapes("broadcast_to", t.shape, target) != target:
        raise ShapeError(f"broadcast_to: cannot broadcast {t} to [{','.join(map(str, target))}]")
    return TensorType(t.dtype, target)


def _sum_to_shape(attrs, t):
    target = tuple(attrs["shape"])
    if broadcast_shapes("sum_to", t.shape, target) != tuple(t.shape):
        raise ShapeError(f"sum_to: cannot reduce {t} to [{','.join(map(str, target))}]")
    return TensorType("i64" if t.dtype == "bool" else t.dtype, target)


def sum_to_axes(x_shape: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of `x_shape` along which `shape` was broadcast to it."""
    lead = len(x_shape) - len(shape)
    return tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and x_shape[lead + i] != 1)


def sum_to_fwd(xp, x, shape):
    """Sum `x` over the axes along which `shape` was broadcast to x.shape."""
    shape = tuple(shape)
    lead = x.ndim - len(shape)
    axes = sum_to_axes(x.shape, shape)
    # integers keep their width and bools count in i64, as in `sum`
    dt = None if x.dtype.kind == "f" else "int64" if x.dtype.kind == "b" else x.dtype
    y = xp.sum(x, axis=axes, keepdims=True, dtype=dt) if axes else x.astype(dt or x.dtype,
                                                                             copy=False)
    return y.reshape(shape) if lead or y.shape != shape else y


register(OpDef("broadcast_to", _bcast_shape,
               lambda xp, x, shape: xp.broadcast_to(x, tuple(shape)),
               lambda g, out, x, shape: (g.b.emit("sum_to", g, shape=x.shape),),
               attrs={"shape": ()}, arity=1))
register(OpDef("sum_to", _sum_to_shape, sum_to_fwd,
               lambda g, out, x, shape: (g.b.emit("broadcast_to", g, shape=x.shape),),
               attrs={"shape": ()}, arity=1, doc="adjoint of broadcasting"))


# ---- concat
def _concat_shape(attrs, *ts):
    if not ts:
        raise ShapeError("concat: needs at least one input")
    r = ts[0].rank
    axis = norm_axes("concat", attrs["axis"], r)[0]
    total: Dim = 0
    for t in ts:
        if t.rank != r or any(a != b for i, (a, b) in enumerate(zip(t.shape, ts[0].shape))
                              if i != axis):
            raise ShapeError("concat: shapes " + ", ".join(str(t) for t in ts)
                             + f" differ outside axis {axis}")
        d = t.shape[axis]
        if isinstance(total, int) and isinstance(d, int):
            total += d
        else:
            raise ShapeError(f"concat: axis {axis} has a symbolic extent")
    dt = result_dtype(*(t.dtype for t in ts))
    return TensorType(dt, ts[0].shape[:axis] + (total,) + ts[0].shape[axis + 1:])


def _concat_vjp(g, out, *xs, axis):
    r = g.type.rank
    ax = axis % r
    res, start = [], 0
    for x in xs:
        d = x.shape[ax]
        idx = tuple(("s", None, None, None) for _ in range(ax)) + (("s", start, start + d, None),)
        res.append(g.b.emit("getitem", g, index=idx))
        start += d
    return tuple(res)


register(OpDef("concat", _concat_shape,
               promoting(lambda xp, *xs, axis: xp.concatenate(xs, axis=axis)),
               _concat_vjp, attrs={"axis": 0}))


# ---- static indexing
def _slice_len(d: Dim, start, stop, step, op="getitem") -> Dim:
    if step == 0:
        raise ShapeError(f"{op}: a slice step cannot be zero")
    if not isinstance(d, int):
        if start is None and stop is None and step in (None, 1):
            return d
        raise ShapeError(f"{op}: cannot slice a symbolic dimension {d} with bounds")
    return len(range(*slice(start, stop, step).indices(d)))


def index_shape(shape: tuple[Dim, ...], index) -> tuple[Dim, ...]:
    out, k = [], 0
    n_real = sum(1 for it in index if it[0] != "n")
    if n_real > len(shape):
        raise ShapeError(f"getitem: too many indices ({n_real}) for rank {len(shape)}")
    for it in index:
        if it[0] == "n":
            out.append(1)
        elif it[0] == "i":
            d = shape[k]
            if isinstance(d, int) and not -d <= it[1] < d:
                raise ShapeError(f"getitem: index {it[1]} out of range for dimension {d}")
            k += 1
        else:
            out.append(_slice_len(shape[k], it[1], it[2], it[3]))
            k += 1
    return tuple(out) + tuple(shape[k:])


def _np_index(index):
    return tuple(None if it[0] == "n" else it[1] if it[0] == "i" else slice(*it[1:])
                 for it in index)


def _getitem_fwd(xp, x, index):
    return x[_np_index(index)]


def _getitem_compile(ctx, node, attrs):
    """The kernel: a constant index into a dimension known only when the step runs
    (`x[99, :]` of an `f32[B, 4]`) that is out of range is an IndexRangeError at the
    node's source position."""
    index = _np_index(attrs["index"])

    def kernel(x):
        try:
            return x[index]
        except IndexError as e:
            raise IndexRangeError(f"getitem: {e}{at_loc(node.loc)}") from None
    return kernel


def _index_put_fwd(xp, g, index, shape):
    z = xp.zeros(tuple(shape), dtype=g.dtype)
    z[_np_index(tuple(it for it in index if it[0] != "n"))] = g.reshape(
        index_shape(tuple(shape), tuple(it for it in index if it[0] != "n")))
    return z


register(OpDef("getitem", lambda attrs, t: TensorType(t.dtype, index_shape(t.shape,
                                                                           attrs["index"])),
               _getitem_fwd,
               lambda g, out, x, index: (g.b.emit("index_put", g, index=index, shape=x.shape),),
               attrs={"index": ()}, arity=1, compile=_getitem_compile))


def _index_put_shape(attrs, t):
    shape = tuple(attrs["shape"])
    fits = index_shape(shape, attrs["index"])
    if tuple(fits) != tuple(t.shape):
        raise ShapeError(f"index_put: value {t} does not fit the index into "
                         f"[{','.join(map(str, shape))}] (it selects [{','.join(map(str, fits))}])")
    return TensorType(t.dtype, shape)


register(OpDef("index_put", _index_put_shape, _index_put_fwd,
               lambda g, out, x, index, shape: (g.b.emit("getitem", g, index=index),),
               attrs={"index": (), "shape": ()}, arity=1,
               doc="zeros of `shape` with x written at `index` (adjoint of getitem)"))


# ---- gather by tensor indices (IndexRangeError and check_range live in shapes.py)


def _take_shape(attrs, x, idx):
    if idx.is_float:
        raise ShapeError(f"take: indices must be integers, got {idx}")
    axis = norm_axes("take", attrs["axis"], x.rank)[0]
    return TensorType(x.dtype, x.shape[:axis] + idx.shape + x.shape[axis + 1:])


def _take_fwd(xp, x, idx, axis):
    # indices in [0, n): NumPy would wrap negatives and CuPy would wrap everything
    check_range(xp, idx, x.shape[axis], "take", axis % x.ndim)
    return xp.take(x, idx, axis=axis)


def _take_compile(ctx, node, attrs):
    """The kernel, with the node's source position added to an out-of-range error."""
    def kernel(x, idx):
        try:
            return _take_fwd(ctx.xp, x, idx, **attrs)
        except IndexRangeError as e:
            if not at_loc(node.loc):
                raise
            raise IndexRangeError(f"{e}{at_loc(node.loc)}") from None
    return kernel


# take_grad: a one-hot matmul for at most this many rows (and a one-hot matrix of at most
# ONE_HOT_MAX_ELEMENTS), else a sort and segment sums (float32 ids repeated on average) or a
# bincount (see `_take_grad_fwd`)
ONE_HOT_MAX_SIZE = 64
ONE_HOT_MAX_ELEMENTS = 1 << 22


def _take_grad_fwd(xp, g, idx, axis, size):
    """Rows of `g` summed into the rows of a [.., size, ..] result by index, without
    `add.at`. With g seen as [P, N, Q] (N = idx.size):

    - size <= ONE_HOT_MAX_SIZE: one_hot(idx)ᵀ @ g, a [size, N] @ [P, N, Q] matmul;
    - float32 and size < N: a sort of the ids and `add.reduceat` over the runs of
      equal ids, in g's dtype (bincount sums in float64 and needs a float64 copy of g);
    - else one `bincount` over the flat positions (p, idx[n], q) of the result.

    bench/embedding_grad.py, NumPy 2.4, 2 cores, 64x64 ids, dim 128 (add.at: 4.5-5.7 ms):
    bincount 0.9-1.0 ms for vocab 100 and 1.4-2.2 ms for vocab 10000; for float32 and vocab
    100, sort/reduceat 0.73-0.78 ms, and in a training step 1.8 against 4.0 ms for bincount;
    vocab <= 64: the matmul 2-6x faster than bincount."""
    pre, post = g.shape[:axis], g.shape[axis + idx.ndim:]
    p, n, q = math.prod(pre), idx.size, math.prod(post)
    flat_idx = idx.reshape(-1)
    g3 = g.reshape(p, n, q)
    if size <= ONE_HOT_MAX_SIZE and size * n <= ONE_HOT_MAX_ELEMENTS:
        onehot = (xp.arange(size)[:, None] == flat_idx[None, :]).astype(g.dtype)
        out = xp.matmul(onehot, g3)
    elif g.dtype != xp.float64 and 0 < size < n:
        order = xp.argsort(flat_idx)
        ids = flat_idx[order]
        starts = xp.flatnonzero(xp.concatenate((xp.ones(1, dtype=bool), ids[1:] != ids[:-1])))
        out = xp.zeros((p, size, q), dtype=g.dtype)
        out[:, ids[starts], :] = xp.add.reduceat(g3[:, order, :], starts, axis=1)
    else:
        pos = (xp.arange(p)[:, None, None] * size + flat_idx[None, :, None]) * q \
            + xp.arange(q)[None, None, :]
        sums = xp.bincount(pos.reshape(-1), weights=g.reshape(-1), minlength=p * size * q)
        out = sums.astype(g.dtype, copy=False)
    return out.reshape(pre + (size,) + post)


register(OpDef("take", _take_shape, _take_fwd,
               lambda g, out, x, idx, axis: (
                   g.b.emit("take_grad", g, idx, axis=axis % x.type.rank,
                            size=x.shape[axis % x.type.rank]), None),
               attrs={"axis": 0}, arity=2, compile=_take_compile, index_operands=frozenset({1}),
               doc="gather along an axis (embeddings, x[t]); indices in [0, n)"))


def _take_grad_shape(attrs, g, idx):
    axis = attrs["axis"]
    return TensorType(g.dtype, g.shape[:axis] + (attrs["size"],) + g.shape[axis + idx.rank:])


register(OpDef("take_grad", _take_grad_shape, _take_grad_fwd,
               lambda gg, out, g, idx, axis, size: (gg.b.emit("take", gg, idx, axis=axis), None),
               attrs={"axis": 0, "size": 1}, arity=2, index_operands=frozenset({1}),
               doc="scatter-add (adjoint of take) by a one-hot matmul, sorted segment sums or "
                   "bincount"))


def _one_hot_fwd(xp, idx, depth, dtype):
    check_range(xp, idx, depth, "one_hot", idx.ndim)
    out = xp.zeros(idx.shape + (depth,), dtype=np_dtype(dtype))
    xp.put_along_axis(out, idx[..., None].astype("int64"), 1, axis=-1)
    return out


def _one_hot_shape(attrs, t):
    if t.is_float:
        raise ShapeError(f"one_hot: labels must be integers, got {t}")
    return TensorType(attrs["dtype"], t.shape + (attrs["depth"],))


register(OpDef("one_hot", _one_hot_shape, _one_hot_fwd, None,
               attrs={"depth": 2, "dtype": "f32"}, arity=1, nondiff=True,
               index_operands=frozenset({0})))


# ---- fills
register(OpDef("full", lambda attrs: TensorType(attrs["dtype"], tuple(attrs["shape"])),
               lambda xp, shape, value, dtype: xp.full(tuple(shape), value,
                                                       dtype=np_dtype(dtype)),
               None, attrs={"shape": (), "value": 0.0, "dtype": "f32"}, arity=0, nondiff=True,
               doc="a constant-filled tensor; shape may be symbolic"))
register(OpDef("full_like", lambda attrs, t: TensorType(t.dtype, t.shape),
               lambda xp, x, value: xp.full_like(x, value), lambda g, out, x, value: (None,),
               attrs={"value": 0.0}, arity=1, nondiff=True))
