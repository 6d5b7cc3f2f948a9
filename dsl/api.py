"""The Python API: `dsl.compile(text)` and `dsl.load(path_or_name)` return a `Model`.

A Model wraps a compiled Program and a lazily created Trainer: `.fit()`, `.evaluate()`,
`model(**inputs)` (forward outputs), `.graph(stage)` (a networkx graph), `.graph_text(stage)`,
`.params` (name -> array), `.save(path)` / `.load(path)`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dsl.compiler import DTYPE_NAMES, Compiled, compile_file, compile_spec, load_program_data
from dsl.data_check import check_data
from dsl.errors import DslError
from runtime.train.data import Dataset
from runtime.train.loop import FitResult, Trainer

if TYPE_CHECKING:
    import networkx as nx



class Model:
    """One compiled spec, ready to train, evaluate and run."""

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
                                           self.program.float_dtype)
        return self._data

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            self._trainer = Trainer(self.program, backend=self.backend, dataset=self.dataset,
                                    out_dir=self.out_dir, **self.settings)
        return self._trainer

    def fit(self, steps: int | None = None, epochs: int | None = None,
            batch: int | None = None, **kw: Any) -> FitResult:
        """Train; see `runtime.train.loop.Trainer.fit`."""
        return self.trainer.fit(steps=steps, epochs=epochs, batch=batch, **kw)

    def evaluate(self, split: str = "test", batch: int | None = None) -> dict[str, float]:
        """Objectives and metrics averaged over a split ('test' falls back to 'train')."""
        if split == "test" and (self.dataset is None or self.dataset.test is None):
            split = "train"
        return self.trainer.evaluate(split=split, batch=batch)

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

    def graph(self, stage: str = "optimized", phase: int = 0) -> nx.DiGraph:
        return self.compiled.stages[stage][phase][1].to_networkx()

    def graph_text(self, stage: str = "optimized", locs: bool = False) -> str:
        return self.compiled.text(stage, locs=locs)

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


def _warned(compiled: Compiled) -> Compiled:
    """The compiler's warnings go to Python's `warnings` (the CLI prints them itself)."""
    for w in compiled.warnings:
        warnings.warn(w, stacklevel=3)
    return compiled


def _options(dtype: str, overrides: dict[str, Any] | None, seed: int | None) -> dict[str, Any]:
    if dtype not in DTYPE_NAMES:
        raise DslError(f"dtype must be float32 or float64, got {dtype!r}")
    return {"dtype": DTYPE_NAMES[dtype], "overrides": overrides, "seed": seed}


def compile(text: str, *, file: str = "<string>", overrides: dict[str, Any] | None = None,
            dtype: str = "float32", seed: int | None = None, backend: str = "numpy",
            **settings: Any) -> Model:
    """Compile spec text into a Model (raises `dsl.errors.DslError` on mistakes)."""
    return Model(_warned(compile_spec(text, file, **_options(dtype, overrides, seed))), backend,
                 **settings)


def load(path_or_name: str | Path, *, overrides: dict[str, Any] | None = None,
         dtype: str = "float32", seed: int | None = None, backend: str = "numpy",
         **settings: Any) -> Model:
    """Compile a spec file, or a shipped spec by name (`dsl.load("mlp_digits")`)."""
    return Model(_warned(compile_file(str(path_or_name), **_options(dtype, overrides, seed))),
                 backend, **settings)
