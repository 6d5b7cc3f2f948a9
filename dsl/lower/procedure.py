"""Lowering one procedure call into a graph of its own, in evaluation mode.

The spec's top level is walked first (nets, defs, consts and parameters exist as in the
program), then the procedure's body runs in a scope where its compile-time arguments are
values and its typed arguments (`x: f32[N]`) are inputs of the graph; the symbolic dims of
their types (`N`) name themselves, so `loop t in 0 .. N` runs over them. The graph's outputs
are what the body returns (`return a, b`: named after the returned variables), or, without a
`return`, the series its loops `emit`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dsl import ast as A
from dsl.errors import TypeErr
from dsl.lower import declarations, expressions, statements
from dsl.lower.program import statement_errors, walk
from dsl.lower.scope import Scope
from dsl.lower.values import to_val
from runtime.ir import Graph, TensorType
from runtime.ops import Val

__all__ = ["lower_procedure", "procedure_defaults"]


def procedure_defaults(stmts: tuple[A.Stmt, ...], prelude: tuple[A.Stmt, ...],
                       d: A.ProcedureDef, float_dtype: str,
                       overrides: Mapping[str, Any] | None,
                       data_loader: Callable[[A.DataDecl], Any] | None,
                       dtype_forced: bool = False) -> dict[str, Any]:
    """The values of `d`'s default arguments (they may name the spec's consts)."""
    cx = walk(stmts, prelude, "eval", float_dtype, 0, dict(overrides or {}), data_loader,
              dtype_forced)
    return {p.name: expressions.ev(cx, p.default, cx.globals) for p in d.params
            if p.default is not None and p.type is None}


def lower_procedure(stmts: tuple[A.Stmt, ...], prelude: tuple[A.Stmt, ...],
                    d: A.ProcedureDef, consts: Mapping[str, Any], float_dtype: str,
                    seed: int, overrides: Mapping[str, Any] | None,
                    data_loader: Callable[[A.DataDecl], Any] | None,
                    dtype_forced: bool = False) -> tuple[Graph, dict]:
    """(graph, {input name: type}) of `d` called with the compile-time `consts`; the graph's
    outputs are the returned values, in order."""
    cx = walk(stmts, prelude, "eval", float_dtype, seed, dict(overrides or {}), data_loader,
              dtype_forced)
    graph = cx.graph
    scope = Scope(cx.globals, "", cx.sites.of(d.body))
    scope.vars.update(consts)
    inputs: dict[str, TensorType] = {}
    for p in d.params:
        if p.type is None:
            continue
        t = declarations.eval_type(cx, p.type, scope, allow_symbols=True)
        nid = graph.add("input", (), {}, t, role="input", name=p.name, loc=cx.loc(p.span))
        inputs[p.name] = t
        scope.vars[p.name] = Val(cx.b, nid)
        for dim in t.shape:
            if isinstance(dim, str):
                scope.vars.setdefault(dim, dim)
    returned, ret = None, None
    cx.span = d.span
    try:
        with statement_errors(cx, d.span, body=True):
            statements.exec_body(cx, d.body, scope)
    except statements.Return as r:  # the `return` that ran (one inside an `if` too)
        returned, ret = r.value, r.stmt
    if returned is not None:
        values = list(returned) if isinstance(returned, tuple | list) else [returned]
        names = _names(ret.value if ret is not None else None, len(values))
        span = ret.span if ret is not None else d.span
    else:
        names = [n for n in _emitted(d.body) if scope.lookup(n)[0]]
        if not names:
            raise TypeErr(f"procedure '{d.name}' returns nothing and emits nothing", d.span)
        values = [scope.lookup(n)[1] for n in names]
        span = d.span
    graph.outputs = {}
    graph.output_kinds = {}
    graph.updates = {}
    for n, v in zip(names, values):
        val = to_val(cx, v, span)
        graph.outputs[n] = val.id
        graph.output_kinds[n] = "output"
    return graph, inputs


def _names(e: A.Expr | None, n: int) -> list[str]:
    """`return a, b` -> a, b; anything else -> result (result0, result1, ...)."""
    items = e.items if isinstance(e, A.TupleExpr) else (e,) if e is not None else ()
    names = [i.id if isinstance(i, A.Name) else None for i in items]
    if len(names) != n:
        names = [None] * n
    fallback = ["result"] if n == 1 else [f"result{k}" for k in range(n)]
    out = [nm or fb for nm, fb in zip(names, fallback)]
    return out if len(set(out)) == n else fallback


def _emitted(body: tuple[A.Stmt, ...]) -> list[str]:
    """The names the top-level loops of a body bind with `emit`, in order."""
    out: dict[str, None] = {}
    for s in body:
        if isinstance(s, A.Loop):
            for e in s.body:
                if isinstance(e, A.Emit):
                    name = e.name or (e.value.id if isinstance(e.value, A.Name) else None)
                    if name:
                        out[name] = None
    return list(out)
