"""Evaluation: the forward graph (eval mode) on a data split, and predictions.

`Evaluator.evaluate(split)` computes the objectives and metrics of the forward graph on the
"train", "valid" or "test" part of the data, in batches, averaged weighted by batch size;
`predict` computes any forward outputs from given inputs. Random ops in eval mode (MC dropout)
draw from a generator of their own, seeded from the run's seed, so evaluating never moves the
training generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from runtime.plan import Plan
from runtime.train.data import SPLITS, Dataset
from runtime.train.runner import Inputs, Machine, Runner, TrainError

__all__ = ["Evaluator", "eval_seed"]

_MISSING_SPLIT = {
    "test": "the data set has no test part (give it a test_fraction, e.g. "
            "data NAME(test_fraction = 0.2))",
    "valid": "the run holds out no validation data (set validation = 0.1 in train { })",
}


def eval_seed(seed: int) -> int:
    """The seed of the evaluation generator: a stream independent of the training one."""
    return int(np.random.SeedSequence([seed, 0xE7A1]).generate_state(1, np.uint32)[0])


class Evaluator:
    """Objectives and metrics of a Program's forward graph on the splits of its data."""

    def __init__(self, machine: Machine, inputs: Inputs, dataset: Dataset | None,
                 seed: int, batch: int | None) -> None:
        self.machine = machine
        self.inputs = inputs
        self.dataset = dataset
        self.seed = seed
        self.batch = batch
        self._runners: dict[tuple[str, ...], Runner] = {}
        self._needs: dict[str, frozenset[str]] | None = None

    # ------------------------------------------------------------------ splits
    def splits(self) -> list[str]:
        """The splits there is data for, in the order train, valid, test."""
        if self.dataset is None:
            return ["train"]
        return [s for s in SPLITS if self.dataset.split(s) is not None]

    def selection_split(self) -> str:
        """The split periodic evaluations, keep_best and early_stop judge on: valid when the
        run holds some out, else test when the data has one, else train."""
        have = self.splits()
        return next(s for s in ("valid", "test", "train") if s in have)

    def names(self) -> list[str]:
        """The objectives and metrics of the forward graph, in declaration order."""
        g = self.machine.program.forward
        names = [n for n in g.outputs if g.output_kinds.get(n) in ("objective", "metric")]
        if not g.output_kinds:
            p = self.machine.program
            names = [n for n in (*p.objectives, *p.metrics) if n in g.outputs]
        return names

    # ------------------------------------------------------------------ running
    def _runner(self, outputs: tuple[str, ...]) -> Runner:
        r = self._runners.get(outputs)
        if r is None:
            r = Runner(self.machine, self.machine.program.forward, list(outputs), False,
                       "the forward graph")
            self._runners[outputs] = r
        return r

    def _base(self, step: int, epoch: float) -> dict[str, Any]:
        feeds: dict[str, Any] = dict(self.inputs.defaults)
        feeds["step"] = float(step)
        feeds["epoch"] = float(int(epoch))
        return feeds

    def _run(self, plan: Plan, feeds: Mapping[str, Any], rng: Any) -> list[Any]:
        plan.rng = rng
        try:
            return plan.run(feeds)
        finally:
            plan.rng = self.machine.rng

    def _scalars(self, names: tuple[str, ...], outs: list[Any]) -> dict[str, float]:
        to_numpy = self.machine.backend.to_numpy
        return {n: float(np.mean(to_numpy(v))) for n, v in zip(names, outs)}

    def evaluate(self, split: str, batch: int | None = None, step: int = 0,
                 epoch: float = 0.0) -> dict[str, float]:
        """Objectives and metrics on a data split, computed in batches (default: the run's
        batch size) and averaged weighted by batch size. User outputs are not included.
        TrainError for a split the data does not have, saying how to get one."""
        if split not in SPLITS:
            raise TrainError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        names = tuple(self.names())
        if not names:
            return {}
        runner = self._runner(names)
        rng = self.machine.backend.make_rng(eval_seed(self.seed))
        base = self._base(step, epoch)
        if self.dataset is None:
            if split != "train":
                raise TrainError(f"there is no {split} split: the program has no data")
            return self._scalars(names, self._run(runner.plan(base), base, rng))
        arrays = self.dataset.split(split)
        if arrays is None:
            raise TrainError(f"there is no {split} split: {_MISSING_SPLIT[split]}")
        data = self.inputs.data_fields(arrays, [runner]) or {}
        if not data:
            return self._scalars(names, self._run(runner.plan(base), base, rng))
        n = int(next(iter(data.values())).shape[0])
        b = batch or self.batch or n
        sums = np.zeros(len(names), dtype=np.float64)
        to_numpy = self.machine.backend.to_numpy
        for lo in range(0, n, b):
            feeds = base.copy()
            for k, v in data.items():
                feeds[k] = v[lo:lo + b]
            m = min(b, n - lo)
            outs = self._run(runner.plan(feeds), feeds, rng)
            for i, v in enumerate(outs):
                sums[i] += float(np.mean(to_numpy(v))) * m
        return {nm: float(sums[i] / n) for i, nm in enumerate(names)}

    def evaluate_all(self, batch: int | None = None, step: int = 0,
                     epoch: float = 0.0) -> dict[str, dict[str, float]]:
        """`evaluate` on every split there is data for: train, and valid and test if any."""
        return {s: self.evaluate(s, batch, step, epoch) for s in self.splits()}

    def predict(self, inputs: Mapping[str, Any], outputs: list[str] | None = None,
                seed: int | None = None, step: int = 0,
                epoch: float = 0.0) -> dict[str, np.ndarray]:
        """Forward-graph (eval mode) outputs for `inputs` (missing inputs from the program's
        defaults). Without `outputs`, every output whose inputs are available is computed.
        `seed` picks the random draws of eval-mode random ops (MC dropout)."""
        g = self.machine.program.forward
        feeds = self._base(step, epoch)
        feeds.update({k: self.inputs.cast(k, v) for k, v in inputs.items()})
        if self._needs is None:
            self._needs = {
                n: frozenset(g[i].name for i in g.topo_order([nid]) if g[i].op == "input")
                for n, nid in g.outputs.items()}
        if outputs is None:
            names = [n for n, need in self._needs.items() if need <= feeds.keys()]
            if not names:
                raise TrainError("no output of the forward graph can be computed from the "
                                 f"given inputs ({', '.join(sorted(inputs)) or 'none'})")
        else:
            names = list(outputs)
            for n in names:
                if n not in g.outputs:
                    raise TrainError(f"the forward graph has no output named '{n}'")
        runner = self._runner(tuple(names))
        rng = self.machine.backend.make_rng(eval_seed(self.seed) if seed is None else int(seed))
        outs = self._run(runner.plan(feeds), feeds, rng)
        return {n: np.array(self.machine.backend.to_numpy(v)) for n, v in zip(names, outs)}
