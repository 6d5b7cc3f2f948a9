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

from runtime.ir import Graph, Role, TensorType


@dataclass
class Variable:
    """A parameter or state buffer: its type, initial value and how it may be selected.

    `initial` is an array, or a function that makes it: initial values are drawn on first use
    of `value`, so checking or printing a spec draws no weights."""

    name: str
    type: TensorType
    initial: np.ndarray | Callable[[], np.ndarray]
    role: Role  # Role.PARAM or Role.STATE
    trainable: bool = True
    kind: str = "weight"  # weight | bias | scale | buffer
    init: str = ""  # the init scheme as written, for `dslrun params`

    @property
    def value(self) -> np.ndarray:
        if callable(self.initial):
            self.initial = self.initial()
        return self.initial

    def fresh(self) -> np.ndarray:
        """A new array of the initial value, not kept by the variable: the one copy a trainer
        owns (drawn again from the same seed when not drawn yet)."""
        if callable(self.initial):
            return np.asarray(self.initial())
        return np.array(self.initial)

    @property
    def size(self) -> int:
        return math.prod(int(d) for d in self.type.shape)


def _doc(default: Any, text: str) -> Any:
    """A TrainSettings field with its description for `dslrun doc` (dsl/reference.py)."""
    return field(default=default, metadata={"doc": text})


@dataclass
class TrainSettings:
    """The `train { }` settings of a spec (the trainer's keyword arguments override them)."""

    batch: int | None = None
    epochs: int | None = _doc(None, "Train until this many passes over the training data are "
                              "done in total (counted from step 0). Give `epochs` or `steps`, "
                              "not both; without either, one epoch.")
    steps: int | None = _doc(None, "Train until step N in total (counted from step 0, so a "
                             "resumed run ends at the same step). Give `steps` or `epochs`, "
                             "not both; without either, one epoch.")
    seed: int = 0
    sampling: str = "shuffle"  # shuffle | with_replacement | sequential
    drop_last: bool = False
    eval_every: int = _doc(0, "Evaluate every N steps (on the valid split, else test, else "
                           "train). 0: at the end only, or about 20 times per run when "
                           "`validation`, `keep_best` or `early_stop` is set.")
    checkpoint_every: int = 0  # steps; 0 = at the end only
    log_every: int = _doc(0, "Write a metrics.csv row and a progress line every N steps. 0: "
                          "about 100 rows and 10 lines per run.")
    augment: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # B 6.1
    validation: float = _doc(0.0, "Hold out this fraction of the training data as the "
                             "`valid` split (seeded by `seed`, stratified by class); it is "
                             "not trained on.")
    keep_best: str | None = _doc(None, "Keep the checkpoint with the best evaluation of this "
                                 "objective or metric as best.npz (`keep_best = acc`).")
    keep_best_mode: str | None = _doc(None, '"min" or "max": which way keep_best is better '
                                      "(default: objectives and loss-like names min, "
                                      "accuracy-like names max).")
    early_stop: int = _doc(0, "Stop after this many evaluations without improvement of "
                           "keep_best's metric (else the first objective). 0: never.")
    clip_norm: float = _doc(0.0, "Rescale each optimizer's gradients so that their global "
                            "norm is at most this (as torch.nn.utils.clip_grad_norm_), before "
                            "weight decay; an optimizer's own clip_norm option wins. 0: off.")
    clip_value: float = _doc(0.0, "Clip each gradient entry to ±this (as "
                             "torch.nn.utils.clip_grad_value_), before clip_norm and weight "
                             "decay; an optimizer's own clip_value option wins. 0: off.")


@dataclass
class Phase:
    """One optimizer step: a graph whose updates write the variables it trains.

    `step` is the step graph before the passes and `grads` names its gradient nodes (parameter
    -> node id of the objective's gradient, before clipping and weight decay): the seam where
    data-parallel training (`runtime.train.distributed`) cuts the step in two."""

    name: str
    graph: Graph
    objective: str
    step: Graph | None = None
    grads: dict[str, int] = field(default_factory=dict)

    @property
    def lr_outputs(self) -> list[str]:
        """The outputs of kind "lr": the learning rates of its optimizer at the step."""
        return [n for n, k in self.graph.output_kinds.items() if k == "lr"]

    @property
    def fetched(self) -> list[str]:
        """What a training step reads back: the objective, then the learning rates."""
        return [self.objective, *self.lr_outputs]


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
                       if v.role == Role.PARAM and (v.trainable or not trainable_only)))
