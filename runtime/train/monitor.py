"""What a `fit` call does around its steps: log, evaluate, judge, report.

`Monitor.after_step` is called after every training step: every `log_every` steps it writes a
`metrics.csv` row (objectives averaged since the previous row, learning rates); every
`eval_every` steps it evaluates the selection split (valid, else test, else train), writes an
evaluation row, feeds keep_best/early_stop (`best.py`; an improvement with keep_best saves
`best.npz` in the run directory) and notes the result on the progress display.
`Monitor.finish` does the same for the final evaluation of every split. `Monitor.draw` draws
`curves.png` from metrics.csv (`pictures.py`): after the step of each checkpoint and at the end
of `fit`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.train.metrics_log import MetricsLog
from runtime.train.progress import Progress
from runtime.train.runs import BEST_NAME, CURVES_NAME, METRICS_NAME, RunDirError

if TYPE_CHECKING:
    from runtime.train.loop import Trainer

__all__ = ["BEST_NAME", "EVALS", "LOG_ROWS", "Monitor"]

LOG_ROWS = 100  # metrics.csv rows per run when log_every is not set
EVALS = 20  # evaluations per run when something needs them and eval_every is not set
# curves.png is redrawn at a checkpoint when the last drawing is DRAW_GAP times its own
# duration ago (at the end of a fit, always)
DRAW_GAP = 10


class Monitor:
    """Logging, periodic evaluation and keep_best/early_stop for one `fit` call of `trainer`
    that trains up to step `total`."""

    def __init__(self, trainer: Trainer, total: int, per_epoch: int,
                 progress: Progress | None, final_eval: bool, evaluate: bool = True) -> None:
        """`evaluate=False`: no periodic evaluations and no keep_best/early_stop (`bench`)."""
        self.trainer = trainer
        self.total = total
        self.progress = progress
        self.final_eval = final_eval
        s = trainer.settings
        out = trainer.out_dir
        self.log_every = int(s.log_every) or max(1, math.ceil(total / LOG_ROWS))
        self.eval_every = self._eval_interval(total, per_epoch) if evaluate else 0
        self.split = trainer.evaluator.selection_split()
        self.tracker = trainer.tracker if evaluate else None
        self.out = out
        self.evals: list[tuple[int, dict[str, float]]] = []
        self.stop_note: str | None = None
        self._judged_at = -1
        self._window = dict.fromkeys(trainer.loss_keys, 0.0)
        self._window_n = 0
        self._t0 = time.perf_counter()
        start = trainer.step
        if out is not None and start == 0 and self.tracker is not None:
            with contextlib.suppress(FileNotFoundError):
                (out / BEST_NAME).unlink()  # left by an earlier run in this directory
        columns = [*trainer.loss_keys, *trainer.evaluator.names(), *trainer.lr_names]
        digits = None if trainer.float_dtype.itemsize >= 8 else 7
        self.log = MetricsLog(out / METRICS_NAME, columns, resume_step=start,
                              digits=digits) if out is not None else None
        self.plots = out is not None and trainer.plots
        self._drawn: tuple[int, float] | None = None  # metrics.csv size, drawing seconds
        self._drawn_at = 0.0
        if progress is not None:
            progress.start(total, initial=min(start, total), every=s.log_every or None)

    def _eval_interval(self, total: int, per_epoch: int) -> int:
        """`eval_every`, or when validation data, keep_best or early_stop want evaluations
        and it is not set: about EVALS per run, at most one per epoch."""
        tr = self.trainer
        if tr.settings.eval_every:
            return int(tr.settings.eval_every)
        if tr.tracker is None and (tr.dataset is None or tr.dataset.valid is None):
            return 0
        return max(per_epoch, math.ceil(total / EVALS), 1)

    def _seconds(self) -> float:
        return time.perf_counter() - self._t0

    def after_step(self, losses: Mapping[str, float], lr: Mapping[str, float]) -> bool:
        """Log and evaluate after the trainer's current step; True when early_stop says to
        stop."""
        tr = self.trainer
        st = tr.step
        for k in self._window:
            self._window[k] += losses[k]
        self._window_n += 1
        if self.log is not None and (st % self.log_every == 0 or st == self.total):
            n = self._window_n
            self.log.step_row(st, tr.epoch, self._seconds(),
                              {**{k: v / n for k, v in self._window.items()}, **lr})
            self._window = dict.fromkeys(self._window, 0.0)
            self._window_n = 0
        stop = False
        if self.eval_every and st % self.eval_every == 0 and (
                st < self.total or not self.final_eval):
            ev = tr.evaluate(self.split)
            self.evals.append((st, ev))
            mark = self.judge(st, ev)
            if self.log is not None:
                self.log.eval_row(st, tr.epoch, self.split, self._seconds(), ev)
            self.note(f"step {st}: {self.split} " + ", ".join(
                f"{k} {v:.4g}" for k, v in ev.items()) + mark)
            if self.tracker is not None and self.tracker.should_stop:
                t = self.tracker
                self.stop_note = (f"early stop: {t.metric} on the {self.split} split has not "
                                  f"improved for {t.bad} evaluations (best {t.best:.4g} at "
                                  f"step {t.best_step})")
                self.note(self.stop_note)
                stop = True
        if self.progress is not None:
            self.progress.update(st, losses, epoch=tr.epoch, lr=lr)
        every = tr.settings.checkpoint_every
        if every and st % every == 0:
            self.draw()  # beside the checkpoint of this step, with its rows
        return stop

    def judge(self, step: int, values: Mapping[str, float]) -> str:
        """Feed an evaluation of the selection split to keep_best/early_stop (once per step);
        saves best.npz on an improvement. Returns a mark for the progress note."""
        t = self.tracker
        if t is None or self._judged_at == step or t.metric not in values:
            return ""
        self._judged_at = step
        if not t.observe(step, values[t.metric]):
            return ""
        if t.keep and self.out is not None:
            self.trainer.save(self.out / BEST_NAME)
        return " (best)" if t.keep else ""

    def finish(self, metrics: Mapping[str, Mapping[str, float]]) -> None:
        """The final evaluation (every split): judged and logged."""
        tr = self.trainer
        if self.split in metrics:
            self.judge(tr.step, metrics[self.split])
        if self.log is not None:
            done = self.split if self.evals and self.evals[-1][0] == tr.step else None
            for sp, ev in metrics.items():
                if sp != done:  # (an early stop has just evaluated it)
                    self.log.eval_row(tr.step, tr.epoch, sp, self._seconds(), ev)

    def note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.note(text)

    def steps_done(self) -> None:
        """The steps are over (finished, stopped or failed): end the progress display."""
        if self.progress is not None:
            self.progress.finish()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def draw(self, final: bool = False) -> None:
        """Draw `curves.png` in the run directory from its metrics.csv when pictures are on
        and rows were written since the last drawing. Before the end (`final` False), a
        drawing is skipped while the last one is recent (less than DRAW_GAP times its own
        duration ago): pictures then take at most about 1 / DRAW_GAP of a run's time."""
        if not self.plots:
            return
        from runtime.train.pictures import draw_curves

        csv = self.out / METRICS_NAME
        try:
            size = csv.stat().st_size
        except FileNotFoundError:
            return
        now = time.perf_counter()
        if self._drawn is not None and (self._drawn[0] == size or (
                not final and now - self._drawn_at < DRAW_GAP * self._drawn[1])):
            return
        p = self.trainer.program
        kinds = {**dict.fromkeys(p.objectives, "objective"),
                 **dict.fromkeys(p.metrics, "metric"),
                 **dict.fromkeys(self.trainer.lr_names, "learning rate")}
        kinds.update(dict.fromkeys(self.trainer.loss_keys, "objective"))
        try:
            draw_curves(csv, self.out / CURVES_NAME, f"{p.name}: run {self.out.name}", kinds)
        except RunDirError as e:  # a picture is never worth a run (or the error it ended with)
            self.plots = False
            self.note(f"{e}; no more pictures in this run")
            return
        self._drawn_at = time.perf_counter()
        self._drawn = (size, self._drawn_at - now)

    def best(self) -> dict[str, Any] | None:
        """keep_best/early_stop for FitResult: metric, mode, value, step, path of best.npz."""
        t = self.tracker
        if t is None:
            return None
        path: Path | None = self.out / BEST_NAME if t.keep and self.out is not None else None
        return {"metric": t.metric, "mode": t.mode, "value": t.best, "step": t.best_step,
                "split": self.split,
                "path": str(path) if path is not None and path.is_file() else None}
