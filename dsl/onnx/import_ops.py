"""The import table: one row per ONNX op type, the spec expression that computes it.

A row is `(cx, node, ins, attrs) -> expression text`: `cx` the `importer.Writer` (names,
literals, shapes), `ins` the node's inputs as `Value`s (None for an omitted optional input),
`attrs` its attributes as Python values. Inputs that must be known when the spec is compiled
(a Reshape's shape, reduction axes, Slice bounds) are read with `cx.static`, which fails with
the op's name when they are computed at run time. `STATIC_INPUTS` names those positions, so a
backend can fix them from the values it is given. The op types that are one dslrun op each
way come from `dsl.onnx.names`, shared with the export table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsl.onnx.names import ONE_TO_ONE
from runtime.dtypes import is_float
from runtime.ir import Dim


@dataclass
class Value:
    """An ONNX value as the spec sees it: the name it has there, its dtype and shape (dims are
    ints or symbols; None when unknown), and its value when known at import (initializers,
    Constant nodes)."""

    ref: str
    dtype: str
    shape: tuple[Dim, ...] | None
    static: np.ndarray | None = None


Row = Callable[[Any, Any, list[Value | None], dict[str, Any]], str]


def _binary(symbol: str) -> Row:
    return lambda cx, n, i, a: f"({i[0].ref} {symbol} {i[1].ref})"


def _call(fn: str, **fixed: Any) -> Row:
    """`fn(inputs..., fixed options)`."""
    def row(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
        opts = "".join(f", {k} = {cx.lit(v)}" for k, v in fixed.items())
        return f"{fn}({', '.join(v.ref for v in ins if v is not None)}{opts})"
    return row


def _fold(fn: str) -> Row:
    """A variadic ONNX op as nested binary calls: fn(fn(a, b), c)."""
    def row(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
        expr = ins[0].ref
        for v in ins[1:]:
            expr = f"{fn}({expr}, {v.ref})"
        return expr
    return row


def _div(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    x, y = ins
    if is_float(x.dtype):
        return f"({x.ref} / {y.ref})"
    # integer Div truncates toward zero; `/` of integers is f32, exact only to 2^24, so the
    # operands go through f64 (exact to 2^53)
    return f'cast({_f64(x)} / {_f64(y)}, "{x.dtype}")'


def _pow(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    x, y = ins
    if is_float(x.dtype):
        return f"({x.ref} ** {y.ref})"
    return f'cast({_f64(x)} ** {_f64(y)}, "{x.dtype}")'  # through f64, as Div


def _f64(v: Value) -> str:
    return v.ref if v.dtype == "f64" else f'cast({v.ref}, "f64")'


def _mean(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    return f"(({' + '.join(v.ref for v in ins)}) / {cx.lit(float(len(ins)))})"


def _opt(fn: str, **defaults: Any) -> Row:
    """`fn(x, k = attrs.get(k, default) ...)` for the listed attributes."""
    def row(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
        opts = "".join(f", {k} = {cx.lit(a.get(k, d))}" for k, d in defaults.items())
        return f"{fn}({ins[0].ref}{opts})"
    return row


def _elu(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    x = ins[0].ref
    return f"where({x} > 0.0, {x}, {cx.lit(a.get('alpha', 1.0))} * expm1({x}))"


def _selu(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    x = ins[0].ref
    alpha, gamma = a.get("alpha", 1.67326319217681884765625), a.get("gamma",
                                                                     1.05070102214813232421875)
    return (f"{cx.lit(gamma)} * where({x} > 0.0, {x}, {cx.lit(alpha)} * expm1({x}))")


def _hard_sigmoid(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    x = ins[0].ref
    alpha, beta = cx.lit(a.get("alpha", 0.2)), cx.lit(a.get("beta", 0.5))
    return f"maximum(minimum({alpha} * {x} + {beta}, 1.0), 0.0)"


def _clip(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    expr = ins[0].ref
    if len(ins) > 1 and ins[1] is not None:
        expr = f"maximum({expr}, {ins[1].ref})"
    if len(ins) > 2 and ins[2] is not None:
        expr = f"minimum({expr}, {ins[2].ref})"
    return expr


def _cast(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    return f'cast({ins[0].ref}, "{cx.dtype_of(a["to"], n.op_type)}")'


def _gemm(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    # alpha · A' B' + beta · C, A' = Aᵀ when transA
    A, B = ins[0].ref, ins[1].ref
    if a.get("transA", 0):
        A = f"transpose({A})"
    if a.get("transB", 0):
        B = f"transpose({B})"
    expr = f"({A} @ {B})"
    if a.get("alpha", 1.0) != 1.0:
        expr = f"({cx.lit(a['alpha'])} * {expr})"
    if len(ins) > 2 and ins[2] is not None:
        c = ins[2].ref if a.get("beta", 1.0) == 1.0 else f"{cx.lit(a['beta'])} * {ins[2].ref}"
        expr = f"({expr} + {c})"
    return expr


def _softmax(fn: str) -> Row:
    return lambda cx, n, i, a: f"{fn}({i[0].ref}, axis = {int(a.get('axis', -1))})"


def _spatial(cx: Any, n: Any, x: Value, kernel: list[int], strides: list[int],
             dilations: list[int], a: dict[str, Any]) -> list[int]:
    """ONNX pads (begins, then ends) from `pads` or `auto_pad` for these window sizes."""
    k = len(kernel)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", "VALID"):
        return list(a.get("pads", [0] * 2 * k)) if auto == "NOTSET" else [0] * 2 * k
    dims = cx.dims(x, n)[2:]
    begins, ends = [], []
    for d, kk, s, dl in zip(dims, kernel, strides, dilations):
        if not isinstance(d, int):
            cx.fail(n, f"auto_pad {auto} over a symbolic dimension {d}")
        out = -(-d // s)
        total = max(0, (out - 1) * s + (kk - 1) * dl + 1 - d)
        small, big = total // 2, total - total // 2
        begins.append(small if auto == "SAME_UPPER" else big)
        ends.append(big if auto == "SAME_UPPER" else small)
    return begins + ends


def _our_padding(pads: list[int]) -> list[int]:
    """Our padding ((lo, hi) per spatial axis) from ONNX's (all begins, then all ends)."""
    k = len(pads) // 2
    return [p for axis in range(k) for p in (pads[axis], pads[axis + k])]


def _conv(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    x, w = ins[0], ins[1]
    wshape = cx.dims(w, n)
    kernel = list(a.get("kernel_shape", wshape[2:]))
    k = len(kernel)
    if k not in (1, 2):
        cx.fail(n, f"{k}-D convolution (dslrun has conv1d and conv2d)")
    strides = list(a.get("strides", [1] * k))
    dil = list(a.get("dilations", [1] * k))
    pads = _our_padding(_spatial(cx, n, x, kernel, strides, dil, a))
    fn = cx.primitive("conv2d" if k == 2 else "conv1d")
    one = (lambda v: cx.lit(v[0])) if k == 1 else cx.lit
    expr = (f"{fn}({x.ref}, {w.ref}, stride = {one(strides)}, padding = {cx.lit(pads)}, "
            f"dilation = {one(dil)}, groups = {int(a.get('group', 1))})")
    if len(ins) > 2 and ins[2] is not None:
        expr = f"({expr} + reshape({ins[2].ref}, {cx.lit([1, -1] + [1] * k)}))"
    return expr


def _pool(fn: str) -> Row:
    def row(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
        kernel = list(a["kernel_shape"])
        if len(kernel) != 2:
            cx.fail(n, f"{len(kernel)}-D pooling (dslrun pools 2-D windows)")
        if a.get("ceil_mode", 0):
            cx.fail(n, "ceil_mode = 1")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            cx.fail(n, "dilated pooling")
        if a.get("storage_order", 0):
            cx.fail(n, "storage_order = 1")
        strides = list(a.get("strides", [1, 1]))
        pads = _our_padding(_spatial(cx, n, ins[0], kernel, strides, [1, 1], a))
        extra = (f", count_include_pad = {cx.lit(bool(a.get('count_include_pad', 0)))}"
                 if fn == "avg_pool2d" else "")
        return (f"{fn}({ins[0].ref}, kernel = {cx.lit(kernel)}, stride = {cx.lit(strides)}, "
                f"padding = {cx.lit(pads)}{extra})")
    return row


def _global_pool(fn: str) -> Row:
    def row(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
        rank = len(cx.dims(ins[0], n))
        return f"{fn}({ins[0].ref}, axis = {cx.lit(list(range(2, rank)))}, keepdims = true)"
    return row


def _reshape(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    shape = [int(d) for d in cx.static(ins[1], n, "the shape")]
    if a.get("allowzero", 0) and 0 in shape:
        cx.fail(n, "allowzero = 1 with a zero in the shape")
    if 0 in shape:
        dims = cx.dims(ins[0], n)
        shape = [dims[k] if d == 0 else d for k, d in enumerate(shape)]
    return f"reshape({ins[0].ref}, {cx.lit(shape)})"


def _flatten(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    dims = cx.dims(ins[0], n)
    axis = int(a.get("axis", 1))
    axis = axis + len(dims) if axis < 0 else axis
    lead = [d for d in dims[:axis] if d != 1]
    if not lead:
        first: Dim = 1
    elif all(isinstance(d, int) for d in lead):
        first = math.prod(lead)
    elif len(lead) == 1:
        first = lead[0]
    else:
        cx.fail(n, f"flattening the symbolic dimensions {lead} into one")
    return f"reshape({ins[0].ref}, {cx.lit([first, -1 if axis < len(dims) else 1])})"


def _reshaped_to(shape_of: Callable[[Any, Any, list[Value | None], dict[str, Any]],
                                    list[Dim]]) -> Row:
    """A reshape to a shape computed from the input's (Squeeze, Unsqueeze)."""
    return lambda cx, n, i, a: f"reshape({i[0].ref}, {cx.lit(shape_of(cx, n, i, a))})"


def _axes_arg(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any],
              position: int) -> list[int] | None:
    """Axes from the attribute (older opsets) or the input at `position` (None: all)."""
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(ins) > position and ins[position] is not None:
        return [int(v) for v in cx.static(ins[position], n, "the axes")]
    return None


def _squeezed(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> list[Dim]:
    dims = cx.dims(ins[0], n)
    axes = _axes_arg(cx, n, ins, a, 1)
    drop = {k % len(dims) for k in axes} if axes is not None else {
        k for k, d in enumerate(dims) if d == 1}
    return [d for k, d in enumerate(dims) if k not in drop]


def _unsqueezed(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> list[Dim]:
    dims = list(cx.dims(ins[0], n))
    axes = _axes_arg(cx, n, ins, a, 1) or []
    rank = len(dims) + len(axes)
    for k in sorted(ax % rank for ax in axes):
        dims.insert(k, 1)
    return dims


def _expand(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    dims = list(cx.dims(ins[0], n))
    target = [int(d) for d in cx.static(ins[1], n, "the shape")]
    rank = max(len(dims), len(target))
    dims = [1] * (rank - len(dims)) + dims
    target = [1] * (rank - len(target)) + target
    out = [d if t == 1 else t for d, t in zip(dims, target)]
    return f"broadcast_to({ins[0].ref}, shape = {cx.lit(out)})"


def _transpose(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    perm = a.get("perm")
    return f"transpose({ins[0].ref}" + (f", axes = {cx.lit(list(perm))})" if perm else ")")


def _concat(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    return f"concat({', '.join(v.ref for v in ins)}, axis = {int(a['axis'])})"


def _gather(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    axis = int(a.get("axis", 0))
    idx = ins[1]
    if idx.static is not None and np.any(idx.static < 0):  # take wants indices in [0, n)
        size = cx.dims(ins[0], n)[axis]
        fixed = np.where(idx.static < 0, idx.static + size, idx.static)
        return (f'take({ins[0].ref}, cast(array({cx.lit(fixed.astype(np.int64))}), '
                f'"{idx.dtype}"), axis = {axis})')
    return f"take({ins[0].ref}, {idx.ref}, axis = {axis})"


def _dropout(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    if len(ins) > 2 and ins[2] is not None and (ins[2].static is None or bool(ins[2].static)):
        cx.fail(n, "training_mode (random masks)")
    return ins[0].ref  # inference: the identity


def _reduce(fn: str) -> Row:
    def row(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
        axes = _axes_arg(cx, n, ins, a, 1)
        if not axes and a.get("noop_with_empty_axes", 0):
            return ins[0].ref
        keep = cx.lit(bool(a.get("keepdims", 1)))
        where = f", axis = {cx.lit(axes)}" if axes else ""
        return f"{fn}({ins[0].ref}{where}, keepdims = {keep})"
    return row


def _argmax(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    if a.get("select_last_index", 0):
        cx.fail(n, "select_last_index = 1 (dslrun's argmax takes the first)")
    dims = list(cx.dims(ins[0], n))
    axis = int(a.get("axis", 0)) % len(dims)
    expr = f"argmax({ins[0].ref}, axis = {axis})"
    if a.get("keepdims", 1):
        dims[axis] = 1
        expr = f"reshape({expr}, {cx.lit(dims)})"
    return expr


def _slice(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    starts = [int(v) for v in cx.static(ins[1], n, "starts")]
    ends = [int(v) for v in cx.static(ins[2], n, "ends")]
    dims = cx.dims(ins[0], n)
    axes = ([int(v) for v in cx.static(ins[3], n, "axes")]
            if len(ins) > 3 and ins[3] is not None else list(range(len(starts))))
    steps = ([int(v) for v in cx.static(ins[4], n, "steps")]
             if len(ins) > 4 and ins[4] is not None else [1] * len(starts))
    subs = [":"] * len(dims)
    big = 2 ** 62
    for s, e, ax, st in zip(starts, ends, axes, steps):
        s_txt = "" if (st > 0 and s <= -big) or (st < 0 and s >= big) else str(s)
        e_txt = "" if abs(e) >= big else str(e)
        subs[ax % len(dims)] = f"{s_txt}:{e_txt}" + (f":{st}" if st != 1 else "")
    return f"{ins[0].ref}[{', '.join(subs)}]"


def _layer_norm(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    rank = len(cx.dims(ins[0], n))
    axis = int(a.get("axis", -1)) % rank
    fn = cx.primitive("layer_norm")
    bias = ins[2].ref if len(ins) > 2 and ins[2] is not None else f"zeros_like({ins[1].ref})"
    return (f"{fn}({ins[0].ref}, {ins[1].ref}, {bias}, axes = {cx.lit(list(range(axis, rank)))}"
            f", eps = {cx.lit(float(a.get('epsilon', 1e-5)))})")


def _batch_norm(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    # inference: (x - mean) / sqrt(var + eps) · scale + B, per channel (axis 1)
    if a.get("training_mode", 0):
        cx.fail(n, "training_mode = 1")
    rank = len(cx.dims(ins[0], n))
    bs = cx.lit([1, -1] + [1] * (rank - 2))
    x, scale, b, mean, var = (v.ref for v in ins[:5])
    eps = cx.lit(float(a.get("epsilon", 1e-5)))
    return (f"(({x} - reshape({mean}, {bs})) / sqrt(reshape({var}, {bs}) + {eps})"
            f" * reshape({scale}, {bs}) + reshape({b}, {bs}))")


def _gelu(cx: Any, n: Any, ins: list[Value | None], a: dict[str, Any]) -> str:
    return f"gelu({ins[0].ref}, approximate = {cx.lit(a.get('approximate', 'none'))})"


def _arithmetic(fn: str) -> Row:
    """The spec's operator where it has one, else `fn` folded (ONNX's Max and Min are
    variadic)."""
    special = {"add": _binary("+"), "sub": _binary("-"), "mul": _binary("*"),
               "matmul": _binary("@"), "div": _div, "pow": _pow}
    return special.get(fn) or _fold(fn)


# the row maker for each kind of one-to-one pair (`names.ONE_TO_ONE`), given the dslrun op
BY_KIND: dict[str, Callable[[str], Row]] = {
    "arithmetic": _arithmetic, "unary": _call, "comparison": _call, "logical": _call,
    "reduction": _reduce, "softmax": _softmax, "pool": _pool,
}

IMPORT_TABLE: dict[str, Row] = {
    **{onnx_op: BY_KIND[kind](op) for kind, group in ONE_TO_ONE.items()
       for op, onnx_op in group.items()},
    "Gemm": _gemm,
    "Softplus": _call("softplus"),
    "Reciprocal": lambda cx, n, i, a: f"(1.0 / {i[0].ref})",
    "Softsign": lambda cx, n, i, a: f"({i[0].ref} / (1.0 + abs({i[0].ref})))",
    "LeakyRelu": _opt("leaky_relu", alpha=0.01),
    "Elu": _elu,
    "Selu": _selu,
    "HardSigmoid": _hard_sigmoid,
    "Gelu": _gelu,
    "Clip": _clip,
    "Sum": _fold("add"),
    "Mean": _mean,
    "Xor": _call("not_equal"),
    "Where": _call("where"),
    "Cast": _cast,
    "Identity": lambda cx, n, i, a: i[0].ref,
    "Dropout": _dropout,
    "Conv": _conv,
    "GlobalAveragePool": _global_pool("mean"),
    "GlobalMaxPool": _global_pool("max"),
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _reshaped_to(_squeezed),
    "Unsqueeze": _reshaped_to(_unsqueezed),
    "Expand": _expand,
    "Transpose": _transpose,
    "Concat": _concat,
    "Gather": _gather,
    "Slice": _slice,
    "ArgMax": _argmax,
    "LayerNormalization": _layer_norm,
    "BatchNormalization": _batch_norm,
}

# input positions that must be known when the spec is compiled, by op type
STATIC_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Expand": (1,),
    "Slice": (1, 2, 3, 4), "Dropout": (2,),
    **{onnx_op: (1,) for onnx_op in ONE_TO_ONE["reduction"].values()},  # the axes
}
