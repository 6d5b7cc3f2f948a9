"""The export table: one row per registry op (`runtime.ops`), the ONNX nodes that compute it.

A row is a function `(em, node, inputs) -> output name`: `em` the `Emitter`, `node` the IR node
(its attributes completed with the registry's defaults), `inputs` the ONNX names of its inputs.
Values equal dslrun's kernels to float32 rounding: where ONNX's own op differs at the edges
(softplus far from zero, a fully masked softmax row) the row composes stable primitives as the
kernel does. Every other op is listed in `UNSUPPORTED` with the reason, but for
the ops with regions, which the exporter writes itself (`STRUCTURAL`: a fused elementwise node
as its body, a loop as an ONNX Loop, see `dsl.onnx.control`). The ops that are one ONNX op
each way come from `dsl.onnx.names`, shared with the import table.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import numpy_helper

from dsl.onnx.emit import INT64_MAX, INT64_MIN, ONNX_TYPES, Emitter
from dsl.onnx.names import ONE_TO_ONE
from runtime.dtypes import is_float
from runtime.ir import Node
from runtime.ops.nn import LSTM_GATES
from runtime.ops.shapes import norm_axes

Row = Callable[[Emitter, Node, list[str]], str]


def _dt(node: Node) -> str:
    return node.type.dtype


def _cast_all(em: Emitter, node: Node, names: list[str], dtype: str | None = None) -> list[str]:
    """Every input cast to `dtype` (default the node's result dtype): ONNX's arithmetic takes
    one element type, where our kernels promote (int + float -> float)."""
    dtype = dtype or _dt(node)
    return [em.cast(n, em.dtypes[n], dtype) for n in names]


def _common(em: Emitter, names: list[str]) -> list[str]:
    """Comparison operands cast to their common dtype (a float one if either is float)."""
    a, b = (em.dtypes[n] for n in names)
    if a == b:
        return names
    floats = [t for t in (a, b) if is_float(t)]
    target = max(floats) if floats else "i64"
    return [em.cast(n, t, target) for n, t in zip(names, (a, b))]


def arith(op_type: str) -> Row:
    """An elementwise ONNX op over inputs cast to the result dtype."""
    return lambda em, node, ins: em.node(op_type, _cast_all(em, node, ins))


def compare(op_type: str, negate: bool = False) -> Row:
    def row(em: Emitter, node: Node, ins: list[str]) -> str:
        out = em.node(op_type, _common(em, ins))
        return em.node("Not", [out]) if negate else out
    return row


def logic(op_type: str) -> Row:
    return lambda em, node, ins: em.node(op_type, _cast_all(em, node, ins, "bool"))


def _one(em: Emitter, node: Node, value: float) -> str:
    return em.const(value, _dt(node))


def _softplus(em: Emitter, node: Node, x: str) -> str:
    # log(1 + e^x) = max(x, 0) + log(1 + e^-|x|), as the kernel
    tail = em.node("Log", [em.node("Add", [_one(em, node, 1.0), em.node(
        "Exp", [em.node("Neg", [em.node("Abs", [x])])])])])
    return em.node("Add", [em.node("Relu", [x]), tail])


def _gelu(em: Emitter, node: Node, ins: list[str]) -> str:
    (x,) = _cast_all(em, node, ins)
    c = lambda v: _one(em, node, v)
    if node.attrs["approximate"] == "tanh":  # ½x(1 + tanh(√(2/π)(x + 0.044715x³)))
        x3 = em.node("Mul", [x, em.node("Mul", [x, x])])
        inner = em.node("Mul", [c(math.sqrt(2.0 / math.pi)),
                                em.node("Add", [x, em.node("Mul", [c(0.044715), x3])])])
        t = em.node("Tanh", [inner])
    else:  # ½x(1 + erf(x/√2))
        t = em.node("Erf", [em.node("Mul", [x, c(math.sqrt(0.5))])])
    return em.node("Mul", [em.node("Mul", [c(0.5), x]), em.node("Add", [c(1.0), t])])


def _axes(node: Node, rank: int) -> list[int] | None:
    axis = node.attrs.get("axis")
    if axis is None:
        return None
    return list(norm_axes(node.op, axis, rank))


def reduce(op_type: str) -> Row:
    """A reduction over `axis` (None: all) with `keepdims`; the axes are an input (opset 18)."""
    def row(em: Emitter, node: Node, ins: list[str]) -> str:
        (x,) = _cast_all(em, node, ins)
        axes = _axes(node, len(em.shapes[ins[0]]))
        extra = [em.ints(axes)] if axes is not None else []
        return em.node(op_type, [x, *extra], keepdims=int(node.attrs["keepdims"]))
    return row


def _argmax(em: Emitter, node: Node, ins: list[str]) -> str:
    out = em.node("ArgMax", ins, axis=int(node.attrs["axis"]), keepdims=0)
    return em.cast(out, "i64", _dt(node))


def _variance(em: Emitter, node: Node, ins: list[str]) -> str:
    (x,) = _cast_all(em, node, ins)
    axes = _axes(node, len(em.shapes[ins[0]])) or list(range(len(em.shapes[ins[0]])))
    mu = em.node("ReduceMean", [x, em.ints(axes)], keepdims=1)
    d = em.node("Sub", [x, mu])
    var = em.node("ReduceMean", [em.node("Mul", [d, d]), em.ints(axes)],
                  keepdims=int(node.attrs["keepdims"]))
    corr = node.attrs["correction"]
    if not corr:
        return var
    m = em.node("Cast", [em.node("ReduceProd", [em.node("Gather", [
        em.node("Shape", [x]), em.ints(axes)], axis=0)], keepdims=0)], to=ONNX_TYPES[_dt(node)])
    return em.node("Mul", [var, em.node("Div", [m, em.node("Sub", [m, _one(em, node, corr)])])])


def _norm(em: Emitter, node: Node, ins: list[str]) -> str:
    op_type = {1: "ReduceL1", 2: "ReduceL2"}[node.attrs["ord"]]
    return reduce(op_type)(em, node, ins)


def _softmax(op_type: str) -> Row:
    def row(em: Emitter, node: Node, ins: list[str]) -> str:
        (x,) = _cast_all(em, node, ins)
        t = node.attrs["temperature"]
        if t != 1.0:
            x = em.node("Div", [x, _one(em, node, t)])
        return em.node(op_type, [x], axis=int(node.attrs["axis"]))
    return row


def _masked_softmax(em: Emitter, node: Node, ins: list[str]) -> str:
    # p = exp(z - m) / Σ exp(z - m) over kept positions; a row with nothing kept is zeros
    x = em.cast(ins[0], em.dtypes[ins[0]], _dt(node))
    mask = ins[1]
    axes = em.ints([int(node.attrs["axis"])])
    if em.dtypes[mask] == "bool":
        z = em.node("Where", [mask, x, _one(em, node, -np.inf)])
    else:
        z = em.node("Add", [x, em.cast(mask, em.dtypes[mask], _dt(node))])
    m = em.node("ReduceMax", [z, axes], keepdims=1)
    m = em.node("Where", [em.node("IsInf", [m]), _one(em, node, 0.0), m])
    e = em.node("Exp", [em.node("Sub", [z, m])])
    s = em.node("ReduceSum", [e, axes], keepdims=1)
    s = em.node("Where", [em.node("Greater", [s, _one(em, node, 0.0)]), s, _one(em, node, 1.0)])
    return em.node("Div", [e, s])


def _cross_entropy(em: Emitter, node: Node, ins: list[str]) -> str:
    # -log softmax(z/T)[y], with label smoothing: -(on·lp[y] + off·(Σ lp - lp[y]))
    z = em.cast(ins[0], em.dtypes[ins[0]], _dt(node))
    t = node.attrs["temperature"]
    if t != 1.0:
        z = em.node("Div", [z, _one(em, node, t)])
    lp = em.node("LogSoftmax", [z], axis=-1)
    y = em.node("Unsqueeze", [em.cast(ins[1], em.dtypes[ins[1]], "i64"), em.ints([-1])])
    picked = em.node("Squeeze", [em.node("GatherElements", [lp, y], axis=-1), em.ints([-1])])
    eps = node.attrs["smoothing"]
    if not eps:
        return em.node("Neg", [picked])
    m = em.shapes[ins[0]][-1]  # the class count
    on, off = ((1.0 - eps, eps / (m - 1)) if node.attrs["smoothing_mode"] == "m-1"
               else (1.0 - eps + eps / m, eps / m))
    total = em.node("ReduceSum", [lp, em.ints([-1])], keepdims=0)
    rest = em.node("Sub", [total, picked])
    return em.node("Neg", [em.node("Add", [em.node("Mul", [_one(em, node, on), picked]),
                                           em.node("Mul", [_one(em, node, off), rest])])])


def _sigmoid_bce(em: Emitter, node: Node, ins: list[str]) -> str:
    z, y = _cast_all(em, node, ins)  # softplus(z) - y z
    return em.node("Sub", [_softplus(em, node, z), em.node("Mul", [y, z])])


def _lstm_gates(em: Emitter, node: Node, ins: list[str]) -> str:
    # the four gate blocks of the last axis: sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
    (z,) = _cast_all(em, node, ins)
    h = int(node.type.shape[-1]) // LSTM_GATES
    acts = ("Sigmoid", "Sigmoid", "Tanh", "Sigmoid")
    parts = [em.node(act, [em.node("Slice", [z, em.ints([k * h]), em.ints([(k + 1) * h]),
                                              em.ints([-1])])]) for k, act in enumerate(acts)]
    return em.node("Concat", parts, axis=-1)


def _getitem(em: Emitter, node: Node, ins: list[str]) -> str:
    # one Slice for slices and integers (k -> k:k+1), Squeeze the integers, Unsqueeze new axes
    index = node.attrs["index"]
    starts, ends, axes, steps, squeeze, new = [], [], [], [], [], []
    k = pos = 0
    for it in index:
        if it[0] == "n":
            new.append(pos)
            pos += 1
            continue
        if it[0] == "i":
            i = it[1]
            starts.append(i)
            ends.append(i + 1 if i != -1 else INT64_MAX)
            steps.append(1)
            squeeze.append(k)
        else:
            start, stop, step = it[1], it[2], it[3] if it[3] is not None else 1
            starts.append(start if start is not None else (0 if step > 0 else INT64_MAX))
            ends.append(stop if stop is not None else (INT64_MAX if step > 0 else INT64_MIN))
            steps.append(step)
            pos += 1
        axes.append(k)
        k += 1
    x = ins[0]
    if axes:
        x = em.node("Slice", [x, em.ints(starts), em.ints(ends), em.ints(axes), em.ints(steps)])
    if squeeze:
        x = em.node("Squeeze", [x, em.ints(squeeze)])
    if new:
        x = em.node("Unsqueeze", [x, em.ints(new)])
    return x if x != ins[0] else em.node("Identity", [x])


def _reshape(em: Emitter, node: Node, ins: list[str]) -> str:
    return em.node("Reshape", [ins[0], em.shape(node.attrs["shape"])])


def _transpose(em: Emitter, node: Node, ins: list[str]) -> str:
    axes = node.attrs["axes"]
    rank = len(em.shapes[ins[0]])
    perm = list(range(rank))[::-1] if axes is None else [a % rank for a in axes]
    return em.node("Transpose", ins, perm=perm)


def _tensordot(em: Emitter, node: Node, ins: list[str]) -> str:
    # Einsum: the last `axes` letters of the first operand meet the first of the second
    k = int(node.attrs["axes"])
    ra, rb = len(em.shapes[ins[0]]), len(em.shapes[ins[1]])
    letters = iter(string.ascii_lowercase)
    free_a = "".join(next(letters) for _ in range(ra - k))
    shared = "".join(next(letters) for _ in range(k))
    free_b = "".join(next(letters) for _ in range(rb - k))
    eq = f"{free_a}{shared},{shared}{free_b}->{free_a}{free_b}"
    return em.node("Einsum", _cast_all(em, node, ins), equation=eq)


def _full(em: Emitter, node: Node, ins: list[str]) -> str:
    shape, value = node.attrs["shape"], node.attrs["value"]
    if all(isinstance(d, int) for d in shape):
        return em.const(np.full(tuple(shape), value), _dt(node))
    fill = numpy_helper.from_array(np.asarray([value], dtype=node.type.np_dtype()))
    return em.node("ConstantOfShape", [em.shape(shape)], value=fill)


def _full_like(em: Emitter, node: Node, ins: list[str]) -> str:
    fill = numpy_helper.from_array(np.asarray([node.attrs["value"]], dtype=node.type.np_dtype()))
    return em.node("ConstantOfShape", [em.node("Shape", ins)], value=fill)


def _one_hot(em: Emitter, node: Node, ins: list[str]) -> str:
    idx = em.node("Unsqueeze", [em.cast(ins[0], em.dtypes[ins[0]], "i64"), em.ints([-1])])
    hit = em.node("Equal", [idx, em.const(np.arange(node.attrs["depth"]), "i64")])
    return em.cast(hit, "bool", _dt(node))


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def _pads(v: Any, dims: int) -> list[int]:
    """ONNX pads (all begins, then all ends) from our padding: an int, one per spatial axis,
    or (begin, end) per axis ((top, bottom, left, right) in 2-D)."""
    t = [int(v)] * (2 * dims) if isinstance(v, int) else [int(a) for a in v]
    if len(t) == dims:
        t = [a for a in t for _ in (0, 1)]
    return t[0::2] + t[1::2]


def _conv(em: Emitter, node: Node, ins: list[str]) -> str:
    a = node.attrs
    dims = 1 if node.op == "conv1d" else 2
    one = (lambda v: [int(v)] if isinstance(v, int) else [int(tuple(v)[0])]) if dims == 1 \
        else _pair
    return em.node("Conv", _cast_all(em, node, ins), strides=one(a["stride"]),
                   dilations=one(a["dilation"]), pads=_pads(a["padding"], dims),
                   group=int(a["groups"]))


def _pool(op_type: str) -> Row:
    def row(em: Emitter, node: Node, ins: list[str]) -> str:
        a = node.attrs
        kernel = _pair(a["kernel"])
        stride = _pair(a["stride"]) if a["stride"] is not None else kernel
        extra = ({"count_include_pad": int(a["count_include_pad"])}
                 if "count_include_pad" in a else {})
        return em.node(op_type, ins, kernel_shape=kernel, strides=stride,
                       pads=_pads(a["padding"], 2), **extra)
    return row


def _layer_norm(em: Emitter, node: Node, ins: list[str]) -> str:
    # LayerNormalization normalizes the trailing axes from `axis` on; ours names any axes
    shape = em.shapes[ins[0]]
    axes = sorted(a % len(shape) for a in node.attrs["axes"])
    x, gamma, beta = _cast_all(em, node, ins)
    if axes == list(range(axes[0], len(shape))):
        return em.node("LayerNormalization", [x, gamma, beta], axis=axes[0],
                       epsilon=float(node.attrs["eps"]))
    bshape = em.ints([d if k in axes else 1 for k, d in enumerate(shape)])
    gamma, beta = (em.node("Reshape", [v, bshape]) for v in (gamma, beta))
    return _affine(em, node, _standardize(em, node, x, axes), gamma, beta)


def _standardize(em: Emitter, node: Node, x: str, axes: list[int]) -> str:
    """(x - mean) / sqrt(var + eps) over `axes` (biased variance, as the kernels)."""
    ax = em.ints(axes)
    xc = em.node("Sub", [x, em.node("ReduceMean", [x, ax], keepdims=1)])
    var = em.node("ReduceMean", [em.node("Mul", [xc, xc]), ax], keepdims=1)
    eps = _one(em, node, float(node.attrs["eps"]))
    return em.node("Div", [xc, em.node("Sqrt", [em.node("Add", [var, eps])])])


def _affine(em: Emitter, node: Node, y: str, gamma: str, beta: str) -> str:
    return em.node("Add", [em.node("Mul", [y, gamma]), beta])


def _group_norm(em: Emitter, node: Node, ins: list[str]) -> str:
    # statistics over each example's channel groups: the [N, G, -1] view and back
    x, gamma, beta = _cast_all(em, node, ins)
    grouped = em.node("Reshape", [x, em.ints([0, int(node.attrs["groups"]), -1])])
    y = em.node("Reshape", [_standardize(em, node, grouped, [2]), em.node("Shape", [x])])
    bshape = em.ints([1, -1] + [1] * (len(node.type.shape) - 2))
    gamma, beta = (em.node("Reshape", [v, bshape]) for v in (gamma, beta))
    return _affine(em, node, y, gamma, beta)


def _cast(em: Emitter, node: Node, ins: list[str]) -> str:
    src = em.dtypes[ins[0]]
    return em.cast(ins[0], src, _dt(node)) if src != _dt(node) else em.node("Identity", ins)


def _unary(op_type: str) -> Row:
    return lambda em, node, ins: em.node(op_type, _cast_all(em, node, ins))


def _composed(fn: Callable[[Emitter, Node, str], str]) -> Row:
    """A unary op written with other ONNX ops: `fn(em, node, x)`."""
    return lambda em, node, ins: fn(em, node, _cast_all(em, node, ins)[0])


# the row maker for each kind of one-to-one pair (`names.ONE_TO_ONE`), given the ONNX op type
BY_KIND: dict[str, Callable[[str], Row]] = {
    "arithmetic": arith, "unary": _unary, "comparison": compare, "logical": logic,
    "reduction": reduce, "softmax": _softmax, "pool": _pool,
}

EXPORT_TABLE: dict[str, Row] = {
    **{op: BY_KIND[kind](onnx_op) for kind, group in ONE_TO_ONE.items()
       for op, onnx_op in group.items()},
    "square": _composed(lambda em, node, x: em.node("Mul", [x, x])),
    "log1p": _composed(lambda em, node, x: em.node("Log", [em.node(
        "Add", [x, _one(em, node, 1.0)])])),
    "expm1": _composed(lambda em, node, x: em.node("Sub", [em.node("Exp", [x]),
                                                            _one(em, node, 1.0)])),
    "softplus": _composed(_softplus),
    "swish": _composed(lambda em, node, x: em.node("Mul", [x, em.node("Sigmoid", [x])])),
    "leaky_relu": lambda em, node, ins: em.node("LeakyRelu", _cast_all(em, node, ins),
                                                alpha=float(node.attrs["alpha"])),
    "step": lambda em, node, ins: em.cast(em.node("GreaterOrEqual", [
        ins[0], em.const(0, em.dtypes[ins[0]])]), "bool", _dt(node)),
    "gelu": _gelu,
    "cast": _cast,
    "stop_gradient": lambda em, node, ins: em.node("Identity", ins),
    "not_equal": compare("Equal", negate=True),
    "where": lambda em, node, ins: em.node("Where", [
        em.cast(ins[0], em.dtypes[ins[0]], "bool"), *_cast_all(em, node, ins[1:])]),
    "argmax": _argmax,
    "variance": _variance,
    "norm": _norm,
    "tensordot": _tensordot,
    "masked_softmax": _masked_softmax,
    "softmax_cross_entropy": _cross_entropy,
    "sigmoid_bce": _sigmoid_bce,
    "lstm_gates": _lstm_gates,
    "reshape": _reshape,
    "transpose": _transpose,
    "broadcast_to": lambda em, node, ins: em.node("Expand", [ins[0], em.shape(
        node.attrs["shape"])]),
    "concat": lambda em, node, ins: em.node("Concat", _cast_all(em, node, ins),
                                            axis=int(node.attrs["axis"])),
    "getitem": _getitem,
    "take": lambda em, node, ins: em.node("Gather", ins, axis=int(node.attrs["axis"])),
    "one_hot": _one_hot,
    "full": _full,
    "full_like": _full_like,
    "conv2d": _conv,
    "conv1d": _conv,
    "layer_norm": _layer_norm,
    "group_norm": _group_norm,
}

STRUCTURAL = ("fused_elementwise", "loop", "item")

# ops with no row, and why (an op in neither table is a gradient-only op)
UNSUPPORTED: dict[str, str] = {
    "random_normal": "a random draw (no ONNX runtime reproduces dslrun's generator)",
    "random_uniform": "a random draw (no ONNX runtime reproduces dslrun's generator)",
    "random_bernoulli": "a random draw (no ONNX runtime reproduces dslrun's generator)",
    "random_randint": "a random draw (no ONNX runtime reproduces dslrun's generator)",
    "random_categorical": "a random draw (no ONNX runtime reproduces dslrun's generator)",
    "solve": "a linear solve (the ONNX standard has no solver op)",
    "inv": "a matrix inverse (the ONNX standard has no inverse op)",
    "eigvalsh": "an eigendecomposition (the ONNX standard has no such op)",
    "size": "a run-time element count (not exported)",
    "batch_norm_train": "batch statistics (training mode only)",
    "index_put": "an indexed write (the adjoint of slicing; not exported)",
    **{op: "a gradient op (evaluation graphs hold none)" for op in (
        "conv2d_grad_input", "conv2d_grad_weight", "max_pool2d_grad", "max_pool2d_pick",
        "avg_pool2d_grad", "take_grad", "sum_to", "softmax_cross_entropy_grad")},
}
