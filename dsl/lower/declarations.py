"""Declarations: global names (`input`, `const`, `objective`, `metric`, `output`, each once),
variables (`param`, `state`: a node of the graph, a `Variable` and its initial value, shared by
name when declared again), their types, and initial values (initializers, constants and
values made on first read, drawn from the program's seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from dsl import ast as A
from dsl.errors import NameErr, ShapeErr, TypeErr, did_you_mean
from dsl.lower import builtins, expressions
from dsl.lower.context import Context
from dsl.lower.scope import Scope
from dsl.lower.values import Deferred, InitSpec, Selection, check_dim, fitted, to_val
from dsl.overrides import const_override, input_override
from runtime import init as inits
from runtime.dtypes import DTYPES
from runtime.ir import TensorType
from runtime.ops import REGISTRY, Val
from runtime.program import Variable

MAX_ELEMENTS = 2**40  # elements of one tensor; what fits in memory is checked before a run
RESULT_KINDS = {A.ObjectiveDecl: "objective", A.MetricDecl: "metric", A.OutputDecl: "output"}


# ---------------------------------------------------------------- global names

def check_new_global(cx: Context, name: str, span: A.Span) -> None:
    """Refuse a second global of the same name; remember where this one is declared."""
    spans = cx.made.decl_spans
    if name in cx.globals.vars or name in spans:
        prev = spans.get(name)
        where = f" (first defined at {prev})" if prev else ""
        raise cx.err(NameErr, f"duplicate definition of '{name}'{where}", span)
    spans[name] = span


def declare_input(cx: Context, s: A.InputDecl) -> None:
    """`input x: [B, 784]` (with an optional default or a `--set` value)."""
    check_new_global(cx, s.name, s.span)
    t = eval_type(cx, s.type, cx.globals, allow_symbols=True)
    nid = cx.graph.add("input", (), {}, t, role="input", name=s.name, loc=cx.loc(s.span))
    made = cx.made
    made.inputs[s.name] = t
    made.input_nodes[s.name] = nid
    if s.name in cx.overrides.given:
        cx.overrides.used.add(s.name)
        made.input_defaults[s.name] = input_override(s.name, cx.overrides.given[s.name], t,
                                                     s.span)
    elif s.default is not None:
        default = expressions.ev(cx, s.default, cx.globals)
        if isinstance(default, Val):
            raise cx.err(TypeErr, f"the default of input '{s.name}' must be a constant",
                         s.span)
        arr = np.asarray(default)
        if arr.ndim != t.rank or any(not isinstance(d, str) and d != n
                                     for d, n in zip(t.shape, arr.shape)):
            raise cx.err(ShapeErr, f"the default of input '{s.name}' has shape "
                         f"{list(arr.shape)}, but the input is {t}", s.default.span)
        made.input_defaults[s.name] = fitted(cx, arr, t.dtype, s.default.span)
    cx.globals.vars[s.name] = Val(cx.b, nid)


def declare_const(cx: Context, s: A.ConstDecl) -> None:
    """`const H = 128`: a compile-time value (a `--set` value replaces it)."""
    check_new_global(cx, s.name, s.span)
    value = expressions.ev(cx, s.value, cx.globals)
    if s.name in cx.overrides.given:
        cx.overrides.used.add(s.name)
        value = const_override(s.name, cx.overrides.given[s.name], value, s.span)
        cx.overrides.applied[s.name] = value
    if isinstance(value, Val):
        raise cx.err(TypeErr, f"const '{s.name}' must be a compile-time value, but it "
                     "depends on inputs or parameters (use a plain assignment)", s.span)
    cx.globals.vars[s.name] = value


def declare_result(cx: Context, s: A.ObjectiveDecl | A.MetricDecl | A.OutputDecl) -> None:
    """`objective`/`metric` (a float scalar) or `output` (a tensor): a named graph output."""
    kind = RESULT_KINDS[type(s)]
    check_new_global(cx, s.name, s.span)
    v = expressions.ev(cx, s.value, cx.globals)
    if kind == "output" and isinstance(v, Selection):
        raise cx.err(TypeErr, f"output '{s.name}' must be a tensor", s.span)
    v = to_val(cx, v, s.span)
    if kind != "output":
        if v.type.rank != 0 or not v.type.is_float:
            raise cx.err(TypeErr, f"{kind} '{s.name}' must be a float scalar, got "
                         f"{v.type}", s.value.span)
    table = {"objective": cx.made.objectives, "metric": cx.made.metrics,
             "output": cx.made.outputs}[kind]
    table[s.name] = v.id
    cx.graph.outputs[s.name] = v.id
    cx.graph.output_kinds[s.name] = kind
    cx.globals.vars[s.name] = v


def eval_type(cx: Context, t: A.TypeExpr, scope: Scope, allow_symbols: bool) -> TensorType:
    """A declared type. Inputs may have symbolic dimensions (`B`); variables may not."""
    if t.dtype is not None and t.dtype not in DTYPES:
        raise cx.err(TypeErr, f"unknown dtype '{t.dtype}'", t.span)
    dims: list[int | str] = []
    for d in t.dims:
        if isinstance(d, A.Name):
            found, v = scope.lookup(d.id)
            if not found:
                if not allow_symbols:
                    if any(d.id in t.shape for t in cx.made.inputs.values()):
                        raise cx.err(ShapeErr, "parameters need static shapes; "
                                     f"dimension '{d.id}' is symbolic", d.span)
                    raise cx.err(NameErr, f"unknown name '{d.id}' in a shape"
                                 + did_you_mean(d.id, scope.names()), d.span)
                dims.append(d.id)
                continue
        else:
            v = expressions.ev(cx, d, scope)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer, str)):
            raise cx.err(TypeErr, f"a dimension must be an integer, got {v!r}", d.span)
        if isinstance(v, str) and not allow_symbols:
            raise cx.err(ShapeErr, f"parameters need static shapes; dimension '{v}' is "
                         "symbolic", d.span)
        dims.append(check_dim(cx, v, d.span) if not isinstance(v, str) else v)
    static = [d for d in dims if isinstance(d, int)]
    if math.prod(static) > MAX_ELEMENTS:
        raise cx.err(ShapeErr, f"a tensor of shape {dims} would have "
                     f"{math.prod(static):.3g} elements, more than the limit of "
                     f"{MAX_ELEMENTS:.3g}" + cx.overrides.note(*static), t.span)
    return TensorType(cx.fdt(t.dtype), tuple(dims))


# ---------------------------------------------------------------- variables

def declare_param(cx: Context, s: A.ParamDecl, scope: Scope) -> Val:
    """`param W: [784, H] = xavier_normal` under the scope's prefix."""
    name = scope.prefix + s.name
    t = eval_type(cx, s.type, scope, allow_symbols=False)
    kind = s.kind or "weight"
    if kind not in ("weight", "bias", "scale"):
        raise cx.err(NameErr, f"unknown parameter kind '{kind}'"
                     + did_you_mean(kind, ["weight", "bias", "scale"]), s.span)
    if name in cx.made.variables:
        return _reuse(cx, name, t, s.span)
    init = ev_init(cx, s.init, scope)
    value = init_value(cx, init, t, name, s.init.span)
    desc = init.describe() if isinstance(init, InitSpec) else "value"
    cx.made.variables[name] = Variable(name, t, value, "param", trainable=not s.frozen,
                                       kind=kind, init=desc)
    # variables live in the program's graph, also when declared inside a loop's body
    nid = cx.root.graph.add("param", (), {"init": desc, "kind": kind,
                                          "trainable": not s.frozen},
                            t, role="param", name=name, loc=cx.loc(s.span))
    cx.made.var_node[name] = nid
    return Val(cx.root, nid)


def _reuse(cx: Context, name: str, t: TensorType, span: A.Span) -> Val:
    old = cx.made.variables[name]
    if old.type != t:
        raise cx.err(ShapeErr, f"'{name}' is shared but declared here as {t} and before "
                     f"as {old.type}", span)
    return Val(cx.root, cx.made.var_node[name])


def declare_state(cx: Context, name: str, type_expr: A.TypeExpr | None, init_expr: A.Expr,
                  scope: Scope, span: A.Span, like: Variable | None = None) -> Val:
    """`state m = zeros_like(param)` (`like`: the parameter of an optimizer rule) or
    `state s: [n] = zeros`; without a type, the type of the initial value."""
    t = eval_type(cx, type_expr, scope, False) if type_expr is not None else None
    if name in cx.made.variables:
        v = cx.made.variables[name]
        return _reuse(cx, name, t or v.type, span)
    init = ev_init(cx, init_expr, scope, like=like)
    if t is None:
        if isinstance(init, Deferred):  # an optimizer's state has its parameter's dtype
            t = TensorType(like.type.dtype if like is not None and like.type.is_float
                           else cx.float_dtype, init.shape)
        elif isinstance(init, np.ndarray):
            dt = cx.float_dtype if init.dtype.kind == "f" else (
                "i64" if init.dtype.kind in "iu" else "bool")
            t = TensorType(dt, tuple(init.shape))
        elif isinstance(init, (int, float)):
            t = TensorType(cx.float_dtype, ())
        else:
            raise cx.err(TypeErr, f"state '{name}' needs a type: state {name}: [n] = "
                         "zeros", span)
    value = init_value(cx, init, t, name, init_expr.span)
    desc = init.describe() if isinstance(init, InitSpec) else "value"
    cx.made.variables[name] = Variable(name, t, value, "state", trainable=False,
                                       kind="buffer", init=desc)
    nid = cx.root.graph.add("state", (), {"init": desc}, t, role="state", name=name,
                            loc=cx.loc(span))
    cx.made.var_node[name] = nid
    return Val(cx.root, nid)


def init_value(cx: Context, init: Any, t: TensorType, name: str,
               span: A.Span) -> np.ndarray | Callable[[], np.ndarray]:
    """The initial value of variable `name`, or (for initializers and values of other
    variables) a function that makes it: `check` and `params` draw no weights, and the
    draws use `cx.seed` as the compiler sets it after reading the train settings."""
    shape = tuple(int(d) for d in t.shape)
    dtype = t.np_dtype()
    if isinstance(init, InitSpec):
        defaults = inits.INITIALIZERS[inits.canonical(init.name) or init.name][1]
        for k, v in init.options.items():
            if k not in defaults:
                raise cx.err(NameErr, f"initializer '{init.name}' has no option '{k}'"
                             + did_you_mean(k, defaults), span)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise cx.err(TypeErr, f"initializer '{init.name}': option '{k}' must be "
                             f"a number, got {v!r}", span)
            if t.is_float:
                fitted(cx, np.asarray(float(v)), t.dtype, span)
        seed = cx.seed
        return lambda: inits.initialize(init.name, shape, inits.seeded_rng(seed.value, name),
                                        dtype, **init.options)
    if isinstance(init, Deferred):
        try:
            fits = np.broadcast_shapes(init.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise cx.err(ShapeErr, f"initial value of shape {list(init.shape)} does not "
                         f"fit {t}", span)
        if init.fill is not None:
            fitted(cx, np.asarray(init.fill), t.dtype, span)
        return lambda: np.broadcast_to(init.make(), shape).astype(dtype)
    v = np.asarray(init, dtype=np.float64)
    try:
        np.broadcast_to(v, shape)  # a view: checks the shape, allocates nothing
    except ValueError:
        raise cx.err(ShapeErr, f"initial value of shape {list(v.shape)} does not fit "
                     f"{t}", span) from None
    v = fitted(cx, v, t.dtype, span)
    return lambda: np.broadcast_to(v, shape).astype(dtype)


def ev_init(cx: Context, e: A.Expr, scope: Scope, like: Variable | None = None) -> Any:
    """Evaluate an initializer expression: an InitSpec, a number or a NumPy array."""
    if isinstance(e, A.Name) and inits.canonical(e.id) and not scope.lookup(e.id)[0]:
        return InitSpec(inits.canonical(e.id), {}, e.span)
    if isinstance(e, A.Call):
        base = inits.canonical(e.func)
        if e.func in ("zeros_like", "ones_like", "full_like") and like is not None:
            fill = {"zeros_like": 0.0, "ones_like": 1.0}.get(e.func)
            if fill is None:
                if len(e.args) != 2:
                    raise cx.err(TypeErr, "full_like(param, value)", e.span)
                fill = expressions.ev(cx, e.args[1], scope)
                if isinstance(fill, Val):
                    raise cx.err(TypeErr, "full_like: the value must be a number known at "
                                 f"compile time, not a tensor {fill.type}", e.args[1].span)
            shape = tuple(int(d) for d in like.type.shape)
            return Deferred(shape, lambda: np.asarray(fill, dtype=np.float64),  # broadcast
                            fill=fill)
        if base and not e.args:
            opts = {k.name: expressions.ev(cx, k.value, scope) for k in e.kwargs}
            return InitSpec(base, opts, e.span)
    if isinstance(e, A.Name) and e.id == "param" and like is not None:
        return Deferred(tuple(int(d) for d in like.type.shape), lambda: like.value)
    if isinstance(e, A.Name) and not scope.lookup(e.id)[0] and e.id not in (
            "step", "epoch", "training", *cx.defs.nets, *REGISTRY, *builtins.BUILTINS):
        known = [*inits.INITIALIZERS, *inits.ALIASES]
        raise cx.err(NameErr, f"unknown initializer '{e.id}'"
                     + did_you_mean(e.id, [*known, *scope.names()]), e.span)
    v = expressions.ev(cx, e, scope)
    if isinstance(v, InitSpec):
        return v
    if isinstance(v, Val):
        raise cx.err(TypeErr, "an initial value must be a constant or an initializer "
                     "(zeros, normal(std = 0.1), xavier_normal, ...)", e.span)
    if isinstance(v, str) and inits.canonical(v):
        return InitSpec(inits.canonical(v), {}, e.span)
    try:
        return np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):  # a list holding a tensor, a string, a ragged list
        raise cx.err(TypeErr, "an initial value must be a constant or an initializer "
                     "(zeros, normal(std = 0.1), xavier_normal, ...)", e.span) from None
