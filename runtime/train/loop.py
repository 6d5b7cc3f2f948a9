"""The training loop: run a Program's phases over mini-batches, log, checkpoint, resume.

`Trainer(program, backend, dataset, seed, **settings)` owns the variables (one backend array
per program variable, shared by every plan, so an update made by one phase is visible to all),
the executor's random generator, the Batcher and a `Runner` per phase (`runner.py`: one plan
per binding of symbolic dims, so a short last batch simply gets a plan of its own). Evaluation
is `evaluation.py`'s `Evaluator`; `metrics.csv` is `metrics_log.py`; `keep_best` and
`early_stop` are `best.py`; `--init-from` matching is `weights.py`.

A training step feeds one batch (plus `program.input_defaults`, and `step` = the 1-based index
of the update being made and `epoch` = the 0-based epoch index) to every phase in order. Each
phase is run in two halves (`Plan.compute`, then `Plan.commit`): the objective is checked for
NaN/Inf before the update is written, so a diverging run stops with the variables of the last
good step and no snapshot is needed (programs with several phases copy the variables an
earlier phase updates, so a later phase's divergence can undo the earlier commit). A phase's
graph may have outputs of kind "lr" (the learning rate of its optimizer at that step); they
are read with the objective and shown by the progress line and metrics.csv.

`fit(steps=..., epochs=...)` counts steps and epochs for the whole run from step 0, so a run
resumed from a checkpoint continues to the same total; `Trainer.load` restores variables (params
and state buffers such as optimizer moments), the step counter, the position in the data, the
generator and the best-so-far of keep_best/early_stop, so 10 steps + save + load + 10 steps is
bit-identical to 20 steps.

This module must not import `dsl`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends import Backend, get_backend
from runtime.dtypes import DTYPES
from runtime.ir import Graph
from runtime.plan import Plan
from runtime.program import Phase, Program, TrainSettings
from runtime.train.augment import apply as apply_augment
from runtime.train.best import make_tracker
from runtime.train.checkpoint import load_checkpoint, program_meta, save_checkpoint
from runtime.train.data import (
    Batcher,
    DataError,
    Dataset,
    check_sampling,
    load_dataset,
    split_validation,
)
from runtime.train.evaluation import Evaluator
from runtime.train.memory import MemoryEstimate, check_fits, estimate_training
from runtime.train.monitor import Monitor
from runtime.train.procedures import run_graph
from runtime.train.progress import Progress
from runtime.train.resume import check_match, check_restore
from runtime.train.runner import (
    TRAINER_INPUTS,
    Inputs,
    Machine,
    MissingInput,
    Runner,
    TrainError,
    bind_dims,
)
from runtime.train.runs import CHECKPOINT_NAME
from runtime.train.weights import WeightMatch, match_weights

__all__ = ["FitResult", "TrainError", "Trainer", "TrainingDiverged", "TrainingInterrupted",
           "bind_dims"]



class TrainingDiverged(TrainError):
    """An objective became NaN or Inf; the variables are those of the last good step."""

    def __init__(self, message: str, step: int, objective: str, value: float, phase: str,
                 result: FitResult | None = None) -> None:
        super().__init__(message)
        self.step, self.objective, self.value, self.phase = step, objective, value, phase
        self.result = result


class TrainingInterrupted(TrainError):
    """Ctrl-C stopped `fit`; `path` is the checkpoint written then (None if none was)."""

    def __init__(self, path: Path | None, step: int, result: FitResult | None = None) -> None:
        where = f"; checkpoint written to {path}" if path else "; no checkpoint written"
        super().__init__(f"training interrupted after step {step}{where}")
        self.path, self.step, self.result = path, step, result


@dataclass
class FitResult:
    """What one `fit` call did. `losses[objective]` has one float per step of this call;
    `loss_first`/`loss_final` are the first and last of the first phase's objective (None when
    no step ran); `metrics[split][name]` is the evaluation at the end of the call on every
    split there is data for ("train", and "valid" and "test" when present); `evals` the
    periodic evaluations (step, values) on `eval_split`."""

    losses: dict[str, list[float]]
    loss_first: float | None
    loss_final: float | None
    steps: int  # steps made by this call
    epochs: float  # epochs completed by the whole run (fractional within an epoch)
    seconds: float
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    step: int = 0  # the run's step counter at the end
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    stopped: str = "done"  # done | callback | early_stop | diverged | interrupted
    checkpoint: str | None = None  # the last checkpoint written by this call
    eval_split: str = "train"  # the split of `evals`, keep_best and early_stop
    lr: dict[str, float] = field(default_factory=dict)  # learning rates at the last step
    best: dict[str, Any] | None = None  # keep_best/early_stop: metric, mode, value, step, path


def _as_backend(backend: str | Backend) -> Backend:
    return get_backend(backend) if isinstance(backend, str) else backend


def _data_seed(seed: int) -> int:
    """The Batcher's seed: a stream independent of the executor's generator (seeded `seed`)."""
    return int(np.random.SeedSequence([seed, 0xDA7A]).generate_state(1, np.uint32)[0])


def _positive(key: str, v: Any, zero_ok: bool) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer)
                          or v < 0 or (v == 0 and not zero_ok)):
        raise TrainError(f"the setting '{key}' must be a "
                         f"{'non-negative' if zero_ok else 'positive'} integer, not {v!r}")


class Trainer:
    """Trains, checkpoints and resumes one Program on one backend (and evaluates it through
    its `Evaluator`).

    `dataset`: a loaded `Dataset`, a dict of train arrays, or None to load `program.data` (a
    program without data trains full-batch on its defaults). `seed` and the keyword settings
    override `program.train` (`steps` or `epochs` given here replaces both of the program's).
    `out_dir`: the run directory, where `checkpoint.npz` (every `checkpoint_every` steps, at
    the end of `fit` and on Ctrl-C), `best.npz`, `metrics.csv` and, unless `plots` is False,
    `curves.png` (at each checkpoint and the end of `fit`) are written; None writes nothing.
    """

    def __init__(self, program: Program, backend: str | Backend = "numpy",
                 dataset: Dataset | Mapping[str, np.ndarray] | None = None,
                 seed: int | None = None, *, batch: int | None = None,
                 epochs: int | None = None, steps: int | None = None,
                 sampling: str | None = None, drop_last: bool | None = None,
                 eval_every: int | None = None, checkpoint_every: int | None = None,
                 log_every: int | None = None, validation: float | None = None,
                 keep_best: str | None = None, keep_best_mode: str | None = None,
                 early_stop: int | None = None, out_dir: str | Path | None = None,
                 max_memory: int | None = None, plots: bool = True,
                 allocate: bool = True) -> None:
        self.program = program
        self.backend = _as_backend(backend)
        if steps is not None and epochs is not None:
            raise TrainError("give steps or epochs, not both")
        given = {"batch": batch, "epochs": epochs, "steps": steps, "sampling": sampling,
                 "drop_last": drop_last, "eval_every": eval_every,
                 "checkpoint_every": checkpoint_every, "log_every": log_every, "seed": seed,
                 "validation": validation, "keep_best": keep_best,
                 "keep_best_mode": keep_best_mode, "early_stop": early_stop}
        base = program.train
        if steps is not None or epochs is not None:  # one length replaces the program's
            base = replace(base, steps=steps, epochs=epochs)
        names = {f.name for f in fields(TrainSettings)}
        self.settings: TrainSettings = replace(
            base, **{k: v for k, v in given.items() if v is not None and k in names})
        s = self.settings
        if isinstance(s.seed, bool) or not isinstance(s.seed, int | np.integer) or s.seed < 0:
            raise TrainError(f"the seed must be a non-negative integer, not {s.seed!r}")
        _positive("batch", s.batch, zero_ok=False)
        for key in ("epochs", "steps", "eval_every", "checkpoint_every", "log_every",
                    "early_stop"):
            _positive(key, getattr(s, key), zero_ok=True)
        v = s.validation
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1:
            raise TrainError(f"the setting 'validation' must be a fraction of the training "
                             f"data from 0 to 1 (0.1: a tenth), not {v!r}")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.plots = plots
        self.float_dtype = np.dtype(DTYPES[program.float_dtype])
        self.variables: dict[str, Any] = {}  # made by _allocate, once the run is known to fit
        self.rng = self.backend.make_rng(int(s.seed))
        self.machine = Machine(program, self.backend, self.variables, self.rng)
        self.step = 0
        self._phases: list[Runner] = []
        self._loss_keys: list[str] = []
        self._lr_names: list[list[str]] = []  # per phase: its outputs of kind "lr"
        for ph in program.phases:
            if ph.objective not in ph.graph.outputs:
                raise TrainError(f"phase '{ph.name}' has no output named after its objective "
                                 f"'{ph.objective}'")
            t = ph.graph[ph.graph.outputs[ph.objective]].type
            if t.rank != 0 or not t.is_float:
                raise TrainError(f"objective '{ph.objective}' of phase '{ph.name}' must be a "
                                 f"float scalar, not {t}")
            r = Runner(self.machine, ph.graph, ph.fetched, True, f"phase '{ph.name}'")
            self._phases.append(r)
            self._lr_names.append(ph.lr_outputs)
            key = ph.objective if ph.objective not in self._loss_keys else (
                f"{ph.objective}[{ph.name}]")
            self._loss_keys.append(key)
        self.inputs = Inputs(program, self._phases)
        self._defaults = self.inputs.defaults
        self.dataset = self._resolve_dataset(dataset)
        self._train_arrays = (self.inputs.data_fields(self.dataset.train, self._phases)
                              if self.dataset else None)
        if self._train_arrays is not None and not self._train_arrays:
            self._train_arrays = None  # the phases use no data field: train on the defaults
        self._check_phase_inputs()
        if allocate:  # False: a trainer that only estimates (`dslrun check`)
            self._allocate(max_memory)
        self.evaluator = Evaluator(self.machine, self.inputs, self.dataset, int(s.seed), s.batch)
        self.tracker = make_tracker(s.keep_best, s.keep_best_mode, int(s.early_stop),
                                    self.program.objectives, self.evaluator.names())
        self._batcher: Batcher | None = None
        self._batcher_batch: int | None = None
        self.shard: tuple[int, int] | None = None  # (rank, size): `distributed.attach`
        self._sigint = False
        self._in_step = False

    # ------------------------------------------------------------------ setup helpers
    def _resolve_dataset(self, dataset: Any) -> Dataset | None:
        if dataset is None:
            if self.program.data is None:
                ds = None
            else:
                name, options = self.program.data
                try:
                    ds = load_dataset(name, options, self.program.float_dtype)
                except DataError as e:
                    raise TrainError(str(e)) from e
        elif isinstance(dataset, Dataset):
            ds = dataset
        elif isinstance(dataset, Mapping):
            ds = Dataset(train={k: np.asarray(v) for k, v in dataset.items()})
        else:
            raise TrainError(f"dataset must be a Dataset or a dict of arrays, not "
                             f"{type(dataset).__name__}")
        frac = float(self.settings.validation)
        if frac and ds is not None and ds.valid is None:
            try:
                ds = split_validation(ds, frac, int(self.settings.seed))
            except DataError as e:
                raise TrainError(str(e)) from e
        elif frac and ds is None:
            raise TrainError("validation needs data to hold out, but the program has none")
        if ds is not None:
            try:
                check_sampling(ds.info, self.settings.sampling)
            except DataError as e:
                raise TrainError(str(e)) from e
        return ds

    def estimate_memory(self) -> MemoryEstimate:
        """The bytes this run needs (`runtime.train.memory.estimate_training`)."""
        fwd = self.program.forward
        evaluation = Runner(self.machine, fwd, list(fwd.outputs), False, "evaluation")
        return estimate_training(self.program, self._phases, evaluation, self._train_arrays,
                                 self._defaults, self.dataset, self.settings.batch,
                                 bool(Plan.reuse_buffers) and self.backend.xp is np)

    def check_memory(self, max_memory: int | None = None) -> MemoryEstimate:
        """The estimate, or ResourceError (with it) when the run cannot fit."""
        est = self.estimate_memory()
        check_fits(est, f"training {self.program.name} "
                   f"({self.program.param_count():,} parameters)", max_memory,
                   resident=est.parts.get("data", 0))
        return est

    def _allocate(self, max_memory: int | None) -> None:
        """Check that the run fits (ResourceError, with the estimate), then make the
        variables, each in its declared dtype, from a fresh copy of its initial value."""
        self.check_memory(max_memory)
        xp_asarray = self.backend.asarray
        for name, var in self.program.variables.items():
            arr = var.fresh()
            self.variables[name] = xp_asarray(arr.astype(var.type.np_dtype(), copy=False))

    def _check_phase_inputs(self) -> None:
        have = set(self._defaults) | set(TRAINER_INPUTS) | set(self._train_arrays or ())
        for r in self._phases:
            for name, t in r.inputs:
                if name not in have:
                    src = "the data has no such field" if self.dataset else "there is no data"
                    raise MissingInput(f"{r.label} needs input '{name}' ({t}), but {src} and "
                                       "it has no default value", name)

    def _make_batcher(self, b: int | None) -> Batcher:
        assert self._train_arrays is not None
        n = next(iter(self._train_arrays.values())).shape[0]
        sampling = self.settings.sampling
        if b is None and sampling == "shuffle":
            sampling = "sequential"  # a permuted full batch is the same batch
        try:
            return Batcher(self._train_arrays, n if b is None else b,
                           seed=_data_seed(int(self.settings.seed)), sampling=sampling,
                           drop_last=self.settings.drop_last, shard=self.shard)
        except DataError as e:
            raise TrainError(str(e)) from e

    def _get_batcher(self, batch: int | None) -> Batcher | None:
        """The run's Batcher: kept across `fit` calls (and restored by `load`); a new one only
        when `fit` is given a batch size different from the current one."""
        if self._train_arrays is None:
            return None
        if self._batcher is not None and (batch is None or batch == self._batcher_batch):
            return self._batcher
        b = batch if batch is not None else self.settings.batch
        self._batcher, self._batcher_batch = self._make_batcher(b), b
        return self._batcher

    @property
    def phases(self) -> list[Runner]:
        """The runner of each training phase, in the program's order."""
        return list(self._phases)

    @property
    def data_fields(self) -> list[str]:
        """The fields of the training data the phases read (none: they train on defaults)."""
        return list(self._train_arrays or ())

    def distribute(self, shard: tuple[int, int],
                   wrap: Callable[[Runner, Phase, list[str]], Runner]) -> None:
        """Make this trainer rank `shard[0]` of `shard[1]` in a data-parallel run, before its
        first batch: its batcher keeps this rank's rows of every batch, and each phase runs
        through `wrap(runner, phase, its lr outputs)` (`runtime.train.distributed`)."""
        if self._batcher is not None:
            raise TrainError("a distributed run must be set up before training starts")
        self.shard = shard
        self._phases = [wrap(r, ph, lrs) for r, ph, lrs in
                        zip(self._phases, self.program.phases, self._lr_names)]

    @property
    def epoch(self) -> float:
        """Epochs completed so far (fractional inside an epoch)."""
        b = self._batcher
        if b is None:
            return float(self.step) if self._train_arrays is None else 0.0
        return b.epochs_done + b.position / max(1, len(b))

    @property
    def loss_keys(self) -> list[str]:
        """The objective of each phase, as FitResult.losses and metrics.csv name them."""
        return list(self._loss_keys)

    @property
    def lr_names(self) -> list[str]:
        """The learning-rate outputs of the phases (`lr`, or `lr.<objective>` ...)."""
        return [n for names in self._lr_names for n in names]

    # ------------------------------------------------------------------ training
    def target(self, steps: int | None = None, epochs: int | None = None,
               batch: int | None = None) -> int:
        """The step counter `fit(steps, epochs, batch)` trains up to (without training)."""
        return self._plan_run(steps, epochs, batch)[1]

    def steps_per_epoch(self, batch: int | None = None) -> int:
        """Batches in one epoch of the training data (1 without data)."""
        batcher = self._get_batcher(batch)
        return len(batcher) if batcher is not None else 1

    def _plan_run(self, steps: int | None, epochs: int | None,
                  batch: int | None) -> tuple[Batcher | None, int]:
        if steps is not None and epochs is not None:
            raise TrainError("give steps or epochs, not both")
        if steps is None and epochs is None:
            steps, epochs = self.settings.steps, self.settings.epochs
            if steps is None and epochs is None:
                epochs = 1
        for k, v in (("steps", steps), ("epochs", epochs), ("batch", batch)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0
                                  or (k == "batch" and v == 0)):
                raise TrainError(f"'{k}' must be a positive integer, not {v!r}")
        batcher = self._get_batcher(batch)
        per_epoch = len(batcher) if batcher is not None else 1
        targets = [t for t in (steps, None if epochs is None else epochs * per_epoch)
                   if t is not None]
        return batcher, min(targets)

    def fit(self, steps: int | None = None, epochs: int | None = None,
            batch: int | None = None,
            on_step: Callable[[int, dict[str, float]], Any] | None = None,
            nan_check: bool = False, progress: Progress | None = None,
            final_eval: bool = True, evaluate: bool = True) -> FitResult:
        """Train until the run has made `steps` steps or completed `epochs` epochs in total
        (counted from step 0, including steps restored from a checkpoint); with neither, the
        program's settings (one epoch if they have neither either). A step feeds one batch to
        every phase in order; without data every step is one full-batch epoch.

        Around the steps a `Monitor` logs `metrics.csv` rows and progress lines every
        `log_every` steps, evaluates every `eval_every` steps and applies keep_best and
        early_stop. `on_step(step, losses)` runs after every step; returning True stops
        training. `nan_check`: run every node checked and let `NonFiniteError` name the first
        non-finite one. `final_eval=False`: no evaluation at the end; `evaluate=False`: none
        at all (timing runs). Raises TrainingDiverged on a NaN/Inf objective,
        TrainingInterrupted on Ctrl-C.
        """
        batcher, total = self._plan_run(steps, epochs, batch)
        per_epoch = len(batcher) if batcher is not None else 1
        ckpt_every = self.settings.checkpoint_every if self.out_dir is not None else 0
        start = self.step
        rec: list[list[float]] = [[] for _ in self._phases]
        cur = dict.fromkeys(self._loss_keys, math.nan)
        lr: dict[str, float] = {}
        result_ckpt: list[Path] = []
        saved_at = [-1]
        t0 = time.perf_counter()
        stopped = "error"  # done | callback | early_stop | diverged | interrupted | error
        final_eval = final_eval and evaluate
        monitor = Monitor(self, total, per_epoch, progress, final_eval, evaluate)

        def checkpoint() -> None:
            result_ckpt.append(self.save())
            saved_at[0] = self.step

        def result() -> FitResult:
            losses = dict(zip(self._loss_keys, rec))
            first = rec[0] if rec else []
            return FitResult(
                losses=losses, loss_first=first[0] if first else None,
                loss_final=first[-1] if first else None, steps=self.step - start,
                epochs=self.epoch, seconds=time.perf_counter() - t0, step=self.step,
                evals=monitor.evals, stopped=stopped,
                checkpoint=str(result_ckpt[-1]) if result_ckpt else None,
                eval_split=monitor.split, lr=dict(lr), best=monitor.best())

        self._sigint = False
        try:
            # NaN/Inf objectives are reported by TrainingDiverged, not by numpy warnings
            with self._sigint_guard(), np.errstate(over="ignore", invalid="ignore",
                                                   divide="ignore"):
                for _ in self._steps(batcher, total, rec, cur, lr, nan_check):
                    st = self.step
                    if ckpt_every and st % ckpt_every == 0:
                        checkpoint()
                    if monitor.after_step(cur, lr):
                        stopped = "early_stop"
                        break
                    if on_step is not None and on_step(st, dict(cur)) is True:
                        stopped = "callback"
                        break
                    if self._sigint:
                        raise KeyboardInterrupt
                else:
                    stopped = "done"
        except TrainingDiverged as e:
            stopped = "diverged"
            e.result = result()
            raise
        except KeyboardInterrupt:
            # Between steps the state is consistent and is saved; a second Ctrl-C in the middle
            # of a step has rolled the variables back, but the data position and generator have
            # moved on, so no checkpoint is written then.
            stopped = "interrupted"
            path = None
            if not self._in_step and self.out_dir is not None:
                if saved_at[0] != self.step:
                    checkpoint()
                path = result_ckpt[-1]
            self._in_step = False
            raise TrainingInterrupted(path, self.step, result()) from None
        finally:
            self._in_step = False
            monitor.steps_done()
            if stopped in ("diverged", "interrupted", "error"):
                monitor.close()
                if stopped != "error":
                    monitor.draw(final=True)
        metrics: dict[str, dict[str, float]] = {}
        try:
            if final_eval:  # judged before the checkpoint, which keeps the tracker's state
                metrics = self.evaluate_all()
                monitor.finish(metrics)
        finally:
            monitor.close()
            if self.out_dir is not None and saved_at[0] != self.step:
                checkpoint()
            monitor.draw(final=True)
        res = result()
        res.metrics = metrics
        res.seconds = time.perf_counter() - t0
        return res

    def _steps(self, batcher: Batcher | None, total: int, rec: list[list[float]],
               cur: dict[str, float], lr: dict[str, float], nan_check: bool) -> Iterator[None]:
        """Make steps until `self.step == total`, yielding after each one."""
        base = dict(self._defaults)
        phases = self._phases
        keys = self._loss_keys
        lr_names = self._lr_names
        multi = len(phases) > 1
        xp = self.backend.xp
        variables = self.variables
        augment, seed = self.settings.augment, int(self.settings.seed)
        while self.step < total:
            if batcher is not None:
                epoch = float(batcher.epochs_done)
                batches: Any = batcher.epoch()
            else:
                epoch = float(self.step)
                batches = (None,)
            made = self.step
            for batch in batches:
                t = self.step + 1
                feeds = base.copy()
                if batch is not None:
                    if augment:
                        batch = apply_augment(batch, augment, seed, t)
                    feeds.update(batch)
                feeds["step"] = float(t)
                feeds["epoch"] = epoch
                self._in_step = True
                backups: list[dict[str, Any]] = []
                try:
                    for k, r in enumerate(phases):
                        plan = r.plan(feeds)
                        outs = plan.compute(feeds, nan_check)
                        v = float(outs[0])
                        if not math.isfinite(v):
                            self._restore(backups)
                            for j in range(k):
                                rec[j].pop()
                            ph = self.program.phases[k]
                            raise TrainingDiverged(
                                f"training diverged at step {t}: the objective "
                                f"'{ph.objective}' of phase '{ph.name}' is {v}; the variables "
                                f"are kept as they were after step {t - 1}",
                                t, ph.objective, v, ph.name)
                        if multi and k < len(phases) - 1 and r.update_names:
                            backups.append(r.backup(variables, xp))
                        plan.commit()
                        rec[k].append(v)
                        cur[keys[k]] = v
                        for name, value in zip(lr_names[k], outs[1:]):
                            lr[name] = float(value)
                except BaseException:
                    self._restore(backups)
                    raise
                self.step = t
                self._in_step = False
                yield
                if self.step >= total:
                    return
            if self.step == made:
                raise TrainError("an epoch of the data yields no batch")

    def _restore(self, backups: list[dict[str, Any]]) -> None:
        copyto = self.backend.xp.copyto
        while backups:
            for name, old in backups.pop().items():
                copyto(self.variables[name], old)

    @contextlib.contextmanager
    def _sigint_guard(self) -> Iterator[None]:
        """The first Ctrl-C sets a flag (the loop stops after the current step); a second one
        interrupts at once. Outside the main thread nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is None:
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._sigint:
                raise KeyboardInterrupt
            self._sigint = True

        try:
            signal.signal(signal.SIGINT, handler)
        except (ValueError, OSError):
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, split: str = "test", batch: int | None = None) -> dict[str, float]:
        """Objectives and metrics of the forward graph (eval mode) on a data split ("train",
        "valid" or "test"); see `Evaluator.evaluate`."""
        return self.evaluator.evaluate(split, batch, self.step, self.epoch)

    def evaluate_all(self, batch: int | None = None) -> dict[str, dict[str, float]]:
        """`evaluate` on the train split and, when there are, the valid and test splits."""
        return self.evaluator.evaluate_all(batch, self.step, self.epoch)

    def run_graph(self, graph: Graph, feeds: Mapping[str, Any], seed: int,
                  label: str) -> dict[str, np.ndarray]:
        """Run a graph that is not a step (a procedure) with the current variables."""
        base = {**self.inputs.defaults, **{k: self.inputs.cast(k, v) for k, v in feeds.items()}}
        base.update(step=float(self.step), epoch=float(int(self.epoch)))
        return run_graph(self.machine, graph, base, seed, label)

    def predict(self, inputs: Mapping[str, Any], outputs: list[str] | None = None,
                seed: int | None = None) -> dict[str, np.ndarray]:
        """Forward-graph (eval mode) outputs for `inputs`; see `Evaluator.predict`."""
        return self.evaluator.predict(inputs, outputs, seed, self.step, self.epoch)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None

    def get_variables(self) -> dict[str, np.ndarray]:
        """Host copies of every variable (params and state)."""
        return {k: np.array(self.backend.to_numpy(v)) for k, v in self.variables.items()}

    def _rng_state(self) -> Any:
        bg = getattr(self.rng, "bit_generator", None)
        try:
            return bg.state if bg is not None else None
        except (AttributeError, NotImplementedError, TypeError):
            return None

    def state_meta(self) -> dict[str, Any]:
        """The JSON-serializable run state stored next to the variables in a checkpoint."""
        b = self._batcher
        data_state = b.state() if b is not None else None
        s = self.settings
        return {
            "program": self.program.name,
            "source": self.program.source,
            "step": self.step,
            "epoch": self.epoch,
            "batcher": data_state,
            "rng": self._rng_state(),
            "backend": self.backend.name,
            "float_dtype": self.program.float_dtype,
            "settings": {"batch": self._batcher_batch if b is not None else s.batch,
                         "sampling": s.sampling, "seed": int(s.seed),
                         "drop_last": s.drop_last, "validation": float(s.validation)},
            "best": self.tracker.state() if self.tracker is not None else None,
            **program_meta(self.program),
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Write a checkpoint (default `out_dir/checkpoint.npz`); returns its path."""
        if path is None:
            path = self.checkpoint_path
            if path is None:
                raise TrainError("no checkpoint path: give a path or an out_dir")
        if self._in_step:
            raise TrainError("cannot save a checkpoint in the middle of a step")
        return save_checkpoint(path, self.get_variables(), self.state_meta())

    def init_from(self, path: str | Path, strict: bool = False) -> WeightMatch:
        """Load the parameters of a checkpoint that fit this program (`--init-from`): same
        name and shape (a float dtype is converted). State buffers (optimizer moments), the
        step counter, the data position and the generator are left as they are. `strict`:
        every parameter must be loaded and the checkpoint must have no other. Nothing is
        changed when it raises (CheckpointError). Returns what was loaded and skipped."""
        saved, meta = load_checkpoint(path)
        params = [k for k, v in self.program.variables.items() if v.role == "param"]
        m = match_weights(str(path), saved, meta, params, self.variables)
        check_match(path, m, strict)
        copyto = self.backend.xp.copyto
        for k, arr in m.load.items():
            copyto(self.variables[k], self.backend.asarray(arr))
        return m

    def load(self, path: str | Path, weights_only: bool = False) -> dict[str, Any]:
        """Restore a checkpoint. Fully (the default): every variable, the step counter, the
        position in the data, the random generator and the keep_best/early_stop state, so
        training continues exactly. `weights_only`: `init_from(path, strict=True)`. Nothing is
        changed when the checkpoint does not fit. Returns the checkpoint's meta.
        """
        if weights_only:
            self.init_from(path, strict=True)
            return load_checkpoint(path)[1]
        saved, meta = load_checkpoint(path)
        r = check_restore(path, saved, meta, self.program, self.variables, self.backend,
                          self._make_batcher if self._train_arrays is not None else None)
        # everything fits: write
        copyto = self.backend.xp.copyto
        for k, arr in r.variables.items():
            copyto(self.variables[k], self.backend.asarray(arr))
        self.step = r.step
        if r.rng is not None:
            self.rng.bit_generator.state = r.rng
        if r.batcher is not None:
            self._batcher, self._batcher_batch = r.batcher, r.batch
        elif self._train_arrays is not None:
            self._batcher, self._batcher_batch = None, None
        if self.tracker is not None:
            self.tracker.set_state(r.best)
        return meta
