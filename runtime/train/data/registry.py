"""The registry of data sets: `register` (a loader with its options and defaults), `Options`
(a loader's checked, typed view of the spec's options) and `load_dataset`, `check_dataset`,
`known_datasets`, `dataset_options`, `dataset_summary`.

A loader's docstring is its entry in the reference (`dslrun doc NAME`): it says what the set
holds and what each option does. Unknown data sets and unknown or ill-typed options raise
`DataError` with a did-you-mean. A name ending in `.csv`, `.npz` or `.txt` is a file path and
selects the loader `csv`, `npz` or `text`.

This module must not import `dsl`.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.dtypes import np_dtype, parse_dtype
from runtime.train.data.dataset import DataError, Dataset, n_samples

__all__ = ["Options", "check_dataset", "dataset_options", "dataset_summary", "did_you_mean",
           "known_datasets", "load_dataset", "register"]

_PRIVATE_OPTIONS = frozenset({"_base_dir"})
_FILE_SUFFIXES = {".csv": "csv", ".npz": "npz", ".txt": "text"}


class Options:
    """A loader's view of the user's options: checked names, typed accessors, defaults."""

    def __init__(self, dataset: str, given: Mapping[str, Any], defaults: Mapping[str, Any]):
        self.dataset = dataset
        self.given = dict(given)
        self.defaults = defaults

    def has(self, key: str) -> bool:
        """Whether the spec gave option `key` (rather than leaving its default)."""
        return key in self.given

    def _get(self, key: str) -> Any:
        assert key in self.defaults or key in _PRIVATE_OPTIONS, key
        return self.given.get(key, self.defaults.get(key))

    def bad(self, key: str, want: str, value: Any) -> DataError:
        """The error for option `key` holding `value` where `want` was needed."""
        return DataError(
            f"option '{key}' of data set '{self.dataset}' must be {want}, not {value!r}"
        )

    def raw(self, key: str) -> Any:
        return self._get(key)

    def as_int(self, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
        v = self._get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise self.bad(key, "an integer", v)
        if not isinstance(v, numbers.Integral):
            if not math.isfinite(float(v)) or float(v) != int(v):
                raise self.bad(key, "an integer", v)
        iv = int(v)
        if lo is not None and iv < lo:
            raise self.bad(key, f"an integer >= {lo}", v)
        if hi is not None and iv > hi:
            raise self.bad(key, f"an integer <= {hi}", v)
        return iv

    def as_float(
        self, key: str, lo: float | None = None, hi: float | None = None, hi_open: bool = False
    ) -> float | None:
        v = self._get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise self.bad(key, "a number", v)
        fv = float(v)
        if lo is not None and fv < lo:
            raise self.bad(key, f"a number >= {lo:g}", v)
        if hi is not None and (fv >= hi if hi_open else fv > hi):
            raise self.bad(key, f"a number {'<' if hi_open else '<='} {hi:g}", v)
        return fv

    def as_bool(self, key: str) -> bool | None:
        v = self._get(key)
        if v is None:
            return None
        if not isinstance(v, bool | np.bool_):
            raise self.bad(key, "true or false", v)
        return bool(v)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        v = self._get(key)
        if not isinstance(v, str) or v not in choices:
            want = "one of " + ", ".join(f'"{c}"' for c in choices)
            raise self.bad(key, want, v)
        return v

    def as_str(self, key: str) -> str | None:
        v = self._get(key)
        if v is None:
            return None
        if isinstance(v, os.PathLike):
            v = os.fspath(v)
        if not isinstance(v, str) or not v:
            raise self.bad(key, "a non-empty string", v)
        return v

    def n(self) -> int:
        """The option `n`, a number of samples."""
        n = self.as_int("n", 1, 10**8)
        assert n is not None
        return n

    def seed(self) -> int:
        s = self.as_int("seed", 0, 2**32 - 1)
        return 0 if s is None else s

    def test_fraction(self) -> float:
        f = self.as_float("test_fraction", 0.0, 1.0, hi_open=True)
        return 0.0 if f is None else f

    def labels(self) -> str:
        return self.choice("labels", ("01", "pm1"))


@dataclass(frozen=True)
class _Loader:
    name: str
    func: Callable[[Options, np.dtype], Dataset]
    defaults: Mapping[str, Any]


_LOADERS: dict[str, _Loader] = {}


def register(name: str, **defaults: Any) -> Callable[[Callable], Callable]:
    """Decorator: the loader of data set `name`, taking the options `defaults` (with their
    default values). The loader gets (Options, float dtype) and returns a Dataset."""

    def deco(func: Callable[[Options, np.dtype], Dataset]) -> Callable:
        _LOADERS[name] = _Loader(name, func, dict(defaults))
        return func

    return deco


def known_datasets() -> list[str]:
    """The names `load_dataset` accepts (besides paths ending in .csv, .npz or .txt)."""
    return sorted(_LOADERS)


def dataset_options(name: str) -> dict[str, Any]:
    """The options data set `name` takes, with their defaults (for the reference)."""
    return dict(_LOADERS[name].defaults)


def dataset_summary(name: str) -> str:
    """What data set `name` holds: its loader's docstring on one line."""
    return " ".join((_LOADERS[name].func.__doc__ or "").split())


def load_dataset(
    name: str, options: Mapping[str, Any] | None = None, dtype: Any = np.float32
) -> Dataset:
    """Load the data set `name` with the spec's `options`; floating point fields get `dtype`.

    Raises DataError for an unknown data set, an unknown or ill-typed option, or a bad file.
    """
    options = dict(options or {})
    try:
        dt = np_dtype(parse_dtype(dtype))
    except ValueError as e:
        raise DataError(f"data type {dtype!r} is not a floating point type") from e
    if dt.kind != "f":
        raise DataError(f"data type {dt} is not a floating point type")
    if not isinstance(name, str) or not name:
        raise DataError(f"a data set name must be a non-empty string, not {name!r}")

    display = name
    name, options, loader = _resolve(name, options)
    ds = loader.func(Options(name, options, loader.defaults), dt)
    ds.info.setdefault("name", display)
    ds.info["n_train"] = n_samples(ds.train)
    ds.info["n_test"] = 0 if ds.test is None else n_samples(ds.test)
    return ds


def check_dataset(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Check a data set's name and option names without loading anything (fast: no
    scikit-learn import). Values are checked when the data set is loaded."""
    if not isinstance(name, str) or not name:
        raise DataError(f"a data set name must be a non-empty string, not {name!r}")
    _resolve(name, dict(options or {}))


def _resolve(name: str, options: dict[str, Any]) -> tuple[str, dict[str, Any], _Loader]:
    suffix = os.path.splitext(name)[1].lower()
    if suffix in _FILE_SUFFIXES:
        if "path" in options:
            raise DataError(
                f"data set '{name}' is already a path, so the option 'path' is not allowed"
            )
        options["path"] = name
        name = _FILE_SUFFIXES[suffix]
    loader = _LOADERS.get(name)
    if loader is None:
        hint = did_you_mean(name, _LOADERS)
        raise DataError(
            f"unknown data set '{name}'{hint}; known data sets: {', '.join(known_datasets())}, "
            "or a file path ending in .csv, .npz or .txt"
        )
    for key in options:
        if not isinstance(key, str):
            raise DataError(f"option names of data set '{name}' must be strings, not {key!r}")
        if key not in loader.defaults and key not in _PRIVATE_OPTIONS:
            hint = did_you_mean(key, loader.defaults)
            raise DataError(
                f"unknown option '{key}' for data set '{name}'{hint}; valid options: "
                f"{', '.join(sorted(loader.defaults))}"
            )
    return name, options, loader


def did_you_mean(name: str, candidates: Any) -> str:
    """" (did you mean 'x'?)" for the closest of `candidates`, or ""."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
