"""A compiled program: what the language hands to the runtime.

`Program` bundles the graphs of one spec (an eval-mode forward graph and one training-step
graph per optimizer phase), the initial values of its variables, its inputs, data source and
train settings. The runtime trains, evaluates and checkpoints a Program without knowing the
language it came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.ir import Graph, TensorType


@dataclass
class Variable:
    """A parameter or state buffer: its type, initial value and how it may be selected.

    `initial` is an array, or a function that makes it: initial values are drawn on first use
    of `value`, so checking or printing a spec draws no weights."""

    name: str
    type: TensorType
    initial: np.ndarray | Callable[[], np.ndarray]
    role: str  # "param" | "state"
    trainable: bool = True
    kind: str = "weight"  # weight | bias | scale | buffer
    init: str = ""  # the init scheme as written, for `dslrun params`

    @property
    def value(self) -> np.ndarray:
        if callable(self.initial):
            self.initial = self.initial()
        return self.initial

    @property
    def size(self) -> int:
        return math.prod(int(d) for d in self.type.shape)


@dataclass
class TrainSettings:
    batch: int | None = None
    epochs: int | None = None
    steps: int | None = None
    seed: int = 0
    sampling: str = "shuffle"  # shuffle | with_replacement | sequential
    drop_last: bool = False
    eval_every: int = 0  # steps; 0 = at the end only
    checkpoint_every: int = 0  # steps; 0 = at the end only
    log_every: int = 0
    augment: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # B 6.1


@dataclass
class Phase:
    """One optimizer step: a graph whose updates write the variables it trains."""

    name: str
    graph: Graph
    objective: str


@dataclass
class Program:
    name: str
    forward: Graph  # eval mode: outputs = objectives, metrics and user outputs
    phases: list[Phase]  # training steps in order (one per optimizer, or one for all)
    variables: dict[str, Variable]
    inputs: dict[str, TensorType]
    input_defaults: dict[str, np.ndarray] = field(default_factory=dict)
    objectives: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    data: tuple[str, dict[str, Any]] | None = None
    train: TrainSettings = field(default_factory=TrainSettings)
    float_dtype: str = "f32"
    source: str = ""  # file the program came from
    meta: dict[str, Any] = field(default_factory=dict)

    def param_count(self, trainable_only: bool = False) -> int:
        return int(sum(v.size for v in self.variables.values()
                       if v.role == "param" and (v.trainable or not trainable_only)))
