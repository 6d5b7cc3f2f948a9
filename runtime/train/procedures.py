"""Running a procedure: a graph that is not a training step (a sampler, a filter), evaluated
once with the run's current variables.

The graph's inputs are the procedure's tensor arguments (and the program's inputs it reads,
from their defaults); its outputs are the values it returns. Its random draws come from their
own generator, seeded by the caller (`dslrun sample --seed`), so a sample is reproducible and
does not disturb the training generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from runtime.ir import Graph
from runtime.train.runner import Machine, Runner

__all__ = ["run_graph"]


def run_graph(machine: Machine, graph: Graph, feeds: Mapping[str, Any], seed: int,
              label: str) -> dict[str, np.ndarray]:
    """Every output of `graph` for these feeds, as host arrays (`label` names it in errors)."""
    names = list(graph.outputs)
    runner = Runner(machine, graph, names, False, label)
    plan = runner.plan(feeds)
    plan.rng = machine.backend.make_rng(int(seed))
    try:
        outs = plan.run(feeds)
    finally:
        plan.rng = machine.rng
    to_numpy = machine.backend.to_numpy
    return {n: np.array(to_numpy(v)) for n, v in zip(names, outs)}
