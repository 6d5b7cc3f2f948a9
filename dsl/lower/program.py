"""The top level of a program: `lower` registers the definitions of the prelude and the spec,
walks the spec's statements in order (the spec-only lines through `TOP_LEVEL`, the rest as
statements of the global scope), checks that every `--set` was used, lowers the optimizers and
`update { }` blocks in train mode, and returns the `Lowered` record.

Procedures are registered here and handed over, not lowered, in `Lowered.procedures`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from dsl import ast as A
from dsl.errors import NameErr, TypeErr, did_you_mean
from dsl.lower import declarations, optimizers, settings, statements
from dsl.lower.context import Context, Definitions, Overrides
from dsl.lower.result import Lowered, Seed, freeze
from dsl.lower.scope import Scope
from runtime.ir import Graph

TRAIN_ONLY = (A.OptimizerUse, A.TrainDecl, A.UpdateBlock)


def lower(stmts: tuple[A.Stmt, ...], prelude: tuple[A.Stmt, ...], mode: str,
          float_dtype: str = "f32", seed: int = 0, overrides: dict[str, Any] | None = None,
          data_loader: Callable[[A.DataDecl], Any] | None = None,
          dtype_forced: bool = False) -> Lowered:
    """Lower one program (prelude + spec statements, includes spliced in) in one mode
    ('train' or 'eval'). `overrides`: `--set` values of consts and inputs; `data_loader`
    loads the data set when `train.x` or `test.y` is read; `dtype_forced`: every float is
    `float_dtype`, also where the spec writes another (`--dtype`)."""
    cx = walk(stmts, prelude, mode, float_dtype, seed, overrides, data_loader, dtype_forced)
    unused = set(cx.overrides.given) - cx.overrides.used
    if unused:
        name = sorted(unused)[0]
        consts = [s.name for s in stmts if isinstance(s, (A.ConstDecl, A.InputDecl))]
        raise NameErr(f"--set {name}: no const or input named '{name}'"
                      + did_you_mean(name, consts))
    if mode == "train":
        for use in cx.made.opt_uses:
            with statement_errors(cx, use.stmt.span):
                optimizers.lower(cx, use)
        for block in cx.made.update_blocks:
            with statement_errors(cx, block.span):
                statements.exec_body(cx, block.body, Scope(cx.globals, "", {}))
    return freeze(cx.made, mode, cx.b, cx.defs.procedures, cx.seed)


@contextlib.contextmanager
def statement_errors(cx: Context, span: A.Span, body: bool = False) -> Iterator[None]:
    """What lowering a statement at `span` may raise besides a DslError, as positioned
    errors: a `return` outside a body (`body`: a procedure's, where it passes through), and
    a recursion too deep (each level is within MAX_NESTING, but defs called in defs add
    up)."""
    try:
        yield
    except statements.Return as r:
        if body:
            raise
        raise cx.err(TypeErr, "'return' is only allowed in the body of a def, net or "
                     "procedure", r.stmt.span if r.stmt is not None else span) from None
    except RecursionError:
        raise cx.err(TypeErr, "this statement expands too deeply to compile: nets and defs "
                     "called inside one another, each with deeply nested expressions; give "
                     "intermediate values names", span) from None


def walk(stmts: tuple[A.Stmt, ...], prelude: tuple[A.Stmt, ...], mode: str,
         float_dtype: str = "f32", seed: int = 0, overrides: dict[str, Any] | None = None,
         data_loader: Callable[[A.DataDecl], Any] | None = None,
         dtype_forced: bool = False) -> Context:
    """The context after the spec's top level (definitions registered, statements walked):
    what `lower` finishes, and what a procedure is lowered in."""
    defs = Definitions()
    for stmt in prelude:
        define(defs, stmt, user=False)
    for stmt in stmts:
        define(defs, stmt, user=True)
    cx = Context(mode, float_dtype, Seed(seed), Overrides(dict(overrides or {})), defs, Graph(),
                 load_data=data_loader, dtype_forced=dtype_forced)
    cx.globals.sites = cx.sites.of(stmts)
    for stmt in stmts:
        top_level(cx, stmt)
    return cx


def define(defs: Definitions, stmt: A.Stmt, user: bool) -> None:
    """Register a def, net, optimizer or procedure. A spec may redefine a prelude def or
    optimizer, but not its own."""
    if isinstance(stmt, A.NetDef):
        if stmt.name in defs.nets and (user and stmt.name in defs.user or not user):
            raise NameErr(f"duplicate definition of '{stmt.name}'", stmt.span)
        defs.nets[stmt.name] = stmt
        if user:
            defs.user.add(stmt.name)
    elif isinstance(stmt, A.OptimizerDef):
        if stmt.name in defs.optimizers and user and stmt.name in defs.user:
            raise NameErr(f"duplicate definition of optimizer '{stmt.name}'", stmt.span)
        defs.optimizers[stmt.name] = stmt
        if user:
            defs.user.add(stmt.name)
    elif isinstance(stmt, A.ProcedureDef):
        if stmt.name in defs.procedures:
            raise NameErr(f"duplicate procedure '{stmt.name}'", stmt.span)
        defs.procedures[stmt.name] = stmt


def top_level(cx: Context, s: A.Stmt) -> None:
    """Lower one statement of the spec: a spec-only line through `TOP_LEVEL`, else as a
    statement of the global scope. Eval mode skips the training-only lines."""
    cx.span = s.span
    if isinstance(s, TRAIN_ONLY) and cx.mode != "train":
        return  # the train-mode lowering checks and uses them
    rule = TOP_LEVEL.get(type(s))
    with statement_errors(cx, s.span):  # `return` in the spec itself, or in its if/for/update
        if rule is None:
            statements.exec_stmt(cx, s, cx.globals)
        else:
            rule(cx, s)


def _model(cx: Context, s: A.ModelDecl) -> None:
    if cx.made.model_name is not None:
        raise cx.err(NameErr, "a spec has one 'model' line", s.span)
    cx.made.model_name = s.name


def _data(cx: Context, s: A.DataDecl) -> None:
    if cx.made.data_decl is not None:
        raise cx.err(NameErr, "a spec has one 'data' line", s.span)
    cx.made.data_decl = s


def _defined(cx: Context, s: A.NetDef | A.OptimizerDef | A.ProcedureDef | A.Include) -> None:
    """Registered before the walk (`define`); includes are spliced in by the compiler."""


def _optimizer_use(cx: Context, s: A.OptimizerUse) -> None:
    cx.made.opt_uses.append(optimizers.prepare(cx, s))


def _update_block(cx: Context, s: A.UpdateBlock) -> None:
    cx.made.update_blocks.append(s)


TOP_LEVEL: dict[type, Callable[[Context, Any], None]] = {
    A.ModelDecl: _model,
    A.DataDecl: _data,
    A.InputDecl: declarations.declare_input,
    A.ConstDecl: declarations.declare_const,
    A.NetDef: _defined,
    A.OptimizerDef: _defined,
    A.ProcedureDef: _defined,
    A.Include: _defined,
    A.ObjectiveDecl: declarations.declare_result,
    A.MetricDecl: declarations.declare_result,
    A.OutputDecl: declarations.declare_result,
    A.OptimizerUse: _optimizer_use,
    A.TrainDecl: settings.declare_train,
    A.UpdateBlock: _update_block,
}
