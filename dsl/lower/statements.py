"""The statement walker: `exec_stmt` runs one statement of a body, dispatching on the AST type
through `STATEMENTS`. Owns assignments (unpacking, indexed targets, updates of state
variables), expression statements, `return`, the compile-time loops `for` and `repeat` (unrolled
within MAX_UNROLLED_NODES) and `if` on constants; `param`/`state` lines are
`declarations`; run-time loops and `emit` are `loops`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from dsl import ast as A
from dsl.errors import NameErr, ShapeErr, TypeErr, did_you_mean
from dsl.lower import declarations, expressions, loops
from dsl.lower.context import Context
from dsl.lower.scope import Scope
from dsl.lower.values import static_index, to_val
from runtime.ops import Val

MAX_UNROLLED_NODES = 200_000  # graph nodes a compile-time loop may unroll into, by default
UNROLL_ENV = "DSLRUN_MAX_UNROLLED_NODES"  # the budget's override
RESERVED = ("step", "epoch", "training")


class Return(Exception):
    """A `return` leaving the body of a def or net, with its value (and the statement, whose
    expression names a procedure's results)."""

    def __init__(self, value: Any, stmt: A.Return | None = None) -> None:
        self.value = value
        self.stmt = stmt


def exec_body(cx: Context, body: tuple[A.Stmt, ...], scope: Scope) -> None:
    """Run the statements of a body in order."""
    for s in body:
        exec_stmt(cx, s, scope)


def exec_stmt(cx: Context, s: A.Stmt, scope: Scope) -> None:
    """Run one statement in `scope` (what only the top level allows is an error here)."""
    cx.span = s.span
    rule = STATEMENTS.get(type(s), _top_level_only)
    rule(cx, s, scope)


def _expression(cx: Context, s: A.ExprStmt, scope: Scope) -> None:
    if not isinstance(s.value, A.Call):
        raise cx.err(TypeErr, "this expression has no effect (if a line break split "
                     "an expression, wrap it in parentheses)", s.span)
    cx.calls.statement = True  # its value is dropped: it may return nothing
    expressions.ev(cx, s.value, scope)


def _return(cx: Context, s: A.Return, scope: Scope) -> None:
    raise Return(expressions.ev(cx, s.value, scope), s)


def _param(cx: Context, s: A.ParamDecl, scope: Scope) -> None:
    if s.name in scope.vars:
        raise cx.err(NameErr, f"'{s.name}' is already defined in this scope", s.span)
    scope.vars[s.name] = declarations.declare_param(cx, s, scope)


def _state(cx: Context, s: A.StateDecl, scope: Scope) -> None:
    name = scope.prefix + s.name
    like = scope.optimizer_param()
    scope.vars[s.name] = declarations.declare_state(cx, name, s.type, s.init, scope, s.span,
                                                    like)
    scope.state_vars[s.name] = name


def _loop(cx: Context, s: A.For | A.Repeat, scope: Scope) -> None:
    """`for` shares the scope across iterations; `repeat` gives each iteration its own
    scope and weight prefix (`blocks.0.`), and the names it rebinds flow out."""
    start, stop = expressions.ev_int(cx, s.start, scope), expressions.ev_int(cx, s.stop, scope)
    rng = range(start, stop)
    if isinstance(s, A.For) and s.reverse:
        rng = range(stop - 1, start - 1, -1)
    before = len(cx.graph.nodes)
    for k, i in enumerate(rng):
        if k:
            check_unroll(cx, s, k, len(rng), len(cx.graph.nodes) - before)
        if isinstance(s, A.Repeat):
            inner = Scope(scope, f"{scope.prefix}{s.name}.{i}.", cx.sites.of(s.body))
            inner.vars[s.var] = i
            exec_body(cx, s.body, inner)
            for name, v in inner.vars.items():  # carried values flow out
                if name != s.var and scope.lookup(name)[0]:
                    scope.rebind(name, v)
        else:
            scope.vars[s.var] = i
            exec_body(cx, s.body, scope)


def _if(cx: Context, s: A.If, scope: Scope) -> None:
    cond = expressions.ev(cx, s.cond, scope)
    if isinstance(cond, Val):
        raise cx.err(TypeErr, "an 'if' condition must be a compile-time constant "
                     "(use where(cond, a, b) for tensors)", s.cond.span)
    exec_body(cx, s.body if cond else s.orelse, scope)


def _top_level_only(cx: Context, s: A.Stmt, scope: Scope) -> None:
    what = type(s).__name__.replace("Decl", "").replace("Def", "").lower()
    raise cx.err(TypeErr, f"'{what}' is only allowed at the top level of a spec", s.span)


def assign(cx: Context, s: A.Assign, scope: Scope) -> None:
    """`a = e`, `a, b = e`, `x[i] = e`; assigning a state variable (or `param` in an
    optimizer rule) records its update."""
    value = expressions.ev(cx, s.value, scope)
    if len(s.targets) > 1:
        if isinstance(value, Val) or not isinstance(value, (tuple, list)):
            raise cx.err(TypeErr, f"cannot unpack a single value into {len(s.targets)} "
                         "names", s.span)
        if len(value) != len(s.targets):
            raise cx.err(TypeErr, f"cannot unpack {len(value)} values into "
                         f"{len(s.targets)} names", s.span)
        values = list(value)
    else:
        values = [value]
    for t, v in zip(s.targets, values):
        if t.name in RESERVED:
            raise cx.err(NameErr, f"'{t.name}' is reserved", t.span)
        if t.index is not None:
            found, base = scope.lookup(t.name)
            if not found:
                raise cx.err(NameErr, f"unknown name '{t.name}'"
                             + did_you_mean(t.name, scope.names()), t.span)
            v = index_assign(cx, base, t.index, v, scope, t.span)
        var = scope.state_of(t.name)
        if var is not None:
            v = to_val(cx, v, t.span)
            old = cx.made.variables[var].type
            if v.type.shape != old.shape:
                raise cx.err(ShapeErr, f"update of '{var}' has shape {v.type} but the "
                             f"variable is {old}", s.span)
            if v.type.dtype != old.dtype:
                v = cx.b.emit("cast", v, dtype=old.dtype)
            cx.made.state_updates[var] = v.id
            scope.rebind(t.name, v)
        else:
            scope.vars[t.name] = v


def index_assign(cx: Context, base: Any, index: tuple, v: Any, scope: Scope,
                 span: A.Span) -> Val:
    """The value of `base` with `base[index] = v`: a one-hot blend for one tensor index,
    else `index_put` of a static index."""
    base = to_val(cx, base, span)
    items = [expressions.ev_index_item(cx, i, scope) for i in index]
    v = to_val(cx, v, span, like=base)
    if v.type.dtype != base.type.dtype:
        v = cx.b.emit("cast", v, dtype=base.type.dtype)
    if len(items) == 1 and isinstance(items[0], Val):  # x[i] = v with a tensor index i
        idx = items[0]
        n = base.shape[0]
        oh = cx.b.emit("one_hot", idx, depth=n, dtype=base.type.dtype)
        if base.type.rank > 1:
            oh = cx.b.emit("reshape", oh, shape=(n,) + (1,) * (base.type.rank - 1))
        old = cx.b.emit("take", base, idx, axis=0)
        return base + oh * (v - old)
    static = static_index(cx, items, span)
    with cx.guard(span):
        old = cx.b.emit("getitem", base, index=static)
        put = lambda x: cx.b.emit("index_put", x, index=static, shape=base.shape)
        if v.shape != old.shape:
            v = cx.b.emit("broadcast_to", v, shape=old.shape)
        return base - put(old) + put(v)


def max_unrolled_nodes() -> int:
    """The unroll budget: $DSLRUN_MAX_UNROLLED_NODES when set (a positive integer), else
    MAX_UNROLLED_NODES."""
    text = os.environ.get(UNROLL_ENV, "").strip()
    if not text:
        return MAX_UNROLLED_NODES
    if not text.isdigit() or int(text) < 1:
        raise TypeErr(f"{UNROLL_ENV}={text!r}: the unroll budget must be a positive integer "
                      "(a number of graph nodes)")
    return int(text)


def unroll_budget(cx: Context) -> int:
    """`max_unrolled_nodes` read once per lowering (at its first check), not per iteration."""
    if cx.unroll_budget is None:
        cx.unroll_budget = max_unrolled_nodes()
    return cx.unroll_budget


def check_unroll(cx: Context, s: A.For | A.Repeat, done: int, count: int, grown: int) -> None:
    """Refuse a compile-time loop whose unrolled graph would exceed the unroll budget
    (`unroll_budget`), judged from the iterations made so far (so the error comes after the
    first one)."""
    per = grown / done
    limit = unroll_budget(cx)
    if len(cx.graph.nodes) + per * (count - done) <= limit:
        return
    kw = "repeat" if isinstance(s, A.Repeat) else "for"
    shared = ("" if kw == "for" else
              " (its iterations share one set of weights, where each repetition of 'repeat' "
              "owns its own)")
    raise cx.err(
        ShapeErr, f"this '{kw}' runs {count} times and unrolls into about "
        f"{per * count:,.0f} graph nodes ({per:.0f} per iteration), more than the limit of "
        f"{limit:,}" + cx.overrides.note(count), s.span,
        notes=(f"compile-time loops are copied into the graph once per iteration; a run-time "
               f"'loop {s.var} in ...' compiles its body once and runs it {count} times"
               + shared + f", or use fewer iterations, or raise the limit with "
               f"{UNROLL_ENV}=N",))


STATEMENTS: dict[type, Callable[[Context, Any, Scope], None]] = {
    A.Assign: assign,
    A.ExprStmt: _expression,
    A.Return: _return,
    A.ParamDecl: _param,
    A.StateDecl: _state,
    A.For: _loop,
    A.Repeat: _loop,
    A.If: _if,
    A.Loop: loops.lower_loop,
    A.Emit: loops.emit,
}
