"""The Python API: `dsl.compile(text)` and `dsl.load(path_or_name)` return a `Model`.

A Model wraps a compiled Program and a lazily created Trainer: `.fit()`, `.evaluate()`,
`model(**inputs)` (forward outputs), `.graph(stage)` (a networkx graph), `.graph_text(stage)`,
`.graph_view(stage)` (text, DOT and a Graphviz picture; a notebook shows it, and shows a Model
as what `dslrun check` prints),
`.params` (name -> array), `.save(path)` / `.load(path)` / `.init_from(path)`, and
`.start_run()`: a run directory (`runtime.train.runs`) with `run.json` (the spec's overrides,
seed, dtype, versions) and a snapshot of the spec, where `fit` writes its checkpoints and
`metrics.csv`.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dsl.compiler import DTYPE_NAMES, Compiled, compile_file, compile_spec, load_program_data
from dsl.data_check import check_data, missing_input
from dsl.errors import DslError
from dsl.procedures import ProcedureGraph, signature
from runtime.train.data import Dataset
from runtime.train.loop import FitResult, Trainer
from runtime.train.runner import MissingInput
from runtime.train.runs import RunDir, new_run, open_run, versions
from runtime.train.weights import WeightMatch

if TYPE_CHECKING:
    import networkx as nx

    from dsl.render import GraphView



@dataclass
class Origin:
    """Where a Model came from, as `run.json` records it: the spec as named (a path, a shipped
    spec's name or "<string>"), the file the compiler read, its text, and how it was compiled
    (overrides as given, dtype, seed)."""

    spec: str
    file: str
    text: str
    overrides: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None  # None: no --dtype (f32, and the dtypes the spec writes)
    seed: int | None = None


def spec_files(text: str, file: str) -> tuple[dict[str, str], list[str]]:
    """The spec snapshot of a run: `spec.dl` (the text) and each included file (recursively)
    under its path relative to the spec's directory, or `includes/NAME` when that path leaves
    it; and notes on what could not be copied."""
    from dsl import ast as A
    from dsl.cache import parse_cached

    base = Path(file).parent if file != "<string>" else Path.cwd()
    files, notes = {"spec.dl": text}, []
    todo = [(text, file, base)]
    seen: set[Path] = set()
    while todo:
        src, name, where = todo.pop()
        try:
            body = parse_cached(src, name).body
        except DslError:
            break
        for st in body:
            if not isinstance(st, A.Include):
                continue
            target = (where / st.path).resolve()
            if target in seen:
                continue
            seen.add(target)
            try:
                inc = target.read_text()
            except (OSError, UnicodeDecodeError) as e:
                notes.append(f"include {st.path}: not copied ({e})")
                continue
            rel = os.path.relpath(target, base.resolve())
            if rel.startswith("..") or os.path.isabs(rel) or rel == "spec.dl":
                rel = f"includes/{target.name}"
                notes.append(f"include {st.path} is copied as {rel}")
            files[Path(rel).as_posix()] = inc
            todo.append((inc, str(target), target.parent))
    return files, notes


class Model:
    """One compiled spec, ready to train, evaluate and run."""

    origin: Origin | None = None  # set by `compile`/`load` (and the CLI), for run.json
    run_dir: RunDir | None = None  # set by `start_run`

    def __init__(self, compiled: Compiled, backend: str = "numpy",
                 out_dir: str | Path | None = None,
                 data: Dataset | Mapping[str, Any] | None = None, **settings: Any) -> None:
        """`data`: the arrays to train on (a Dataset, or a dict of train fields such as
        {"x": ..., "y": ...}) instead of the spec's `data` line."""
        self.compiled = compiled
        self.program = compiled.program
        self.backend = backend
        self.out_dir = out_dir
        self.settings = settings
        self._trainer: Trainer | None = None
        given = data is not None
        if data is None:
            data = compiled.dataset
        self._data = data if data is None or isinstance(data, Dataset) else Dataset(
            train={k: np.asarray(v) for k, v in data.items()})
        if given:
            check_data(self.program, self._data, given=True)

    @property
    def dataset(self) -> Dataset | None:
        if self._data is None and self.program.data is not None:
            name, opts = self.program.data
            self._data = load_program_data(name, opts, self.program.meta.get("data_span"),
                                           self.program.float_dtype,
                                           self.settings.get("max_memory"))
        return self._data

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            try:
                self._trainer = Trainer(self.program, backend=self.backend,
                                        dataset=self.dataset, out_dir=self.out_dir,
                                        **self.settings)
            except MissingInput as e:
                raise missing_input(self.program, e) from None
        return self._trainer

    def fit(self, steps: int | None = None, epochs: int | None = None,
            batch: int | None = None, **kw: Any) -> FitResult:
        """Train; see `runtime.train.loop.Trainer.fit`. With an `out_dir` the first call
        starts the run there (`start_run`)."""
        if self.out_dir is not None and self.run_dir is None:
            self.start_run(self.out_dir)
        if self.run_dir is None:
            return self.trainer.fit(steps=steps, epochs=epochs, batch=batch, **kw)
        self.run_dir.lock()  # one process writes a run directory at a time
        try:
            return self.trainer.fit(steps=steps, epochs=epochs, batch=batch, **kw)
        finally:
            self.run_dir.unlock()

    @property
    def default_split(self) -> str:
        """The split `evaluate()` reports without one: test, else valid, else train."""
        have = self.trainer.evaluator.splits()
        return next(s for s in ("test", "valid", "train") if s in have)

    def evaluate(self, split: str | None = None, batch: int | None = None) -> dict[str, float]:
        """Objectives and metrics averaged over a split: "train", "valid" (held out by the
        `validation` setting) or "test"; None: `default_split`. A split the data does not
        have is an error saying how to get one."""
        return self.trainer.evaluate(split=split or self.default_split, batch=batch)

    def __call__(self, **inputs: Any) -> dict[str, np.ndarray]:
        """Forward outputs (objectives, metrics and outputs) for the given inputs."""
        return self.trainer.predict(inputs)

    def predict_mc(self, samples: int = 20, **inputs: Any) -> dict[str, tuple[np.ndarray,
                                                                              np.ndarray]]:
        """MC dropout (B 7, l. 2710): run the forward graph `samples` times with fresh masks
        (layers built with `dropout(..., mc = true)`); returns name -> (mean, variance)."""
        runs = [self.trainer.predict(inputs, seed=k) for k in range(samples)]
        return {n: (np.mean([r[n] for r in runs], axis=0), np.var([r[n] for r in runs], axis=0))
                for n in runs[0]}

    @property
    def procedures(self) -> dict[str, str]:
        """Name -> signature (`filter(y: f32[N], a = 0.9)`) of each procedure, in order."""
        return {n: signature(d) for n, d in self.compiled.procedures.items()}

    def procedure_graph(self, name: str | None = None, **args: Any) -> ProcedureGraph:
        """The procedure `name` (the only or first one when None) lowered for these
        arguments (`n=16`; a tensor argument takes an array)."""
        return self.compiled.procedure(name, args)

    def run(self, name: str | None = None, seed: int | None = None,
            **args: Any) -> dict[str, np.ndarray]:
        """Run a procedure with the current parameters, in evaluation mode: its returned
        values by name. Its random draws come from `seed` (default: the spec's seed)."""
        pg = self.procedure_graph(name, **args)
        seed = self.program.train.seed if seed is None else seed
        return self.trainer.run_graph(pg.graph, pg.feeds, seed, f"procedure '{pg.name}'")

    def graph(self, stage: str = "optimized", phase: int = 0) -> nx.DiGraph:
        return self.compiled.stages[stage][phase][1].to_networkx()

    def graph_text(self, stage: str = "optimized", locs: bool = False) -> str:
        return self.compiled.text(stage, locs=locs)

    def graph_view(self, stage: str = "optimized") -> GraphView:
        """The graphs of a stage as `dslrun graph` shows them: text (`str()`), DOT, and a
        Graphviz picture (`.svg()`, `.png()`, `.save(path)`), shown in a notebook."""
        from dsl.render import GraphView

        return GraphView(self.compiled, stage)

    def _repr_html_(self) -> str:
        """In a notebook: what `dslrun check` prints, as a table."""
        from dsl.summary import check_rows, rows_html

        return rows_html(f"model {self.program.name}", check_rows(self.compiled))

    @property
    def params(self) -> dict[str, np.ndarray]:
        if self._trainer is None:
            return {k: v.value.copy() for k, v in self.program.variables.items()
                    if v.role == "param"}
        values = self._trainer.get_variables()
        return {k: values[k] for k, v in self.program.variables.items() if v.role == "param"}

    def save(self, path: str | Path) -> Path:
        return self.trainer.save(path)

    def load(self, path: str | Path, weights_only: bool = False) -> dict[str, Any]:
        return self.trainer.load(path, weights_only=weights_only)

    def init_from(self, path: str | Path, strict: bool = False) -> WeightMatch:
        """Take the parameters of a checkpoint that fit (fine-tuning); `WeightMatch.summary()`
        says what was loaded and skipped. `strict`: all or an error."""
        return self.trainer.init_from(path, strict=strict)

    def start_run(self, out_dir: str | Path | None = None, root: str | Path = "runs",
                  **facts: Any) -> RunDir:
        """Start recording a run: `out_dir`, or a new `root/<model>/<run id>` (and
        `root/<model>/latest`). Writes `run.json` (spec, overrides, seed, dtype, settings,
        versions, and `facts` such as the command line) and the spec snapshot; a model
        restored from a checkpoint of the run in `out_dir` continues it (`run.json` gets a
        `resumes` entry). Checkpoints, best.npz and metrics.csv then go there."""
        trainer = self.trainer
        run = open_run(out_dir) if out_dir is not None else new_run(root, self.program.name)
        run.lock()  # before anything is written there; `fit` gives it back when it ends
        o = self.origin or _origin_of_source(self.program.source)
        digest = hashlib.sha256(o.text.encode()).hexdigest()
        old = run.info() if trainer.step > 0 else {}
        if old:
            old.setdefault("resumes", []).append(
                {"step": trainer.step, "started": _now(), "spec_changed":
                 old.get("spec_sha256") != digest, **facts})
            run.write_info(old)
        else:
            run.prepare_fresh()
            files, notes = spec_files(o.text, o.file) if o.text else ({}, [])
            settings = asdict(trainer.settings)
            run.write_info({
                "model": self.program.name, "run_id": run.id, "started": _now(),
                "spec": o.spec, "spec_file": o.file, "spec_sha256": digest,
                "snapshot": sorted(run.write_spec(files)), "snapshot_notes": notes,
                "overrides": dict(o.overrides), "seed": int(trainer.settings.seed),
                "dtype": o.dtype, "backend": trainer.backend.name, "settings": settings,
                "start_step": trainer.step, "versions": versions(), **facts})
        trainer.out_dir = self.out_dir = run.path
        self.run_dir = run
        return run


def _origin_of_source(file: str) -> Origin:
    """The Origin of a Model made from a Compiled directly: its source file, when readable."""
    try:
        text = Path(file).read_text() if file != "<string>" else ""
    except (OSError, UnicodeDecodeError):
        text = ""
    return Origin(file, file, text)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _warned(compiled: Compiled) -> Compiled:
    """The compiler's warnings go to Python's `warnings` (the CLI prints them itself)."""
    for w in compiled.warnings:
        warnings.warn(w, stacklevel=3)
    return compiled


def _options(dtype: str | None, overrides: dict[str, Any] | None,
             seed: int | None) -> dict[str, Any]:
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise DslError(f"dtype must be float32 or float64, got {dtype!r}")
    return {"dtype": DTYPE_NAMES[dtype] if dtype is not None else None,
            "overrides": overrides, "seed": seed}


def compile(text: str, *, file: str = "<string>", overrides: dict[str, Any] | None = None,
            dtype: str | None = None, seed: int | None = None, backend: str = "numpy",
            **settings: Any) -> Model:
    """Compile spec text into a Model (raises `dsl.errors.DslError` on mistakes)."""
    model = Model(_warned(compile_spec(text, file, **_options(dtype, overrides, seed),
                                       max_memory=settings.get("max_memory"))),
                  backend, **settings)
    model.origin = Origin(file, file, text, dict(overrides or {}), dtype, seed)
    return model


def load(path_or_name: str | Path, *, overrides: dict[str, Any] | None = None,
         dtype: str | None = None, seed: int | None = None, backend: str = "numpy",
         **settings: Any) -> Model:
    """Compile a spec file, or a shipped spec by name (`dsl.load("mlp_digits")`)."""
    model = Model(_warned(compile_file(str(path_or_name), **_options(dtype, overrides, seed),
                                       max_memory=settings.get("max_memory"))),
                  backend, **settings)
    model.origin = origin(str(path_or_name), overrides, dtype, seed)
    return model


def origin(spec: str, overrides: Mapping[str, Any] | None, dtype: str | None,
           seed: int | None) -> Origin:
    """The Origin of a spec file or shipped spec compiled with these options."""
    from dsl.compiler import display_path, read_spec, resolve_spec

    path = resolve_spec(spec)
    return Origin(spec, display_path(path), read_spec(path), dict(overrides or {}), dtype, seed)
