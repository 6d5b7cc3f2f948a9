"""The state one lowering shares, in one `Context`: how to lower (mode, float dtype, seed,
`--set` overrides), what the program defines, the graph being built, what has been made so far
(`result.Made`) and where the walk is (the current span, the calls being expanded). Behaviour
lives in the other modules, as functions taking the context first.

Everything that emits goes through `cx.b` (and `cx.graph`), and the tables live in shared
sub-records, so a body can be lowered into a graph of its own (a procedure, a run-time loop's
body) by a shallow copy of the context with `graph = g` and `b = Builder(g)`: it declares into
the same program and emits into `g`. A `Val` emits into its own builder's graph, so values of
the enclosing graph that the body reads must be brought into `g` first.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from dsl import ast as A
from dsl.errors import DslError, ShapeErr
from dsl.lower.result import Made, Seed
from dsl.lower.scope import CallSites, Scope
from runtime.dtypes import DEFAULT_FLOAT, is_float
from runtime.ir import Graph, Loc
from runtime.ops import Builder, ShapeError


class Overrides:
    """`--set NAME=VALUE`: the values given, the names used so far and the consts they set."""

    def __init__(self, given: dict[str, Any]) -> None:
        self.given = given
        self.used: set[str] = set()
        self.applied: dict[str, Any] = {}  # const name -> its overridden value

    def note(self, *values: Any) -> str:
        """` (--set H=-4)` when a value came from an override, to say where it came from."""
        hits = [f"--set {k}={self.given[k]}" for k, v in self.applied.items()
                if not isinstance(v, bool) and isinstance(v, int | np.integer)
                and any(v == x for x in values)]
        return f" ({', '.join(hits)})" if hits else ""


class Definitions:
    """What the prelude and the spec define by name: nets and defs, optimizers, procedures."""

    def __init__(self) -> None:
        self.nets: dict[str, A.NetDef] = {}
        self.optimizers: dict[str, A.OptimizerDef] = {}
        self.procedures: dict[str, A.ProcedureDef] = {}
        self.user: set[str] = set()  # the names the spec (not the prelude) defines


class Calls:
    """The defs being expanded, innermost last, and whether the next call is a statement (its
    value is dropped, so it may return nothing)."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.statement = False


class Context:
    """One lowering's shared state; see the module docstring."""

    def __init__(self, mode: str, float_dtype: str, seed: Seed, overrides: Overrides,
                 defs: Definitions, graph: Graph,
                 load_data: Callable[[A.DataDecl], Any] | None = None,
                 dtype_forced: bool = False) -> None:
        self.mode = mode  # 'train' or 'eval'
        self.float_dtype = float_dtype
        self.dtype_forced = dtype_forced  # --dtype given: every float is float_dtype
        self.seed = seed
        self.overrides = overrides
        self.defs = defs
        self.graph = graph  # where nodes go: the program's graph, or a loop's body
        self.b = Builder(graph)
        self.root = self.b  # the program's graph: inputs, parameters and state live there
        self.loop: Any = None  # the run-time loop whose body is being lowered (a LoopFrame)
        self.made = Made()
        self.globals = Scope(None, "", {})
        self.sites = CallSites(defs.nets)
        self.load_data = load_data
        self.dataset: Any = None  # what load_data returned, once a `train.x` needed it
        self.span: A.Span | None = None  # the statement or expression being lowered
        self.calls = Calls()
        self.unroll_budget: int | None = None  # $DSLRUN_MAX_UNROLLED_NODES, read on first use

    def in_body(self, b: Builder, loop: Any) -> Context:
        """This context emitting into `b`'s graph (a loop's body): the same program, scopes
        and tables."""
        body = copy.copy(self)
        body.graph, body.b, body.loop = b.graph, b, loop
        return body

    def err(self, cls: type[DslError], msg: str, span: A.Span | None = None,
            notes: tuple[str, ...] = ()) -> DslError:
        """An error of class `cls` at `span`, or else where the walk is."""
        return cls(msg, span or self.span, notes)

    def loc(self, span: A.Span | None) -> Loc | None:
        """The graph location of a source span."""
        return Loc(span.file, span.line, span.col) if span and span.line > 0 else None

    def fdt(self, dtype: str | None) -> str:
        """The dtype of a declared type: an unannotated one (or the default float) is the
        program's float dtype; a written float dtype (`f64[3]`) is honored, unless `--dtype`
        was given, which makes every float the program's float dtype."""
        if dtype is None or dtype == DEFAULT_FLOAT or (is_float(dtype) and (
                self.dtype_forced or self.float_dtype == "f64")):
            return self.float_dtype
        return dtype

    @contextlib.contextmanager
    def guard(self, span: A.Span | None) -> Iterator[None]:
        """Emit at `span`; a runtime shape error becomes a spec error there."""
        try:
            with self.b.context(loc=self.loc(span)):
                yield
        except ShapeError as e:
            raise ShapeErr(str(e), span) from None
