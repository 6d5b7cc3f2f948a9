"""The builtins that make tensors (rows of `builtins.BUILTINS`): derivatives (`grad`,
`hessian`, `hvp`), reductions and norms (also over parameter selections), random tensors, fills,
casts and the shape builtins (`split`, `concat`, `stack`, `reshape`, `flatten`, `transpose`).
Each takes the context, the call and the scope.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from dsl import ast as A
from dsl.errors import NameErr, ShapeErr, TypeErr
from dsl.lower import calls, expressions
from dsl.lower.context import Context
from dsl.lower.scope import Scope
from dsl.lower.values import (
    InitSpec,
    Selection,
    check_dim,
    const_val,
    describe,
    fitted,
    to_val,
)
from runtime import init as inits
from runtime.autodiff import GradError, gradients, hessian, or_zeros
from runtime.dtypes import DTYPES, is_float, np_dtype
from runtime.ops import Val
from runtime.ops.shapes import norm_axes

Builtin = Callable[[Context, A.Call, Scope], Any]
MAX_CONST_ELEMENTS = 2**27  # elements of a compile-time constant (linspace, eye, ...)


def shape_list(cx: Context, v: Any, span: A.Span) -> tuple:
    """A shape argument: an integer or a list of dimensions (static ones may be 0)."""
    if isinstance(v, Val):
        raise cx.err(TypeErr, "a shape must be a list of dimensions, e.g. [B, 2]", span)
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (check_dim(cx, v, span, lo=0),)
    if not isinstance(v, (list, tuple)):
        raise cx.err(TypeErr, f"a shape must be an integer or a list of dimensions, e.g. "
                     f"[B, 2], got {describe(v)}", span)
    out = []
    for d in v:
        if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
            out.append(check_dim(cx, d, span, lo=0))
        elif isinstance(d, str):
            out.append(d)
        else:
            raise cx.err(TypeErr, f"a dimension must be an integer, got {d!r}", span)
    return tuple(out)


def b_grad(cx: Context, e: A.Call, scope: Scope) -> Val:
    a = calls.builtin_args(cx, e, scope, ["f", "wrt"], {})
    f, w = a["f"], a["wrt"]
    if not isinstance(f, Val):
        raise cx.err(TypeErr, "grad: the first argument must be a scalar tensor", e.span)
    if isinstance(w, Selection) or not isinstance(w, Val):
        raise cx.err(TypeErr, "grad: differentiate with respect to one tensor (an input, "
                     "a parameter or an intermediate value)", e.span)
    with cx.b.context(role="grad", loc=cx.loc(e.span)):
        try:
            (g,) = gradients(cx.b, f.id, [w.id])
        except GradError as ex:
            raise cx.err(TypeErr, str(ex), e.span) from None
    return or_zeros(cx.b, g, w.id)


HESSIAN_MAX_SIZE = 2048  # the default limit of hessian(f, w, max_size) and of newton


def b_hessian(cx: Context, e: A.Call, scope: Scope) -> Val:
    """hessian(f, wrt, max_size): the dense Hessian, refused at compile time over max_size
    entries of wrt (one reverse pass per entry in the graph, n² numbers, an O(n³) solve)."""
    a = calls.builtin_args(cx, e, scope, ["f", "wrt", "max_size"],
                           {"max_size": HESSIAN_MAX_SIZE})
    f, w, limit = a["f"], a["wrt"], a["max_size"]
    if not isinstance(f, Val) or not isinstance(w, Val):
        raise cx.err(TypeErr, "hessian(f, w) takes a scalar and a tensor", e.span)
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer):
        raise cx.err(TypeErr, f"hessian: max_size must be an integer, got {limit!r}", e.span)
    n = math.prod(d for d in w.shape if isinstance(d, int))
    if all(isinstance(d, int) for d in w.shape) and n > limit:
        mb = n * n * np_dtype(w.type.dtype).itemsize / 2**20
        what = f"{w.node.name} ({w.type})" if w.node.name else str(w.type)
        raise cx.err(TypeErr, f"hessian: a dense Hessian over the {n} entries of {what} "
                     f"costs {n} reverse passes in the graph (compile time and memory grow "
                     f"with each), {n}×{n} = {n * n:,} numbers ({mb:,.0f} MB) and an O(n³) "
                     f"solve per Newton step; the limit is max_size = {limit}. Use newton_cg "
                     "(Hessian-vector products, no dense matrix), or raise max_size", e.span)
    with cx.b.context(role="grad", loc=cx.loc(e.span)):
        try:
            return hessian(cx.b, f.id, w.id)
        except GradError as ex:
            raise cx.err(TypeErr, str(ex), e.span) from None


def b_hvp(cx: Context, e: A.Call, scope: Scope) -> Val:
    """hvp(f, wrt, v): the Hessian-vector product ∇²f · v as two reverse passes (the gradient
    of ⟨∇f, v⟩ with v held constant), never the dense Hessian."""
    a = calls.builtin_args(cx, e, scope, ["f", "wrt", "v"], {})
    f, w, v = a["f"], a["wrt"], a["v"]
    if not isinstance(f, Val) or isinstance(w, Selection) or not isinstance(w, Val):
        raise cx.err(TypeErr, "hvp(f, w, v) takes a scalar, a tensor and a tensor of the "
                     "tensor's shape", e.span)
    v = to_val(cx, v, e.span)
    if tuple(v.shape) != tuple(w.shape):
        raise cx.err(ShapeErr, f"hvp: v must have the shape of wrt: {v.type} vs {w.type}",
                     e.span)
    b = cx.b
    with b.context(role="grad", loc=cx.loc(e.span)):
        try:
            (g,) = gradients(b, f.id, [w.id])
            if g is None:  # f does not depend on w: H = 0
                return or_zeros(b, None, w.id)
            s = b.emit("sum", g * b.emit("stop_gradient", v))
            (hv,) = gradients(b, s.id, [w.id])
        except GradError as ex:
            raise cx.err(TypeErr, str(ex), e.span) from None
    return or_zeros(b, hv, w.id)


def reduce_builtin(op: str) -> Builtin:
    """sum/mean/max/min(x, axis, keepdims): NumPy for constants, a node for tensors; the sum
    of a selection is the sum of all its parameters."""
    def fn(cx: Context, e: A.Call, scope: Scope) -> Any:
        a = calls.builtin_args(cx, e, scope, ["x", "axis", "keepdims"],
                               {"axis": None, "keepdims": False})
        x = a["x"]
        if isinstance(x, Selection):
            if op != "sum":
                raise cx.err(TypeErr, f"{op} of a selection is not defined", e.span)
            return _over_selection(cx, x, lambda p: p, e.span)
        axis = tuple(a["axis"]) if isinstance(a["axis"], list) else a["axis"]
        if not isinstance(x, Val):
            try:  # numbers, or (nested) lists of them of one shape
                arr = np.asarray(x if isinstance(x, int | float | np.number | np.ndarray
                                                 | list | tuple) else None)
            except ValueError:  # a ragged list
                arr = np.asarray(None)
            if arr.dtype.kind not in "biuf":
                raise cx.err(TypeErr, f"{op}: expects a tensor or numbers, got "
                             f"{describe(x)}", e.span)
            with cx.guard(e.span):  # the options' rules of the op, for constants too
                norm_axes(op, axis, arr.ndim)
            if not isinstance(a["keepdims"], bool | np.bool_):
                raise cx.err(TypeErr, f"{op}: option 'keepdims' is true or false, got "
                             f"{a['keepdims']!r}", e.span)
            return getattr(np, {"sum": "sum", "mean": "mean", "max": "max", "min": "min"}[op])(
                arr, axis=axis, keepdims=a["keepdims"])
        if op == "mean" and not x.type.is_float:
            x = cx.b.emit("cast", x, dtype=cx.float_dtype)
        with cx.guard(e.span):
            return cx.b.emit(op, x, axis=axis, keepdims=a["keepdims"])
    return fn


def _over_selection(cx: Context, sel: Selection, f: Callable[[Val], Val],
                    span: A.Span) -> Val:
    if not sel.names:
        return const_val(cx, 0.0, span)
    total = None
    with cx.guard(span):
        for n in sel.names:
            t = cx.b.emit("sum", f(Val(cx.b, cx.made.var_node[n])))
            total = t if total is None else total + t
    return total


def b_l2(cx: Context, e: A.Call, scope: Scope) -> Val:
    """l2(x) = Σ x² over a tensor or over every parameter of a selection."""
    a = calls.builtin_args(cx, e, scope, ["x"], {})
    x = a["x"]
    if isinstance(x, Selection):
        return _over_selection(cx, x, lambda p: p * p, e.span)
    x = to_val(cx, x, e.span)
    return cx.b.emit("sum", x * x)


def b_l1(cx: Context, e: A.Call, scope: Scope) -> Val:
    """l1(x) = Σ |x| over a tensor or a selection."""
    a = calls.builtin_args(cx, e, scope, ["x"], {})
    x = a["x"]
    if isinstance(x, Selection):
        return _over_selection(cx, x, lambda p: cx.b.emit("abs", p), e.span)
    x = to_val(cx, x, e.span)
    return cx.b.emit("sum", cx.b.emit("abs", x))


def random_builtin(op: str, opts: list[str], defaults: dict[str, Any]) -> Builtin:
    """normal/uniform/bernoulli(shape, ...): a random tensor; without arguments, an
    initializer (`param w: [3] = normal(std = 0.1)`)."""
    def fn(cx: Context, e: A.Call, scope: Scope) -> Any:
        if not e.args and inits.canonical(e.func):  # `param w: [3] = normal(std = 0.1)`
            return InitSpec(inits.canonical(e.func),
                            {k.name: expressions.ev(cx, k.value, scope) for k in e.kwargs},
                            e.span)
        a = calls.builtin_args(cx, e, scope, opts, defaults)
        shape = a.pop("shape")
        if isinstance(shape, Val):
            shape = shape.shape
        shape = shape_list(cx, shape, e.span)
        dt = a.pop("dtype", None)
        if any(isinstance(v, Val) or not isinstance(v, int | float) for v in a.values()):
            raise cx.err(TypeErr, f"{e.func}: options must be constant numbers", e.span)
        attrs: dict[str, Any] = {k: float(v) for k, v in a.items()}
        attrs["dtype"] = cx.float_dtype if dt is None else cx.fdt(dt)
        with cx.guard(e.span):
            return cx.b.emit(op, shape=shape, **attrs)
    return fn


def b_randint(cx: Context, e: A.Call, scope: Scope) -> Val:
    a = calls.builtin_args(cx, e, scope, ["low", "high", "shape"], {})
    shape = shape_list(cx, a["shape"], e.span)
    for k in ("low", "high"):
        v = a[k]
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            what = repr(v) if isinstance(v, int | float | str) else "a tensor or a list"
            raise cx.err(TypeErr, f"randint: {k} is an integer known at compile time, got "
                         f"{what}", e.span)
    with cx.guard(e.span):
        return cx.b.emit("random_randint", shape=shape, low=a["low"], high=a["high"],
                         dtype="i64")


def _fill_value(cx: Context, v: Any, e: A.Call) -> Any:
    """The fill value of zeros/ones/full(_like): a number known at compile time."""
    if isinstance(v, Val):
        raise cx.err(TypeErr, f"{e.func}: the value must be a number known at compile time, "
                     f"not a tensor {v.type} (a primitive such as sqrt or exp makes a tensor "
                     "even of a number: write 2.0 ** 0.5); for a tensor value add it to "
                     "zeros(...)", e.span)
    return v


def fill_builtin(value: float | None) -> Builtin:
    """zeros/ones/full(shape, [value], dtype): a constant for a static shape, else a `full`
    node."""
    def fn(cx: Context, e: A.Call, scope: Scope) -> Any:
        names = ["shape"] + (["value"] if value is None else []) + ["dtype"]
        a = calls.builtin_args(cx, e, scope, names, {"dtype": None})
        v = _fill_value(cx, a.get("value", value), e)
        if isinstance(a["shape"], Val):
            raise cx.err(TypeErr, f"{e.func}: give a shape list; for a tensor use "
                         f"{e.func}_like", e.span)
        shape = shape_list(cx, a["shape"], e.span)
        dt = cx.fdt(a["dtype"]) if a["dtype"] is None or is_float(a["dtype"]) else a["dtype"]
        fill = fitted(cx, np.asarray(v), dt, e.span)
        if all(isinstance(d, int) for d in shape) and math.prod(shape) <= MAX_CONST_ELEMENTS:
            return np.broadcast_to(fill, shape).copy()
        return cx.b.emit("full", shape=shape, value=float(v), dtype=dt)
    return fn


def fill_like_builtin(value: float | None) -> Builtin:
    """zeros_like/ones_like/full_like(x, [value]): x's shape and dtype."""
    def fn(cx: Context, e: A.Call, scope: Scope) -> Any:
        names = ["x"] + (["value"] if value is None else [])
        a = calls.builtin_args(cx, e, scope, names, {})
        x = a["x"]
        v = _fill_value(cx, a.get("value", value), e)
        if not isinstance(x, Val):
            return np.full(np.shape(x), v, dtype=np.float64)
        fitted(cx, np.asarray(v), x.type.dtype, e.span)
        return cx.b.emit("full", shape=x.shape, value=float(v), dtype=x.type.dtype)
    return fn


def b_cast(cx: Context, e: A.Call, scope: Scope) -> Val:
    a = calls.builtin_args(cx, e, scope, ["x", "dtype"], {})
    dt = a["dtype"]
    if dt not in DTYPES:
        raise cx.err(TypeErr, f"cast: unknown dtype {dt!r}", e.span)
    x = to_val(cx, a["x"], e.span)
    return cx.b.emit("cast", x, dtype=cx.fdt(dt))


def b_split(cx: Context, e: A.Call, scope: Scope) -> tuple:
    a = calls.builtin_args(cx, e, scope, ["x", "sections", "axis"], {"axis": -1})
    x = to_val(cx, a["x"], e.span)
    r = x.type.rank
    with cx.guard(e.span):
        (ax,) = norm_axes("split", _int_axis(cx, "split", a["axis"], e.span), r)
    d = x.shape[ax]
    n = a["sections"]
    if not isinstance(d, int) or not isinstance(n, int) or n <= 0 or d % n:
        raise cx.err(ShapeErr, f"split: cannot split dimension {d} of {x.type} into {n} "
                     "equal parts", e.span)
    k = d // n
    pre = tuple(("s", None, None, None) for _ in range(ax))
    with cx.guard(e.span):
        return tuple(cx.b.emit("getitem", x, index=pre + (("s", i * k, (i + 1) * k, None),))
                     for i in range(n))


def _int_axis(cx: Context, op: str, axis: Any, span: A.Span) -> int:
    """An `axis` option: one integer known at compile time."""
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        what = repr(axis) if isinstance(axis, int | float | str) else "a tensor or a list"
        raise cx.err(TypeErr, f"{op}: axis is one integer known at compile time, got {what}",
                     span)
    return int(axis)


def _tensors_and_axis(cx: Context, e: A.Call, scope: Scope) -> tuple[list[Val], Any]:
    """The arguments of concat/stack (lists are spread) and their `axis` option."""
    axis = 0
    for k in e.kwargs:
        if k.name != "axis":
            raise cx.err(NameErr, f"{e.func}: unknown option '{k.name}'", k.span)
        axis = _int_axis(cx, e.func, expressions.ev(cx, k.value, scope), k.span)
    items = []
    for a in e.args:
        v = expressions.ev(cx, a, scope)
        items.extend(v if isinstance(v, (list, tuple)) else [v])
    return [to_val(cx, v, e.span) for v in items], axis


def b_concat(cx: Context, e: A.Call, scope: Scope) -> Val:
    vals, axis = _tensors_and_axis(cx, e, scope)
    with cx.guard(e.span):
        return cx.b.emit("concat", *vals, axis=axis)


def b_stack(cx: Context, e: A.Call, scope: Scope) -> Val:
    vals, axis = _tensors_and_axis(cx, e, scope)
    with cx.guard(e.span):
        ex = []
        for v in vals:
            ax = axis % (v.type.rank + 1)
            ex.append(cx.b.emit("reshape", v, shape=v.shape[:ax] + (1,) + v.shape[ax:]))
        return cx.b.emit("concat", *ex, axis=axis)


def b_reshape(cx: Context, e: A.Call, scope: Scope) -> Val:
    a = calls.builtin_args(cx, e, scope, ["x", "shape"], {})
    x = to_val(cx, a["x"], e.span)
    raw = a["shape"]
    if not isinstance(raw, list | tuple):
        raise cx.err(TypeErr, "reshape: the shape is a list of dimensions, e.g. [B, -1]",
                     e.span)
    shape = []
    for d in raw:
        if isinstance(d, str):
            shape.append(d)
        elif isinstance(d, int | np.integer) and not isinstance(d, bool):
            shape.append(-1 if d == -1 else check_dim(cx, d, e.span, lo=0))
        else:
            what = repr(d) if isinstance(d, int | float | str) else "a tensor"
            raise cx.err(TypeErr, f"reshape: a dimension is an integer, -1 or a symbolic "
                         f"dimension, got {what}", e.span)
    with cx.guard(e.span):
        return cx.b.emit("reshape", x, shape=tuple(shape))


def b_flatten(cx: Context, e: A.Call, scope: Scope) -> Val:
    a = calls.builtin_args(cx, e, scope, ["x"], {})
    x = to_val(cx, a["x"], e.span)
    with cx.guard(e.span):
        return cx.b.emit("reshape", x, shape=(x.shape[0], -1))


def b_transpose(cx: Context, e: A.Call, scope: Scope) -> Val:
    a = calls.builtin_args(cx, e, scope, ["x", "axes"], {"axes": None})
    x = to_val(cx, a["x"], e.span)
    if a["axes"] is not None and not isinstance(a["axes"], list | tuple):
        raise cx.err(TypeErr, "transpose: axes is a list of axes, e.g. [1, 0]", e.span)
    axes = tuple(a["axes"]) if a["axes"] is not None else None
    with cx.guard(e.span):
        return cx.b.emit("transpose", x, axes=axes)

