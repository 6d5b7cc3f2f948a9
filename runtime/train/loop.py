"""The training loop: run a Program's phases over mini-batches, evaluate, checkpoint, resume.

`Trainer(program, backend, dataset, seed, **settings)` owns the variables (one backend array
per program variable, shared by every plan, so an update made by one phase is visible to all),
the executor's random generator, the Batcher and a cache of compiled plans: one per (phase,
binding of symbolic dims), so a short last batch simply gets a plan of its own.

A training step feeds one batch (plus `program.input_defaults`, and `step` = the 1-based index
of the update being made and `epoch` = the 0-based epoch index) to every phase in order. Each
phase is run in two halves (`Plan.compute`, then `Plan.commit`): the objective is checked for
NaN/Inf before the update is written, so a diverging run stops with the variables of the last
good step and no snapshot is needed (programs with several phases copy the variables an
earlier phase updates, so a later phase's divergence can undo the earlier commit).

`fit(steps=..., epochs=...)` counts steps and epochs for the whole run from step 0, so a run
resumed from a checkpoint continues to the same total; `Trainer.load` restores variables (params
and state buffers such as optimizer moments), the step counter, the position in the data and
the generator, so 10 steps + save + load + 10 steps is bit-identical to 20 steps.

This module must not import `dsl`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends import Backend, get_backend
from runtime.errors import UserError
from runtime.ir import DTYPES, Graph, TensorType, attr_symbols
from runtime.plan import Plan
from runtime.program import Program, TrainSettings
from runtime.train.augment import apply as apply_augment
from runtime.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from runtime.train.data import Batcher, DataError, Dataset, load_dataset
from runtime.train.progress import Progress

__all__ = ["FitResult", "TrainError", "Trainer", "TrainingDiverged", "TrainingInterrupted"]

TRAINER_INPUTS = ("step", "epoch")
CHECKPOINT_NAME = "checkpoint.npz"


class TrainError(UserError):
    """A training run cannot proceed (a user-facing sentence)."""


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
    no step ran); `metrics[split][name]` is the evaluation at the end of the call."""

    losses: dict[str, list[float]]
    loss_first: float | None
    loss_final: float | None
    steps: int  # steps made by this call
    epochs: float  # epochs completed by the whole run (fractional within an epoch)
    seconds: float
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    step: int = 0  # the run's step counter at the end
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    stopped: str = "done"  # done | callback | diverged | interrupted
    checkpoint: str | None = None  # the last checkpoint written by this call


def _as_backend(backend: str | Backend) -> Backend:
    return get_backend(backend) if isinstance(backend, str) else backend


def _data_seed(seed: int) -> int:
    """The Batcher's seed: a stream independent of the executor's generator (seeded `seed`)."""
    return int(np.random.SeedSequence([seed, 0xDA7A]).generate_state(1, np.uint32)[0])


def _eval_seed(seed: int) -> int:
    return int(np.random.SeedSequence([seed, 0xE7A1]).generate_state(1, np.uint32)[0])


def bind_dims(inputs: Iterable[tuple[str, TensorType]], feeds: Mapping[str, Any],
              label: str) -> dict[str, int]:
    """The symbolic dims bound by the arrays fed to `inputs` (of `label`, for messages);
    TrainError when an input is missing or a shape does not fit its type."""
    dims: dict[str, int] = {}
    where: dict[str, str] = {}
    for name, t in inputs:
        if name not in feeds:
            raise TrainError(f"{label} needs input '{name}' ({t}), but it is neither a "
                             "field of the data nor given a default value")
        shape = tuple(np.shape(feeds[name]))
        if len(shape) != t.rank:
            raise TrainError(f"input '{name}' of {label} has type {t}, but the fed "
                             f"array has shape {shape}")
        for d, s in zip(t.shape, shape):
            if isinstance(d, str):
                if d in dims and dims[d] != s:
                    raise TrainError(f"dimension {d} is {dims[d]} in input '{where[d]}' but "
                                     f"{s} in input '{name}' ({label})")
                dims.setdefault(d, int(s))
                where.setdefault(d, name)
            elif d != s:
                raise TrainError(f"input '{name}' of {label} has type {t}, but the fed "
                                 f"array has shape {shape}")
    return dims


class _Runner:
    """One graph with fixed outputs: its inputs, the dims they bind, and its plans by dims."""

    def __init__(self, trainer: Trainer, graph: Graph, outputs: list[str],
                 apply_updates: bool, label: str) -> None:
        self.trainer = trainer
        self.graph = graph
        self.outputs = outputs
        self.apply_updates = apply_updates
        self.label = label
        targets = [graph.outputs[n] for n in outputs]
        if apply_updates:
            targets += list(graph.updates.values())
        order = graph.topo_order(targets) if targets else []
        self.inputs: list[tuple[str, TensorType]] = [
            (graph[i].name, graph[i].type) for i in order if graph[i].op == "input"]
        # A dim the graph uses only through a shape (noise sized by shape(x)[0] in a phase
        # that does not read x) is bound by the program input that declares it.
        used = set().union(*(attr_symbols(graph[i].attrs) for i in order))
        used.update(d for i in order for d in graph[i].type.shape if isinstance(d, str))
        unbound = used.difference(*(t.shape for _, t in self.inputs))
        for name, t in trainer.program.inputs.items():
            if unbound.intersection(t.shape) and name not in TRAINER_INPUTS:
                self.inputs.append((name, t))
                unbound.difference_update(t.shape)
        self.keyed = [name for name, _ in self.inputs if name not in TRAINER_INPUTS]
        self.update_names = list(graph.updates) if apply_updates else []
        self.plans: dict[tuple[int, ...], Plan] = {}  # by the sizes of the symbolic dims
        self._backup: dict[str, Any] | None = None
        self._by_shapes: dict[tuple[Any, ...], Plan] = {}  # by the fed shapes, all checked

    def plan(self, feeds: Mapping[str, Any]) -> Plan:
        """The plan for the shapes of `feeds`; shapes not seen before are checked first."""
        try:
            key = tuple([feeds[n].shape for n in self.keyed])
        except (KeyError, AttributeError):  # missing, or not an array: `dims` says what
            key = tuple(np.shape(feeds[n]) if n in feeds else None for n in self.keyed)
        plan = self._by_shapes.get(key)
        if plan is None:
            dims = self.dims(feeds)
            plan = self.plans.get(tuple(dims.values()))
            if plan is None:
                tr = self.trainer
                plan = Plan(self.graph, dims, tr.backend, tr.variables, self.outputs,
                            apply_updates=self.apply_updates, rng=tr.rng)
                self.plans[tuple(dims.values())] = plan
            self._by_shapes[key] = plan
        return plan

    def backup(self, variables: Mapping[str, Any], xp: Any) -> dict[str, Any]:
        """Copies of the variables this graph updates, in buffers kept from step to step (a
        later phase that diverges restores them)."""
        if self._backup is None:
            self._backup = {n: xp.empty_like(variables[n]) for n in self.update_names}
        for n, buf in self._backup.items():
            xp.copyto(buf, variables[n])
        return self._backup

    def dims(self, feeds: Mapping[str, Any]) -> dict[str, int]:
        return bind_dims(self.inputs, feeds, self.label)


class Trainer:
    """Trains, evaluates, checkpoints and resumes one Program on one backend.

    `dataset`: a loaded `Dataset`, a dict of train arrays, or None to load `program.data` (a
    program without data trains full-batch on its defaults). `seed` and the keyword settings
    override `program.train`. `out_dir`: where `checkpoint.npz` is written (every
    `checkpoint_every` steps, at the end of `fit` and on Ctrl-C); None writes nothing.
    """

    def __init__(self, program: Program, backend: str | Backend = "numpy",
                 dataset: Dataset | Mapping[str, np.ndarray] | None = None,
                 seed: int | None = None, *, batch: int | None = None,
                 epochs: int | None = None, steps: int | None = None,
                 sampling: str | None = None, drop_last: bool | None = None,
                 eval_every: int | None = None, checkpoint_every: int | None = None,
                 log_every: int | None = None, out_dir: str | Path | None = None) -> None:
        self.program = program
        self.backend = _as_backend(backend)
        given = {"batch": batch, "epochs": epochs, "steps": steps, "sampling": sampling,
                 "drop_last": drop_last, "eval_every": eval_every,
                 "checkpoint_every": checkpoint_every, "log_every": log_every, "seed": seed}
        names = {f.name for f in fields(TrainSettings)}
        self.settings: TrainSettings = replace(
            program.train, **{k: v for k, v in given.items() if v is not None and k in names})
        s = self.settings
        if isinstance(s.seed, bool) or not isinstance(s.seed, int | np.integer) or s.seed < 0:
            raise TrainError(f"the seed must be a non-negative integer, not {s.seed!r}")
        for key in ("batch", "epochs", "steps"):
            v = getattr(s, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0
                                  or (key == "batch" and v == 0)):
                raise TrainError(f"the setting '{key}' must be a positive integer, not {v!r}")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.float_dtype = np.dtype(DTYPES[program.float_dtype])
        xp_asarray = self.backend.asarray
        self.variables: dict[str, Any] = {}
        for name, var in program.variables.items():
            dt = self.float_dtype if var.type.is_float else var.type.np_dtype()
            self.variables[name] = xp_asarray(np.array(var.value, dtype=dt))
        self.rng = self.backend.make_rng(int(s.seed))
        self.step = 0
        self._input_types: dict[str, TensorType] = dict(program.inputs)
        self._phases: list[_Runner] = []
        self._loss_keys: list[str] = []
        for ph in program.phases:
            if ph.objective not in ph.graph.outputs:
                raise TrainError(f"phase '{ph.name}' has no output named after its objective "
                                 f"'{ph.objective}'")
            t = ph.graph[ph.graph.outputs[ph.objective]].type
            if t.rank != 0 or not t.is_float:
                raise TrainError(f"objective '{ph.objective}' of phase '{ph.name}' must be a "
                                 f"float scalar, not {t}")
            r = _Runner(self, ph.graph, [ph.objective], True, f"phase '{ph.name}'")
            self._phases.append(r)
            key = ph.objective if ph.objective not in self._loss_keys else (
                f"{ph.objective}[{ph.name}]")
            self._loss_keys.append(key)
            for name, tp in r.inputs:
                self._input_types.setdefault(name, tp)
        self._defaults = {k: self._cast(k, v) for k, v in program.input_defaults.items()
                          if k not in TRAINER_INPUTS}
        self.dataset = self._resolve_dataset(dataset)
        self._train_arrays = self._data_fields(self.dataset.train) if self.dataset else None
        if self._train_arrays is not None and not self._train_arrays:
            self._train_arrays = None  # the phases use no data field: train on the defaults
        self._check_phase_inputs()
        self._batcher: Batcher | None = None
        self._batcher_batch: int | None = None
        self._fwd: dict[tuple[str, ...], _Runner] = {}
        self._fwd_needs: dict[str, frozenset[str]] | None = None
        self._sigint = False
        self._in_step = False

    # ------------------------------------------------------------------ setup helpers
    def _cast(self, name: str, value: Any) -> np.ndarray:
        arr = np.asarray(value)
        t = self._input_types.get(name)
        if t is None:
            return arr
        dt = t.np_dtype()  # declared f32 already follows the program dtype
        return arr.astype(dt, copy=False)

    def _resolve_dataset(self, dataset: Any) -> Dataset | None:
        if dataset is None:
            if self.program.data is None:
                return None
            name, options = self.program.data
            try:
                return load_dataset(name, options, self.program.float_dtype)
            except DataError as e:
                raise TrainError(str(e)) from e
        if isinstance(dataset, Dataset):
            return dataset
        if isinstance(dataset, Mapping):
            return Dataset(train={k: np.asarray(v) for k, v in dataset.items()})
        raise TrainError(f"dataset must be a Dataset or a dict of arrays, not "
                         f"{type(dataset).__name__}")

    def _data_fields(self, arrays: Mapping[str, np.ndarray] | None,
                     runners: list[_Runner] | None = None) -> dict[str, np.ndarray] | None:
        """The data fields the given graphs read (cast once to their input dtypes)."""
        if arrays is None:
            return None
        used = {n for r in (runners or self._phases) for n, _ in r.inputs}
        return {k: self._cast(k, v) for k, v in arrays.items()
                if k in used and k not in TRAINER_INPUTS}

    def _check_phase_inputs(self) -> None:
        have = set(self._defaults) | set(TRAINER_INPUTS) | set(self._train_arrays or ())
        for r in self._phases:
            for name, t in r.inputs:
                if name not in have:
                    src = "the data has no such field" if self.dataset else "there is no data"
                    raise TrainError(f"{r.label} needs input '{name}' ({t}), but {src} and it "
                                     "has no default value")

    def _make_batcher(self, b: int | None) -> Batcher:
        assert self._train_arrays is not None
        n = next(iter(self._train_arrays.values())).shape[0]
        sampling = self.settings.sampling
        if b is None and sampling == "shuffle":
            sampling = "sequential"  # a permuted full batch is the same batch
        try:
            return Batcher(self._train_arrays, n if b is None else b,
                           seed=_data_seed(int(self.settings.seed)), sampling=sampling,
                           drop_last=self.settings.drop_last)
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
    def epoch(self) -> float:
        """Epochs completed so far (fractional inside an epoch)."""
        b = self._batcher
        if b is None:
            return float(self.step) if self._train_arrays is None else 0.0
        return b.epochs_done + b.position / max(1, len(b))

    # ------------------------------------------------------------------ training
    def fit(self, steps: int | None = None, epochs: int | None = None,
            batch: int | None = None,
            on_step: Callable[[int, dict[str, float]], Any] | None = None,
            nan_check: bool = False, progress: Progress | None = None,
            final_eval: bool = True) -> FitResult:
        """Train until the run has made `steps` steps or completed `epochs` epochs in total
        (counted from step 0, including steps restored from a checkpoint); with neither, the
        program's settings (one epoch if they have neither either). A step feeds one batch to
        every phase in order; without data every step is one full-batch epoch.

        `on_step(step, losses)` runs after every step; returning True stops training.
        `nan_check`: run every node checked and let `NonFiniteError` name the first non-finite
        one. Raises TrainingDiverged on a NaN/Inf objective, TrainingInterrupted on Ctrl-C.
        """
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
        total = min(targets)
        s = self.settings
        ckpt_every = s.checkpoint_every if self.out_dir is not None else 0
        eval_every = s.eval_every
        start = self.step
        rec: list[list[float]] = [[] for _ in self._phases]
        evals: list[tuple[int, dict[str, float]]] = []
        cur = dict.fromkeys(self._loss_keys, math.nan)
        result_ckpt: list[Path] = []
        saved_at = [-1]

        def checkpoint() -> None:
            result_ckpt.append(self.save())
            saved_at[0] = self.step
        t0 = time.perf_counter()
        stopped = "done"

        def result() -> FitResult:
            losses = dict(zip(self._loss_keys, rec))
            first = rec[0] if rec else []
            return FitResult(
                losses=losses, loss_first=first[0] if first else None,
                loss_final=first[-1] if first else None, steps=self.step - start,
                epochs=self.epoch, seconds=time.perf_counter() - t0, step=self.step,
                evals=evals, stopped=stopped,
                checkpoint=str(result_ckpt[-1]) if result_ckpt else None)

        if progress is not None:
            progress.start(total, initial=min(start, total))
        self._sigint = False
        try:
            # NaN/Inf objectives are reported by TrainingDiverged, not by numpy warnings
            with self._sigint_guard(), np.errstate(over="ignore", invalid="ignore",
                                                   divide="ignore"):
                for _ in self._steps(batcher, total, rec, cur, nan_check):
                    st = self.step
                    if ckpt_every and st % ckpt_every == 0:
                        checkpoint()
                    if eval_every and st % eval_every == 0 and (st < total or not final_eval):
                        ev = self.evaluate(self._eval_split())
                        evals.append((st, ev))
                        if progress is not None:
                            progress.note(f"step {st}: " + ", ".join(
                                f"{k} {v:.4g}" for k, v in ev.items()))
                    if progress is not None:
                        progress.update(st, cur)
                    if on_step is not None and on_step(st, dict(cur)) is True:
                        stopped = "callback"
                        break
                    if self._sigint:
                        raise KeyboardInterrupt
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
            if progress is not None:
                progress.finish()
        if self.out_dir is not None and saved_at[0] != self.step:
            checkpoint()
        res = result()
        if final_eval:
            res.metrics = self.evaluate_all()
        res.seconds = time.perf_counter() - t0
        return res

    def _steps(self, batcher: Batcher | None, total: int, rec: list[list[float]],
               cur: dict[str, float], nan_check: bool) -> Iterator[None]:
        """Make steps until `self.step == total`, yielding after each one."""
        base = dict(self._defaults)
        phases = self._phases
        keys = self._loss_keys
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
                        v = float(plan.compute(feeds, nan_check)[0])
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
    def _eval_split(self) -> str:
        return "test" if self.dataset is not None and self.dataset.test is not None else "train"

    def _eval_names(self) -> list[str]:
        g = self.program.forward
        names = [n for n in g.outputs if g.output_kinds.get(n) in ("objective", "metric")]
        if not g.output_kinds:
            names = [n for n in (*self.program.objectives, *self.program.metrics)
                     if n in g.outputs]
        return names

    def _fwd_runner(self, outputs: tuple[str, ...]) -> _Runner:
        r = self._fwd.get(outputs)
        if r is None:
            r = _Runner(self, self.program.forward, list(outputs), False, "the forward graph")
            self._fwd[outputs] = r
        return r

    def _base_feeds(self) -> dict[str, Any]:
        feeds: dict[str, Any] = dict(self._defaults)
        feeds["step"] = float(self.step)
        feeds["epoch"] = float(int(self.epoch))
        return feeds

    def _run_eval(self, plan: Plan, feeds: Mapping[str, Any], rng: Any) -> list[Any]:
        plan.rng = rng
        try:
            return plan.run(feeds)
        finally:
            plan.rng = self.rng

    def evaluate(self, split: str = "test", batch: int | None = None) -> dict[str, float]:
        """Objectives and metrics of the forward graph (eval mode) on a data split, computed in
        batches and averaged weighted by batch size. User outputs are not included."""
        if split not in ("train", "test"):
            raise TrainError(f"split must be 'train' or 'test', not {split!r}")
        names = tuple(self._eval_names())
        if not names:
            return {}
        runner = self._fwd_runner(names)
        rng = self.backend.make_rng(_eval_seed(int(self.settings.seed)))
        base = self._base_feeds()
        if self.dataset is None:
            outs = self._run_eval(runner.plan(base), base, rng)
            return {n: float(np.mean(self.backend.to_numpy(v))) for n, v in zip(names, outs)}
        arrays = self.dataset.train if split == "train" else self.dataset.test
        if arrays is None:
            raise TrainError("there is no test split: the data set has no test part "
                             "(give it a test_fraction)")
        data = self._data_fields(arrays, [runner]) or {}
        if not data:
            outs = self._run_eval(runner.plan(base), base, rng)
            return {n: float(np.mean(self.backend.to_numpy(v))) for n, v in zip(names, outs)}
        n = int(next(iter(data.values())).shape[0])
        b = batch or self.settings.batch or n
        sums = np.zeros(len(names), dtype=np.float64)
        to_numpy = self.backend.to_numpy
        for lo in range(0, n, b):
            feeds = base.copy()
            for k, v in data.items():
                feeds[k] = v[lo:lo + b]
            m = min(b, n - lo)
            outs = self._run_eval(runner.plan(feeds), feeds, rng)
            for i, v in enumerate(outs):
                sums[i] += float(np.mean(to_numpy(v))) * m
        return {nm: float(sums[i] / n) for i, nm in enumerate(names)}

    def evaluate_all(self, batch: int | None = None) -> dict[str, dict[str, float]]:
        """`evaluate` on the train split and, when there is one, the test split."""
        out = {"train": self.evaluate("train", batch)}
        if self.dataset is not None and self.dataset.test is not None:
            out["test"] = self.evaluate("test", batch)
        return out

    def predict(self, inputs: Mapping[str, Any], outputs: list[str] | None = None,
                seed: int | None = None) -> dict[str, np.ndarray]:
        """Forward-graph (eval mode) outputs for `inputs` (missing inputs from the program's
        defaults). Without `outputs`, every output whose inputs are available is computed.
        `seed` picks the random draws of eval-mode random ops (MC dropout)."""
        g = self.program.forward
        feeds = self._base_feeds()
        feeds.update({k: self._cast(k, v) for k, v in inputs.items()})
        if self._fwd_needs is None:
            self._fwd_needs = {
                n: frozenset(g[i].name for i in g.topo_order([nid]) if g[i].op == "input")
                for n, nid in g.outputs.items()}
        if outputs is None:
            names = [n for n, need in self._fwd_needs.items() if need <= feeds.keys()]
            if not names:
                raise TrainError("no output of the forward graph can be computed from the "
                                 f"given inputs ({', '.join(sorted(inputs)) or 'none'})")
        else:
            names = list(outputs)
            for n in names:
                if n not in g.outputs:
                    raise TrainError(f"the forward graph has no output named '{n}'")
        runner = self._fwd_runner(tuple(names))
        rng = self.backend.make_rng(_eval_seed(int(self.settings.seed)) if seed is None
                                    else int(seed))
        outs = self._run_eval(runner.plan(feeds), feeds, rng)
        return {n: np.array(self.backend.to_numpy(v)) for n, v in zip(names, outs)}

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
                         "drop_last": s.drop_last},
            "variables": {k: {"role": v.role, "dtype": str(np.dtype(self.variables[k].dtype)),
                              "shape": list(self.variables[k].shape)}
                          for k, v in self.program.variables.items()},
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

    def load(self, path: str | Path, weights_only: bool = False) -> dict[str, Any]:
        """Restore a checkpoint. Fully (the default): every variable, the step counter, the
        position in the data and the random generator, so training continues exactly.
        `weights_only` (`--init-from`): the params only; state buffers (optimizer moments),
        the step counter, the data position and the generator are left as they are (fresh for
        a new Trainer). Nothing is changed when the checkpoint does not fit. Returns the meta.
        """
        saved, meta = load_checkpoint(path)
        batcher: Batcher | None = None
        b: int | None = None
        progvars = self.program.variables
        wanted = [k for k, v in progvars.items() if v.role == "param" or not weights_only]
        missing = [k for k in wanted if k not in saved]
        if missing:
            raise CheckpointError(f"checkpoint {path} has no variable '{missing[0]}', which "
                                  f"this program has ({len(missing)} missing in all)")
        saved_roles = {k: (v or {}).get("role") for k, v in
                       (meta.get("variables") or {}).items() if isinstance(v, dict)}
        extra = [k for k in saved if k not in progvars and
                 (not weights_only or saved_roles.get(k, "param") == "param")]
        if extra:
            raise CheckpointError(f"checkpoint {path} has a variable '{extra[0]}' that this "
                                  "program does not have; it was written by another program")
        for k in wanted:
            have, want = saved[k], self.variables[k]
            if tuple(have.shape) != tuple(want.shape) or have.dtype != np.dtype(want.dtype):
                raise CheckpointError(
                    f"variable '{k}' in checkpoint {path} is {have.dtype}{list(have.shape)}, "
                    f"but this program's is {np.dtype(want.dtype)}{list(want.shape)}")
        if not weights_only:
            step = meta.get("step")
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise CheckpointError(f"checkpoint {path} has no valid step counter")
            rng_state = meta.get("rng")
            if rng_state is not None:
                probe = self.backend.make_rng(0)
                try:
                    probe.bit_generator.state = rng_state
                except (AttributeError, TypeError, ValueError, KeyError) as e:
                    raise CheckpointError(f"checkpoint {path} has a random generator state "
                                          f"this backend cannot restore: {e}") from e
            data_state = meta.get("batcher")
            if data_state is not None and self._train_arrays is not None:
                b = (meta.get("settings") or {}).get("batch")
                if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
                    raise CheckpointError(f"checkpoint {path} has a malformed batch size")
                try:
                    batcher = self._make_batcher(b)
                    batcher.set_state(data_state)
                except (TrainError, DataError) as e:
                    raise CheckpointError(f"checkpoint {path} does not fit this run's data: "
                                          f"{e}") from e
        # everything fits: write
        copyto = self.backend.xp.copyto
        for k in wanted:
            copyto(self.variables[k], self.backend.asarray(saved[k]))
        if weights_only:
            return meta
        self.step = int(meta["step"])
        if meta.get("rng") is not None:
            self.rng.bit_generator.state = meta["rng"]
        if batcher is not None:
            self._batcher, self._batcher_batch = batcher, b
        elif self._train_arrays is not None:
            self._batcher, self._batcher_batch = None, None
        return meta
