"""Calls: what a name in call position means (a def or net, a builtin, a primitive op, an
initializer), argument binding with the kind checks of defaults, and the expansion of a def or
net at its call site: its own scope and weight prefix, its `return`, no recursion and at most
MAX_DEPTH nested calls. A mistake inside a prelude def is reported at the user's call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsl import ast as A
from dsl.errors import DslError, NameErr, TypeErr, did_you_mean
from dsl.lower import builtins, expressions, statements
from dsl.lower.context import Context
from dsl.lower.scope import Scope
from dsl.lower.values import InitSpec, coerce_pair, describe, emit_stable, to_val
from runtime import init as inits
from runtime.ops import REGISTRY, Val

MAX_DEPTH = 64

# ops computed in floating point: an integer first argument is cast to the float dtype
FLOAT_OPS = {"exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "softplus", "log1p",
             "expm1", "swish", "softmax", "log_softmax", "logsumexp"}


def call(cx: Context, e: A.Call, scope: Scope) -> Any:
    """The value of a call (None for a def whose value is dropped)."""
    statement, cx.calls.statement = cx.calls.statement, False
    d = cx.defs.nets.get(e.func)
    stack = cx.calls.stack
    if d is not None and e.func in stack:
        # inside the body of `def conv2d`, `conv2d(...)` is the primitive it wraps
        if e.func not in builtins.BUILTINS and e.func not in REGISTRY:
            chain = " -> ".join([*stack[stack.index(e.func):], e.func])
            raise cx.err(TypeErr, f"'{e.func}' calls itself ({chain}): nets and defs are "
                         "expanded at compile time, so they cannot be recursive (repeat "
                         "a layer with 'repeat' or 'for')", e.span)
    elif d is not None:
        return call_def(cx, d, e, scope, statement)
    fn = builtins.BUILTINS.get(e.func)
    if fn is not None:
        return fn(cx, e, scope)
    if e.func in REGISTRY:
        return call_op(cx, e, scope)
    if inits.canonical(e.func):
        if e.args:
            raise cx.err(TypeErr, f"initializer '{e.func}' takes keyword options only", e.span)
        return InitSpec(inits.canonical(e.func),
                        {k.name: expressions.ev(cx, k.value, scope) for k in e.kwargs}, e.span)
    if e.func in cx.defs.optimizers:
        raise cx.err(TypeErr, f"'{e.func}' is an optimizer; use it as: optimizer "
                     f"{e.func}(...) minimize <objective>", e.span)
    known = set(cx.defs.nets) | set(builtins.BUILTINS) | set(REGISTRY) | set(inits.INITIALIZERS)
    raise cx.err(NameErr, f"unknown function '{e.func}'" + did_you_mean(e.func, known), e.span)


def call_op(cx: Context, e: A.Call, scope: Scope) -> Val:
    """A primitive op: tensor arguments (constants lifted, elementwise operands promoted) and
    constant options."""
    opdef = REGISTRY[e.func]
    args = [expressions.ev(cx, a, scope) for a in e.args]
    kwargs = {}
    for k in e.kwargs:
        if k.name not in opdef.attrs:
            raise cx.err(NameErr, f"{e.func}: unknown option '{k.name}'"
                         + did_you_mean(k.name, opdef.attrs), k.span)
        v = expressions.ev(cx, k.value, scope)
        if isinstance(v, Val):
            raise cx.err(TypeErr, f"{e.func}: option '{k.name}' must be a constant", k.span)
        kwargs[k.name] = tuple(v) if isinstance(v, list) else v
    if opdef.arity is not None and len(args) != opdef.arity:
        raise cx.err(TypeErr, f"{e.func}: expects {opdef.arity} tensor argument"
                     f"{'s' if opdef.arity != 1 else ''}, got {len(args)}", e.span)
    vals = [to_val(cx, a, e.span) for a in args]
    if kwargs.get("dtype") is not None:
        kwargs["dtype"] = cx.fdt(kwargs["dtype"])
    if opdef.elementwise and len(vals) == 2:
        vals = list(coerce_pair(cx, vals[0], vals[1], e.span))
    elif opdef.elementwise and e.func == "where" and len(vals) == 3:
        vals[1], vals[2] = coerce_pair(cx, vals[1], vals[2], e.span)
    if e.func in FLOAT_OPS and vals and not vals[0].type.is_float:
        vals[0] = cx.b.emit("cast", vals[0], dtype=cx.float_dtype)
    with cx.guard(e.span):
        return emit_stable(cx, e.func, vals, kwargs)


def bind_args(cx: Context, params: tuple[A.Param, ...], e: A.Call, scope: Scope,
              what: str, name: str) -> dict[str, Any]:
    """The arguments of a call of def/net `name` by parameter; defaults are evaluated in
    the global scope."""
    names = [p.name for p in params]
    if len(e.args) > len(params):
        raise cx.err(TypeErr, f"{what} '{name}' takes {len(params)} argument"
                     f"{'s' if len(params) != 1 else ''}, got {len(e.args)}", e.span)
    bound: dict[str, Any] = {}
    for p, a in zip(params, e.args):
        bound[p.name] = expressions.ev(cx, a, scope)
    for k in e.kwargs:
        if k.name not in names:
            raise cx.err(NameErr, f"{what} '{name}' has no argument '{k.name}'"
                         + did_you_mean(k.name, names), k.span)
        if k.name in bound:
            raise cx.err(TypeErr, f"argument '{k.name}' given twice", k.span)
        bound[k.name] = expressions.ev(cx, k.value, scope)
    for p in params:
        if p.name not in bound:
            if p.default is None:
                raise cx.err(TypeErr, f"{what} '{name}' is missing argument '{p.name}'",
                             e.span)
            bound[p.name] = expressions.ev(cx, p.default, cx.globals)
        else:
            span = next((k.span for k in e.kwargs if k.name == p.name), e.span)
            check_kind_of_default(cx, p, bound[p.name], span, name)
    return bound


def check_kind_of_default(cx: Context, p: A.Param, value: Any, span: A.Span,
                          owner: str) -> None:
    """An argument whose default is true/false or a string takes a value of that kind
    (`bias = "yes"` is an error, not a true condition). Numeric defaults take more than
    numbers (tensors for schedules, pairs, "same"), so they are left to the body."""
    d = p.default
    if isinstance(d, A.Bool):
        ok, want = isinstance(value, bool | np.bool_), "true or false"
    elif isinstance(d, A.Str):
        ok, want = isinstance(value, str), f"a string such as {d.value!r}"
    else:
        return
    if not ok:
        raise cx.err(TypeErr, f"{owner}: '{p.name}' must be {want}, got {describe(value)}",
                     span)


def builtin_args(cx: Context, e: A.Call, scope: Scope, names: list[str],
                 defaults: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a call of a builtin, by name: positional, then keyword, then
    `defaults`; a missing one without a default is an error."""
    out = {}
    if len(e.args) > len(names):
        raise cx.err(TypeErr, f"{e.func}: takes at most {len(names)} arguments, got "
                     f"{len(e.args)}", e.span)
    for n, a in zip(names, e.args):
        out[n] = expressions.ev(cx, a, scope)
    for k in e.kwargs:
        if k.name not in names:
            raise cx.err(NameErr, f"{e.func}: unknown option '{k.name}'"
                         + did_you_mean(k.name, names), k.span)
        out[k.name] = expressions.ev(cx, k.value, scope)
    for n in names:
        if n not in out:
            if n not in defaults:
                raise cx.err(TypeErr, f"{e.func}: missing argument '{n}'", e.span)
            out[n] = defaults[n]
    return out


def call_def(cx: Context, d: A.NetDef, e: A.Call, scope: Scope, statement: bool = False) -> Any:
    """Expand a net or def at a call; `statement`: the call's value is dropped. A def's
    weights are named after its call site (`dense2.`), a net's after the net (shared)."""
    bound = bind_args(cx, d.params, e, scope, d.kind, d.name)
    if d.kind == "def":
        site = scope.sites.get(id(e), d.name)
        prefix = scope.prefix + site + "."
    else:
        prefix = scope.prefix + d.name + "."
    inner = Scope(cx.globals, prefix, cx.sites.of(d.body))
    inner.vars.update(bound)
    if len(cx.calls.stack) >= MAX_DEPTH:
        raise cx.err(TypeErr, f"calls nested more than {MAX_DEPTH} deep", e.span)
    saved = cx.span
    cx.calls.stack.append(d.name)
    try:
        statements.exec_body(cx, d.body, inner)
        result = None
    except statements.Return as r:
        result = r.value
    except DslError as ex:
        raise at_call_site(_positional_hint(ex, d, e, bound), d.name, e.span) from None
    finally:
        cx.calls.stack.pop()
        cx.span = saved
    if result is None and not statement:
        raise cx.err(TypeErr, f"{d.kind} '{d.name}' returns nothing, but its value is "
                     f"used here: end the body of '{d.name}' with 'return ...'", e.span,
                     notes=(f"'{d.name}' is defined at {d.span.file}:{d.span.line}:"
                            f"{d.span.col}",))
    return result


def _positional_hint(ex: DslError, d: A.NetDef, e: A.Call, bound: dict[str, Any]
                     ) -> DslError:
    """A note on a mistake inside a def when a positional argument gave a tensor to a
    parameter whose default is a number (`layer_norm(x, g, b)` binds g to eps)."""
    for k, (p, _a) in enumerate(zip(d.params, e.args)):
        if isinstance(p.default, A.Num) and isinstance(bound.get(p.name), Val):
            sig = ", ".join(q.name for q in d.params)
            note = (f"argument {k + 1} (a tensor) binds to '{p.name}', whose default is a "
                    f"number: {d.name}({sig}); pass tensors by name")
            return type(ex)(ex.message, ex.span, (*ex.notes, note))
    return ex


def at_call_site(ex: DslError, def_name: str, call: A.Span) -> DslError:
    """A mistake found inside a prelude def, moved to the user's call of that def (the
    prelude's own line goes into a note): users see their line, not the library's."""
    s = ex.span
    if s is None or s.file != "<prelude>" or call is None or call.file == "<prelude>":
        return ex
    note = f"raised inside the prelude's '{def_name}' at {s.file}:{s.line}:{s.col}"
    message = ex.message if ex.message.startswith(f"{def_name}:") else (
        f"{def_name}: {ex.message}")
    return type(ex)(message, call, (*ex.notes, note))
