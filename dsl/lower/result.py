"""What lowering produces: `Lowered`, the frozen record the compiler reads, and `Made`, the
mutable record the walk fills in (declarations, results, optimizer uses, state updates, the
spec's model/data/train lines). `OptUse` (one `optimizer ... minimize ...`) and `Seed` (the
seed initial values are drawn from) are part of both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsl import ast as A
from dsl.errors import DslWarning
from runtime.ir import Graph, TensorType
from runtime.ops import Builder
from runtime.program import Variable


class Seed:
    """The seed of the variables' initial values. They are drawn on first use, after
    compiling, so the compiler may set it once it has read `train { seed = ... }` and
    `--seed`."""

    def __init__(self, value: int = 0) -> None:
        self.value = value


@dataclass(frozen=True, eq=False)
class OptUse:
    """A lowered `optimizer ... minimize ...` statement. In train mode `updates` and `grads`
    are filled in after the spec's statements: the optimizer's step needs them all."""

    stmt: A.OptimizerUse
    rule: str
    options: dict[str, Any]
    generic: dict[str, Any]
    objective: str
    names: tuple[str, ...]
    updates: dict[str, int] = field(default_factory=dict)  # variable name -> its new value
    grads: dict[str, int] = field(default_factory=dict)  # param name -> its gradient node


class Made:
    """What the walk has made so far, in declaration order (nodes are ids in the graph)."""

    def __init__(self) -> None:
        self.inputs: dict[str, TensorType] = {}
        self.input_nodes: dict[str, int] = {}
        self.input_defaults: dict[str, np.ndarray] = {}
        self.variables: dict[str, Variable] = {}
        self.var_node: dict[str, int] = {}
        self.state_updates: dict[str, int] = {}
        self.objectives: dict[str, int] = {}
        self.metrics: dict[str, int] = {}
        self.outputs: dict[str, int] = {}
        self.decl_spans: dict[str, A.Span] = {}
        self.opt_uses: list[OptUse] = []
        self.update_blocks: list[A.UpdateBlock] = []
        self.model_name: str | None = None
        self.data_decl: A.DataDecl | None = None
        self.train_decl: A.TrainDecl | None = None
        self.train_settings: dict[str, Any] = {}
        self.warnings: list[DslWarning] = []


@dataclass(frozen=True, eq=False)
class Lowered:
    """One program (prelude + spec) lowered in one mode ('train' or 'eval').

    `graph` holds every node: the forward computation and, in train mode, the gradients and
    update rules; `builder` emits into it (the compiler adds each learning rate as an output,
    sharing the rule's constants). Node values in the tables are ids in `graph`."""

    mode: str
    model_name: str | None
    graph: Graph
    builder: Builder
    inputs: Mapping[str, TensorType]
    input_defaults: Mapping[str, np.ndarray]
    variables: Mapping[str, Variable]
    objectives: Mapping[str, int]
    metrics: Mapping[str, int]
    outputs: Mapping[str, int]
    state_updates: Mapping[str, int]  # `update { }` blocks and assignments to state
    opt_uses: tuple[OptUse, ...]
    update_blocks: tuple[A.UpdateBlock, ...]
    procedures: Mapping[str, A.ProcedureDef]
    data_decl: A.DataDecl | None
    train_decl: A.TrainDecl | None
    train_settings: Mapping[str, Any]  # as written, checked by the compiler
    decl_spans: Mapping[str, A.Span]  # global name -> where it is declared
    warnings: tuple[DslWarning, ...]
    seed: Seed


def freeze(made: Made, mode: str, builder: Builder,
           procedures: Mapping[str, A.ProcedureDef], seed: Seed) -> Lowered:
    """The `Lowered` record of a finished walk."""
    return Lowered(
        mode=mode, model_name=made.model_name, graph=builder.graph, builder=builder,
        inputs=dict(made.inputs), input_defaults=dict(made.input_defaults),
        variables=dict(made.variables), objectives=dict(made.objectives),
        metrics=dict(made.metrics), outputs=dict(made.outputs),
        state_updates=dict(made.state_updates), opt_uses=tuple(made.opt_uses),
        update_blocks=tuple(made.update_blocks), procedures=dict(procedures),
        data_decl=made.data_decl, train_decl=made.train_decl,
        train_settings=dict(made.train_settings), decl_spans=dict(made.decl_spans),
        warnings=tuple(made.warnings), seed=seed,
    )
