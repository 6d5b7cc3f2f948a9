"""The best evaluation so far: `keep_best` (write `best.npz` when a metric improves) and
`early_stop` (stop after `patience` evaluations without improvement).

Which way is better: objectives are minimized; a metric is maximized when its name reads like
an accuracy (acc, auc, f1, precision, recall, r2, score, iou, dice, top-k ...) and minimized
when it reads like a loss or an error (loss, err, mse, mae, rmse, nll, ...). Any other name
needs an explicit mode (`keep_best_mode = "min"` or `"max"`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from runtime.train.runner import TrainError

__all__ = ["BestTracker", "direction", "make_tracker"]

_MAXIMIZED = re.compile(r"acc|auc|f1|precision|recall|r2|score|iou|dice|top\d|hit|correct",
                        re.IGNORECASE)
_MINIMIZED = re.compile(r"loss|err|mse|mae|rmse|nll|cost|dist|regret|perplex|ppl|risk|bce"
                        r"|entropy|hinge|huber|diverg|kl", re.IGNORECASE)
MODES = ("min", "max")


def direction(name: str, kind: str) -> str | None:
    """"min" or "max" for an output `name` of `kind` ("objective" or "metric"); None when the
    name does not say (the user must give the mode)."""
    if kind == "objective":
        return "min"
    lo, hi = _MINIMIZED.search(name), _MAXIMIZED.search(name)
    if hi and not lo:
        return "max"
    if lo and not hi:
        return "min"
    return None


@dataclass
class BestTracker:
    """Tracks `metric` over evaluations. `keep`: best.npz is wanted; `patience`: evaluations
    without improvement before stopping (0: never)."""

    metric: str
    mode: str  # "min" | "max"
    keep: bool = False
    patience: int = 0
    best: float | None = None
    best_step: int | None = None
    bad: int = 0  # evaluations since the last improvement

    def observe(self, step: int, value: float) -> bool:
        """Record an evaluation; True when it improves on the best so far (a NaN never
        does)."""
        if math.isnan(value):
            better = False
        elif self.best is None:
            better = True
        else:
            better = value < self.best if self.mode == "min" else value > self.best
        if better:
            self.best, self.best_step, self.bad = float(value), step, 0
        else:
            self.bad += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad >= self.patience

    def state(self) -> dict[str, Any]:
        """The JSON-serializable state kept in checkpoints, so a resumed run goes on judging."""
        return {"metric": self.metric, "mode": self.mode, "best": self.best,
                "best_step": self.best_step, "bad": self.bad}

    def set_state(self, state: Any) -> None:
        """Restore `state()` when it tracked the same metric the same way (else start over)."""
        if not isinstance(state, dict) or state.get("metric") != self.metric \
                or state.get("mode") != self.mode:
            return
        best, step, bad = state.get("best"), state.get("best_step"), state.get("bad")
        if (best is None or isinstance(best, int | float)) and isinstance(bad, int):
            self.best = None if best is None else float(best)
            self.best_step = step if isinstance(step, int) else None
            self.bad = bad


def make_tracker(keep_best: str | None, mode: str | None, early_stop: int,
                 objectives: list[str], names: list[str]) -> BestTracker | None:
    """The tracker of the train settings keep_best, keep_best_mode and early_stop (None when
    neither keep_best nor early_stop is set): which metric (keep_best's, else the first
    objective) among the evaluation's `names`, and which way is better."""
    if not keep_best and not early_stop:
        return None
    metric = keep_best or (objectives[0] if objectives else None)
    if metric is None:
        raise TrainError("early_stop judges keep_best's metric or the first objective, "
                         "and this program has neither")
    if metric not in names:
        raise TrainError(f"keep_best names '{metric}', which is no objective or metric of "
                         f"this program (they are: {', '.join(names) or 'none'})")
    kind = "objective" if metric in objectives else "metric"
    mode = mode if keep_best else None
    if mode is not None and mode not in MODES:
        raise TrainError(f"keep_best_mode must be \"min\" or \"max\", not {mode!r}")
    mode = mode or direction(metric, kind)
    if mode is None:
        raise TrainError(f"cannot tell whether the metric '{metric}' is better low or high: "
                         "set keep_best_mode = \"min\" or \"max\"")
    return BestTracker(metric, mode, keep=bool(keep_best), patience=int(early_stop))
