"""Procedures: what a spec runs that is not a training step (a sampler, a filter).

`procedure NAME(args with defaults) { ... return ... }` is lowered on demand, in evaluation
mode, against the spec's nets and parameters: numeric, boolean and string arguments are
compile-time values (read strictly by the type of their default, like `--set`), arguments
declared with a type (`x: f32[T]`) are tensor inputs of the graph. A procedure returns the
values of its `return` (`return x` names the result after the variable; `return a, b` gives
several), or, without one, every series its loops `emit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsl import ast as A
from dsl.errors import NameErr, TypeErr, did_you_mean
from dsl.overrides import const_override
from dsl.printer import format_expr, format_type
from runtime.ir import Graph

__all__ = ["ProcedureGraph", "bind_arguments", "find", "procedure_graph", "signature"]


@dataclass(frozen=True)
class ProcedureGraph:
    """A lowered procedure: its graph (outputs = returned values, in order) and the arrays to
    feed its tensor arguments."""

    name: str
    graph: Graph
    feeds: dict[str, np.ndarray]


def signature(d: A.ProcedureDef) -> str:
    """`filter(x: f32[T], a = 0.9)`, as `dslrun check` lists it."""
    parts = []
    for p in d.params:
        text = p.name + (f": {format_type(p.type)}" if p.type is not None else "")
        parts.append(text + (f" = {format_expr(p.default)}" if p.default is not None else ""))
    return f"{d.name}({', '.join(parts)})"


def find(procedures: Mapping[str, A.ProcedureDef], name: str | None,
         model: str) -> A.ProcedureDef:
    """The procedure `name` (the only, or first declared, one when None); NameErr listing
    them otherwise."""
    listed = ", ".join(signature(d) for d in procedures.values()) or "none"
    if name is None:
        if not procedures:
            raise NameErr(f"{model} has no procedure to run (declare 'procedure NAME() "
                          "{ ... }')")
        return next(iter(procedures.values()))
    if name not in procedures:
        raise NameErr(f"{model} has no procedure '{name}'" + did_you_mean(name, procedures)
                      + f"; its procedures: {listed}")
    return procedures[name]


def bind_arguments(d: A.ProcedureDef, given: Mapping[str, Any], defaults: Mapping[str, Any],
                   require_tensors: bool = True
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(compile-time values, tensor arguments) of a call of `d` with `given` (text from the
    command line or Python values); `defaults` are the evaluated defaults by name. Without
    `require_tensors` (printing the graph) a tensor argument may be missing."""
    names = [p.name for p in d.params]
    for k in given:
        if k not in names:
            raise NameErr(f"procedure '{d.name}' has no argument '{k}'"
                          + did_you_mean(k, names) + f"; it takes: {signature(d)}", d.span)
    consts: dict[str, Any] = {}
    tensors: dict[str, np.ndarray] = {}
    for p in d.params:
        if p.type is not None:
            if p.name not in given and not require_tensors:
                continue
            if p.name not in given:
                raise TypeErr(f"procedure '{d.name}' needs argument '{p.name}' "
                              f"({format_type(p.type)})", p.span)
            tensors[p.name] = np.asarray(given[p.name])
        elif p.name in given:
            consts[p.name] = const_override(p.name, given[p.name], defaults[p.name], p.span,
                                            "argument")
        elif p.name in defaults:
            consts[p.name] = defaults[p.name]
        else:
            raise TypeErr(f"procedure '{d.name}' needs argument '{p.name}'", p.span)
    return consts, tensors


def procedure_graph(compiled: Any, name: str | None, given: Mapping[str, Any],
                    require_tensors: bool = True) -> ProcedureGraph:
    """Lower procedure `name` of a compiled spec for the arguments `given`, optimized."""
    from dsl.compiler import prelude
    from dsl.lower.procedure import lower_procedure, procedure_defaults
    from runtime.passes import run_pipeline

    src = compiled.source
    d = find(compiled.procedures, name, compiled.program.name)
    defaults = procedure_defaults(src.stmts, prelude(), d, src.float_dtype, src.overrides,
                                  src.load_data, dtype_forced=src.dtype_forced)
    consts, tensors = bind_arguments(d, given, defaults, require_tensors)
    graph, _inputs = lower_procedure(src.stmts, prelude(), d, consts, src.float_dtype,
                                     compiled.program.train.seed, src.overrides,
                                     src.load_data, dtype_forced=src.dtype_forced)
    return ProcedureGraph(d.name, run_pipeline(graph)[0], tensors)
