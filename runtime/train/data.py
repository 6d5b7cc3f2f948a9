"""Data sets and mini-batching for dslrun training runs.

`load_dataset(name, options)` turns a spec's `data NAME(option = value, ...)` into a `Dataset`:
a dict of train arrays, an optional dict of test arrays and an `info` dict. Arrays are keyed by
field name; the standard fields are `x` (floating point, of the requested dtype) and `y` (int64
class labels, or floating point targets).

Data sets and their options (defaults in parentheses):

* scikit-learn's shipped sets, never downloaded; all take `test_fraction` (0.2) and `seed` (0):
  - `digits`: x [N, 64] scaled to [0, 1] (/16), y int64 in 0..9. Also `image` (false) for
    x [N, 1, 8, 8], `size` (none) to bilinear-resize every image to size x size (implies
    `image` unless `image = false`, which flattens to [N, size*size]), `binarize` (false) for
    x = (x > 0.5), `standardize` (false).
  - `breast_cancer`: x [N, 30] standardized, y int64 0/1; `standardize` (true), `labels`.
  - `iris`, `wine`: x standardized, y int64; `standardize` (true).
  - `diabetes`: x [N, 10] as shipped, y [N] float standardized; `standardize` (true) of y.
* scikit-learn generators; all take `n` (200), `seed` (0), `labels` ("01"), `test_fraction` (0):
  - `moons`: `noise` (0.1).  `circles`: `noise` (0.05), `factor` (0.5).
  - `blobs`: `centers` (2; a count, or a list of points), `std` (1.0).
* `linear_gaussian`: y = x theta + noise with x, theta ~ N(0, 1). Options `n` (200), `d` (5),
  `noise` (0.1), `seed` (0), `bias` (false: if true, x gets a last column of ones and theta one
  more entry), `theta` (drawn from the seed), `test_fraction` (0). `info["true_theta"]`.
* files: a name ending in `.csv` or `.npz` is the file's path; the names `csv` and `npz` take it
  from the option `path`. Relative paths are resolved against `options["_base_dir"]` when given.
  Both take `test_fraction` (0) and `seed` (0).
  - npz: every array becomes a field named by its key; float arrays are cast to the dtype,
    integer arrays to int64 and bool arrays to the dtype. Pickled objects are never loaded.
  - csv: numeric cells, optional header row naming the columns. `target` (last column; a name
    or an index) becomes `y`, the other columns `x`. `task` ("auto"): y is int64 when every
    target value is an integer unless `task = "regression"`; `task = "classification"` demands
    integers. `header` ("auto": the first row is a header when none of its cells is a number).

`labels = "pm1"` (binary sets only) maps the 0/1 labels to float -1/+1. A split with
`test_fraction > 0` is a seeded shuffle split, stratified by class for classification sets;
both parts keep the source order. Standardization uses the train part's mean and std.
Unknown data sets and unknown or ill-typed options raise `DataError`.

`split_validation(ds, fraction, seed)` holds a seeded, stratified part of the training rows out
as `Dataset.valid` (the `validation` train setting); `Dataset.split(name)` gives "train",
"valid" or "test".

`Batcher` cuts a dict of equally long arrays into mini-batches, one epoch at a time, with
"shuffle", "with_replacement" or "sequential" sampling; its `state()` and `set_state()` make a
resumed run continue the identical batch sequence.

This module must not import `dsl`.
"""

from __future__ import annotations

import copy
import csv
import difflib
import functools
import math
import numbers
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.dtypes import np_dtype, parse_dtype
from runtime.errors import UserError
from runtime.train import sklearn_sets
from runtime.train.npz import NpzError, read_npz

__all__ = [
    "Batcher",
    "DataError",
    "Dataset",
    "SAMPLINGS",
    "SPLITS",
    "bilinear_resize",
    "check_dataset",
    "dataset_options",
    "dataset_summary",
    "known_datasets",
    "load_dataset",
    "split_validation",
]


class DataError(UserError):
    """A user mistake about data: unknown data set or option, missing or malformed file."""


# --------------------------------------------------------------------------- the Dataset


@dataclass
class Dataset:
    """Loaded data: train arrays, optional test arrays (same fields) and facts about the set."""

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    valid: dict[str, np.ndarray] | None = None  # held out of train by `split_validation`

    def split(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays of split `name` ("train", "valid" or "test"; None when absent)."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {name!r}")
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    def field_info(self, split: str = "train") -> dict[str, tuple[str, tuple[int, ...]]]:
        """{field: (dtype string such as "f32", "f64" or "i64", shape)} of the train (or
        valid, or test) arrays; the leading dimension is the number of samples in that split."""
        arrays = self.split(split)
        if arrays is None:
            return {}
        return {k: (_dtype_str(v.dtype), tuple(int(s) for s in v.shape)) for k, v in arrays.items()}


SPLITS = ("train", "valid", "test")


def split_validation(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """A copy of `ds` whose `valid` part is `fraction` of its training rows (at least one),
    removed from `train`: a seeded shuffle split (the same `seed` holds out the same rows),
    stratified by class when `y` holds integer labels; both parts keep the source order."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the validation fraction must be between 0 and 1, not {fraction!r}")
    n = _n_samples(ds.train)
    y = ds.train.get("y")
    strata = y if y is not None and y.ndim == 1 and y.dtype.kind in "iu" else None
    sub = int(np.random.SeedSequence([seed, 0x7A11D]).generate_state(1, np.uint32)[0])
    try:
        keep, held = _split_indices(n, fraction, sub, strata)
    except DataError:
        raise DataError(f"validation = {fraction:g} of {n} training samples leaves no "
                        "training samples") from None
    return Dataset({k: v[keep] for k, v in ds.train.items()}, ds.test,
                   {**ds.info, "n_train": len(keep), "n_valid": len(held)},
                   {k: v[held] for k, v in ds.train.items()})


def _dtype_str(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "bool"
    if dtype.kind in "fiu":
        return f"{dtype.kind}{dtype.itemsize * 8}"
    return str(dtype)


# --------------------------------------------------------------------------- options

_PRIVATE_OPTIONS = frozenset({"_base_dir"})
_UNSET = object()


class _Opts:
    """A loader's view of the user's options: checked names, typed accessors, defaults."""

    def __init__(self, dataset: str, given: Mapping[str, Any], defaults: Mapping[str, Any]):
        self.dataset = dataset
        self.given = dict(given)
        self.defaults = defaults

    def has(self, key: str) -> bool:
        return key in self.given

    def _get(self, key: str) -> Any:
        assert key in self.defaults or key in _PRIVATE_OPTIONS, key
        return self.given.get(key, self.defaults.get(key))

    def _bad(self, key: str, want: str, value: Any) -> DataError:
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
            raise self._bad(key, "an integer", v)
        if not isinstance(v, numbers.Integral):
            if not math.isfinite(float(v)) or float(v) != int(v):
                raise self._bad(key, "an integer", v)
        iv = int(v)
        if lo is not None and iv < lo:
            raise self._bad(key, f"an integer >= {lo}", v)
        if hi is not None and iv > hi:
            raise self._bad(key, f"an integer <= {hi}", v)
        return iv

    def as_float(
        self, key: str, lo: float | None = None, hi: float | None = None, hi_open: bool = False
    ) -> float | None:
        v = self._get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise self._bad(key, "a number", v)
        fv = float(v)
        if lo is not None and fv < lo:
            raise self._bad(key, f"a number >= {lo:g}", v)
        if hi is not None and (fv >= hi if hi_open else fv > hi):
            raise self._bad(key, f"a number {'<' if hi_open else '<='} {hi:g}", v)
        return fv

    def as_bool(self, key: str) -> bool | None:
        v = self._get(key)
        if v is None:
            return None
        if not isinstance(v, bool | np.bool_):
            raise self._bad(key, "true or false", v)
        return bool(v)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        v = self._get(key)
        if not isinstance(v, str) or v not in choices:
            want = "one of " + ", ".join(f'"{c}"' for c in choices)
            raise self._bad(key, want, v)
        return v

    def as_str(self, key: str) -> str | None:
        v = self._get(key)
        if v is None:
            return None
        if isinstance(v, os.PathLike):
            v = os.fspath(v)
        if not isinstance(v, str) or not v:
            raise self._bad(key, "a non-empty string", v)
        return v

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
    func: Callable[[_Opts, np.dtype], Dataset]
    defaults: Mapping[str, Any]


_LOADERS: dict[str, _Loader] = {}


def _register(name: str, **defaults: Any) -> Callable[[Callable], Callable]:
    def deco(func: Callable[[_Opts, np.dtype], Dataset]) -> Callable:
        _LOADERS[name] = _Loader(name, func, dict(defaults))
        return func

    return deco


def known_datasets() -> list[str]:
    """The names `load_dataset` accepts (besides paths ending in .csv or .npz)."""
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
    ds = loader.func(_Opts(name, options, loader.defaults), dt)
    ds.info.setdefault("name", display)
    ds.info["n_train"] = _n_samples(ds.train)
    ds.info["n_test"] = 0 if ds.test is None else _n_samples(ds.test)
    return ds


def check_dataset(name: str, options: Mapping[str, Any] | None = None) -> None:
    """Check a data set's name and option names without loading anything (fast: no
    scikit-learn import). Values are checked when the data set is loaded."""
    if not isinstance(name, str) or not name:
        raise DataError(f"a data set name must be a non-empty string, not {name!r}")
    _resolve(name, dict(options or {}))


def _resolve(name: str, options: dict[str, Any]) -> tuple[str, dict[str, Any], _Loader]:
    lower = name.lower()
    if lower.endswith((".csv", ".npz")):
        if "path" in options:
            raise DataError(
                f"data set '{name}' is already a path, so the option 'path' is not allowed"
            )
        options["path"] = name
        name = lower[-3:]
    loader = _LOADERS.get(name)
    if loader is None:
        hint = _did_you_mean(name, _LOADERS)
        raise DataError(
            f"unknown data set '{name}'{hint}; known data sets: {', '.join(known_datasets())}, "
            "or a file path ending in .csv or .npz"
        )
    for key in options:
        if not isinstance(key, str):
            raise DataError(f"option names of data set '{name}' must be strings, not {key!r}")
        if key not in loader.defaults and key not in _PRIVATE_OPTIONS:
            hint = _did_you_mean(key, loader.defaults)
            raise DataError(
                f"unknown option '{key}' for data set '{name}'{hint}; valid options: "
                f"{', '.join(sorted(loader.defaults))}"
            )
    return name, options, loader


def _did_you_mean(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _n_samples(arrays: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(arrays.values())).shape[0]) if arrays else 0


# --------------------------------------------------------------------------- splitting


def _split_indices(
    n: int, test_fraction: float, seed: int, strata: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices: a seeded random subset of round(test_fraction * n) (at
    least 1) samples for test, allocated over the classes of `strata` by largest remainder."""
    n_test = max(1, int(math.floor(test_fraction * n + 0.5)))
    if n_test >= n:
        raise DataError(
            f"test_fraction = {test_fraction:g} of {n} samples leaves no training samples"
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    if strata is None:
        test = rng.permutation(n)[:n_test]
    else:
        classes, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
        quota = test_fraction * counts
        take = np.minimum(np.floor(quota).astype(np.int64), counts)
        # Give the remaining test slots to the classes with the largest fractional quotas.
        priority = np.argsort(-(quota - take), kind="stable")
        remaining = n_test - int(take.sum())
        while remaining > 0:
            for c in priority:
                if remaining > 0 and take[c] < counts[c]:
                    take[c] += 1
                    remaining -= 1
        parts = []
        for c in range(len(classes)):
            members = np.flatnonzero(inverse == c)
            parts.append(rng.permutation(members)[: take[c]])
        test = np.concatenate(parts)
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _split(
    arrays: dict[str, np.ndarray], opts: _Opts, strata: np.ndarray | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    frac = opts.test_fraction()
    if frac == 0.0:
        return arrays, None
    tr, te = _split_indices(_n_samples(arrays), frac, opts.seed(), strata)
    return {k: v[tr] for k, v in arrays.items()}, {k: v[te] for k, v in arrays.items()}


def _standardize(
    train: np.ndarray, test: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Standardize with the train part's mean and std (std 0 counts as 1)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, None if test is None else (test - mean) / std, mean, std


def _class_info(y: np.ndarray) -> dict[str, Any]:
    # not np.unique, which imports numpy.ma (~15 ms of `dslrun check`)
    n = int(y.max()) + 1 if y.size and y.min() >= 0 else len(set(y.tolist()))
    return {"task": "classification", "n_classes": n}


def _map_labels(y: np.ndarray, labels: str, dtype: np.dtype, name: str) -> np.ndarray:
    if labels == "01":
        return y.astype(np.int64)
    if not np.all((y == 0) | (y == 1)):
        raise DataError(f"labels = \"pm1\" needs a binary data set, but '{name}' has more classes")
    return (2 * y - 1).astype(dtype)


def _finish_classification(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    opts: _Opts,
    dtype: np.dtype,
    standardize: bool,
    labels: str = "01",
    info: dict[str, Any] | None = None,
) -> Dataset:
    """Split (stratified), standardize x from train, map labels, cast."""
    train, test = _split({"x": x, "y": y}, opts, strata=y)
    info = dict(info or {})
    info.update(_class_info(y))
    if standardize:
        xtr, xte, mean, std = _standardize(
            train["x"].astype(np.float64), None if test is None else test["x"].astype(np.float64)
        )
        train["x"] = xtr
        if test is not None:
            test["x"] = xte
        info["x_mean"], info["x_std"] = mean.tolist(), std.tolist()
    info["labels"] = labels
    for part in (train, test):
        if part is not None:
            part["x"] = np.ascontiguousarray(part["x"], dtype=dtype)
            part["y"] = _map_labels(part["y"], labels, dtype, name)
    info["n_features"] = int(np.prod(train["x"].shape[1:]))
    return Dataset(train, test, info)


# --------------------------------------------------------------------------- scikit-learn sets


@functools.cache
def _shipped(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a scikit-learn shipped set, read-only and cached."""
    x, y = sklearn_sets.shipped(name)
    x = np.array(x, dtype=np.float64)
    y = np.array(y)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


_SPLIT_DEFAULTS = {"test_fraction": 0.2, "seed": 0}


@_register("digits", **_SPLIT_DEFAULTS, image=False, size=None, binarize=False, standardize=False)
def _load_digits(opts: _Opts, dtype: np.dtype) -> Dataset:
    """scikit-learn's 8×8 digits: x [N, 64] scaled to [0, 1], y int64 in 0..9. `image` gives
    x [N, 1, 8, 8]; `size` resizes the images bilinearly to size × size (and implies `image`);
    `binarize` gives x > 0.5; `standardize` standardizes each pixel (train mean and std)."""
    x, y = _shipped("digits")
    x = x / 16.0
    size = opts.as_int("size", 1, 1024)
    image = opts.as_bool("image") if opts.has("image") else size is not None
    binarize = opts.as_bool("binarize")
    standardize = opts.as_bool("standardize")
    if binarize and standardize:
        raise DataError(
            "options 'binarize' and 'standardize' of data set 'digits' exclude "
            "each other; choose one"
        )
    side = 8
    if size is not None and size != 8:
        x = bilinear_resize(x.reshape(-1, 8, 8), size, size).reshape(len(x), -1)
        side = size
    if binarize:
        x = (x > 0.5).astype(np.float64)
    ds = _finish_classification("digits", x, y.astype(np.int64), opts, dtype, bool(standardize))
    for part in (ds.train, ds.test):
        if part is not None and image:
            part["x"] = part["x"].reshape(-1, 1, side, side)
    ds.info["image_shape"] = (1, side, side)
    return ds


@_register("breast_cancer", **_SPLIT_DEFAULTS, standardize=True, labels="01")
def _load_breast_cancer(opts: _Opts, dtype: np.dtype) -> Dataset:
    """scikit-learn's breast cancer set: x [N, 30] standardized (`standardize`, on the train
    part), y int64 0/1, or ±1 floats with `labels = "pm1"`."""
    x, y = _shipped("breast_cancer")
    return _finish_classification(
        "breast_cancer",
        x,
        y.astype(np.int64),
        opts,
        dtype,
        bool(opts.as_bool("standardize")),
        labels=opts.labels(),
    )


@_register("iris", **_SPLIT_DEFAULTS, standardize=True)
def _load_iris(opts: _Opts, dtype: np.dtype) -> Dataset:
    """scikit-learn's iris: x [N, 4] standardized (`standardize`), y int64 in 0..2."""
    x, y = _shipped("iris")
    return _finish_classification(
        "iris", x, y.astype(np.int64), opts, dtype, bool(opts.as_bool("standardize"))
    )


@_register("wine", **_SPLIT_DEFAULTS, standardize=True)
def _load_wine(opts: _Opts, dtype: np.dtype) -> Dataset:
    """scikit-learn's wine: x [N, 13] standardized (`standardize`), y int64 in 0..2."""
    x, y = _shipped("wine")
    return _finish_classification(
        "wine", x, y.astype(np.int64), opts, dtype, bool(opts.as_bool("standardize"))
    )


@_register("diabetes", **_SPLIT_DEFAULTS, standardize=True)
def _load_diabetes(opts: _Opts, dtype: np.dtype) -> Dataset:
    """scikit-learn's diabetes regression set: x [N, 10] as shipped, y [N] float. By default
    `standardize` = true standardizes y (train mean and std, kept in the info); set it false
    for the raw targets."""
    x, y = _shipped("diabetes")
    train, test = _split({"x": x, "y": y.astype(np.float64)}, opts, strata=None)
    info: dict[str, Any] = {"task": "regression", "n_features": int(x.shape[1])}
    if opts.as_bool("standardize"):
        mean, std = float(train["y"].mean()), float(train["y"].std()) or 1.0
        info["y_mean"], info["y_std"] = mean, std
        for part in (train, test):
            if part is not None:
                part["y"] = (part["y"] - mean) / std
    for part in (train, test):
        if part is not None:
            part["x"] = np.ascontiguousarray(part["x"], dtype=dtype)
            part["y"] = np.ascontiguousarray(part["y"], dtype=dtype)
    return Dataset(train, test, info)


# --------------------------------------------------------------------------- generators

_GEN_DEFAULTS = {"n": 200, "seed": 0, "labels": "01", "test_fraction": 0.0}


def _n(opts: _Opts) -> int:
    n = opts.as_int("n", 1, 10**8)
    assert n is not None
    return n


@_register("moons", **_GEN_DEFAULTS, noise=0.1)
def _load_moons(opts: _Opts, dtype: np.dtype) -> Dataset:
    """Two interleaving half circles (scikit-learn's make_moons) with Gaussian `noise`:
    x [n, 2], y 0/1 (±1 with `labels = "pm1"`)."""
    n, noise, seed, labels = _n(opts), opts.as_float("noise", 0.0), opts.seed(), opts.labels()
    if n < 2:
        raise DataError("option 'n' of data set 'moons' must be at least 2, one per moon")
    x, y = sklearn_sets.make_moons(n, noise, seed)
    return _finish_classification("moons", x, y, opts, dtype, False, labels, {"noise": noise})


@_register("circles", **_GEN_DEFAULTS, noise=0.05, factor=0.5)
def _load_circles(opts: _Opts, dtype: np.dtype) -> Dataset:
    """Two concentric circles (make_circles), the inner one `factor` times as large, with
    Gaussian `noise`: x [n, 2], y 0/1 (±1 with `labels = "pm1"`)."""
    n, noise, seed, labels = _n(opts), opts.as_float("noise", 0.0), opts.seed(), opts.labels()
    factor = opts.as_float("factor", 0.0, 1.0, hi_open=True)
    if n < 2:
        raise DataError("option 'n' of data set 'circles' must be at least 2, one per circle")
    x, y = sklearn_sets.make_circles(n, noise, factor, seed)
    info = {"noise": noise, "factor": factor}
    return _finish_classification("circles", x, y, opts, dtype, False, labels, info)


@_register("blobs", **_GEN_DEFAULTS, centers=2, std=1.0)
def _load_blobs(opts: _Opts, dtype: np.dtype) -> Dataset:
    """Gaussian blobs (make_blobs) of standard deviation `std` around `centers` (a count of
    random 2-D centers, or a list of points): x [n, d], y int64 (±1 with `labels = "pm1"`)."""
    n, seed, labels = _n(opts), opts.seed(), opts.labels()
    std = opts.as_float("std", 0.0)
    raw = opts.raw("centers")
    if isinstance(raw, list | tuple):
        try:
            centers = np.array(raw, dtype=np.float64)
        except (TypeError, ValueError):
            centers = None
        if (
            centers is None
            or centers.ndim != 2
            or centers.size == 0
            or not np.all(np.isfinite(centers))
        ):
            raise opts._bad("centers", "a count or a list of equally long lists of numbers", raw)
        k, d = centers.shape
        x, y = sklearn_sets.make_blobs(n, centers, std, seed)
    else:
        k = opts.as_int("centers", 1, 10**6)
        d = 2
        x, y = sklearn_sets.make_blobs(n, k, std, seed)
    if labels == "pm1" and k != 2:
        raise DataError(f"labels = \"pm1\" needs 2 blobs, but data set 'blobs' has {k} centers")
    ds = _finish_classification("blobs", x, y, opts, dtype, False, labels, {"std": std})
    ds.info["n_classes"] = int(k)
    ds.info["n_features"] = int(d)
    return ds


@_register(
    "linear_gaussian", n=200, d=None, noise=0.1, seed=0, bias=False, theta=None, test_fraction=0.0
)
def _load_linear_gaussian(opts: _Opts, dtype: np.dtype) -> Dataset:
    """y = x θ + noise·ε with x, ε ~ N(0, 1): x [n, d] (d = 5 unless `d` or `theta` says),
    y [n] float; `bias` appends a column of ones to x (and an intercept to θ); θ is drawn
    from the seed unless given. The info holds the true θ."""
    n, noise, seed, bias = _n(opts), opts.as_float("noise", 0.0), opts.seed(), opts.as_bool("bias")
    d = opts.as_int("d", 1, 10**6)
    raw_theta = opts.raw("theta")
    theta: np.ndarray | None = None
    if raw_theta is not None:
        try:
            theta = np.array(raw_theta, dtype=np.float64)
        except (TypeError, ValueError):
            theta = None
        if theta is None or theta.ndim != 1 or theta.size == 0 or not np.all(np.isfinite(theta)):
            raise opts._bad("theta", "a non-empty list of numbers", raw_theta)
        if d is None:
            d = theta.size - int(bool(bias))
            if d < 1:
                raise DataError(
                    "option 'theta' of data set 'linear_gaussian' needs at least 2 "
                    "entries when 'bias' is true (the last one is the intercept)"
                )
    d = 5 if d is None else d
    k = d + int(bool(bias))
    if theta is not None and theta.size != k:
        raise DataError(
            f"option 'theta' of data set 'linear_gaussian' has {theta.size} entries but needs "
            f"{k} (d = {d}{' plus the bias' if bias else ''})"
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    # theta first, so that it does not depend on n.
    drawn = rng.standard_normal(k)
    if theta is None:
        theta = drawn
    x = rng.standard_normal((n, d))
    if bias:
        x = np.concatenate([x, np.ones((n, 1))], axis=1)
    y = x @ theta + noise * rng.standard_normal(n)
    train, test = _split({"x": x, "y": y}, opts, strata=None)
    for part in (train, test):
        if part is not None:
            for key in part:
                part[key] = np.ascontiguousarray(part[key], dtype=dtype)
    info = {
        "task": "regression",
        "true_theta": theta.tolist(),
        "n_features": k,
        "noise": noise,
        "bias": bool(bias),
    }
    return Dataset(train, test, info)


# --------------------------------------------------------------------------- files


def _resolve_path(opts: _Opts) -> Path:
    p = opts.as_str("path")
    if p is None:
        raise DataError(f"data set '{opts.dataset}' needs the option 'path' naming the file")
    path = Path(p).expanduser()
    base = opts.given.get("_base_dir")
    if not path.is_absolute() and base:
        path = Path(base) / path
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if not path.is_file():
        raise DataError(f"data file {path} is not a regular file")
    return path


@_register("npz", path=None, test_fraction=0.0, seed=0)
def _load_npz(opts: _Opts, dtype: np.dtype) -> Dataset:
    """A NumPy .npz file (`path`): every array becomes a field named by its key; float arrays
    get the float dtype, integer ones int64. Pickled objects are never loaded."""
    path = _resolve_path(opts)
    try:
        arrays = read_npz(path)
    except NpzError as e:
        raise DataError(f"data file {path} cannot be read: {e}") from e
    if not arrays:
        raise DataError(f"data file {path} holds no arrays; it needs at least one")
    n = None
    for key, a in arrays.items():
        if a.ndim == 0:
            raise DataError(
                f"data file {path}: array '{key}' is a scalar, but every array "
                "needs a first (sample) dimension"
            )
        if n is None:
            n, first = a.shape[0], key
        elif a.shape[0] != n:
            raise DataError(
                f"data file {path}: arrays '{first}' and '{key}' have different first "
                f"dimensions ({n} and {a.shape[0]} samples)"
            )
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)):
                raise DataError(f"data file {path}: array '{key}' contains NaN or infinity")
            arrays[key] = np.ascontiguousarray(a, dtype=dtype)
        elif a.dtype.kind == "b":
            arrays[key] = np.ascontiguousarray(a, dtype=dtype)
        elif a.dtype.kind in "iu":
            if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
                raise DataError(f"data file {path}: array '{key}' has values too large for int64")
            arrays[key] = np.ascontiguousarray(a, dtype=np.int64)
        else:
            raise DataError(
                f"data file {path}: array '{key}' has dtype {a.dtype}, but only "
                "float, integer and bool arrays are supported"
            )
    if n == 0:
        raise DataError(f"data file {path} holds no samples (the arrays have length 0)")
    y = arrays.get("y")
    strata = y if y is not None and y.dtype == np.int64 and y.ndim == 1 else None
    train, test = _split(arrays, opts, strata)
    info: dict[str, Any] = {"path": str(path), "fields": list(arrays)}
    if strata is not None:
        info.update(_class_info(strata))
    if "x" in arrays:
        info["n_features"] = int(np.prod(arrays["x"].shape[1:]))
    return Dataset(train, test, info)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


@_register("csv", path=None, target=None, task="auto", header="auto", test_fraction=0.0, seed=0)
def _load_csv(opts: _Opts, dtype: np.dtype) -> Dataset:
    """A CSV file of numbers (`path`), with an optional header row: the `target` column
    (the last by default; a name or an index) is y, the others x. y is int64 when every target
    is an integer unless `task = "regression"`."""
    path = _resolve_path(opts)
    task = opts.choice("task", ("auto", "classification", "regression"))
    header_opt = opts.raw("header")
    if header_opt != "auto" and not isinstance(header_opt, bool):
        raise opts._bad("header", 'true, false or "auto"', header_opt)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(i, row) for i, row in enumerate(csv.reader(f), start=1)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"data file {path} cannot be read: {e}") from e
    rows = [(i, [c.strip() for c in row]) for i, row in rows if any(c.strip() for c in row)]
    if not rows:
        raise DataError(f"data file {path} is empty")
    has_header = (
        header_opt if isinstance(header_opt, bool) else not any(_is_number(c) for c in rows[0][1])
    )
    names: list[str] | None = None
    if has_header:
        names = rows[0][1]
        rows = rows[1:]
        if not rows:
            raise DataError(f"data file {path} has a header but no data rows")
    width = len(names) if names is not None else len(rows[0][1])
    values = np.empty((len(rows), width), dtype=np.float64)
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(
                f"data file {path}: row {line} has {len(row)} columns, but the "
                f"{'header' if names is not None else 'first row'} has {width}"
            )
        try:
            values[r] = [float(c) for c in row]
        except ValueError:
            for c, cell in enumerate(row):
                if not _is_number(cell):
                    col = f"column {c + 1}" + (f" ('{names[c]}')" if names else "")
                    what = "is empty" if cell == "" else f"'{cell}' is not a number"
                    raise DataError(f"data file {path}: row {line}, {col}: {what}") from None
            raise
        if not np.all(np.isfinite(values[r])):
            c = int(np.flatnonzero(~np.isfinite(values[r]))[0])
            col = f"column {c + 1}" + (f" ('{names[c]}')" if names else "")
            raise DataError(f"data file {path}: row {line}, {col}: '{row[c]}' is not finite")
    if width < 2:
        raise DataError(
            f"data file {path} has {width} column; it needs a target column and at "
            "least one feature column"
        )
    t = _target_column(opts, names, width, path)
    y = values[:, t]
    x = np.delete(values, t, axis=1)
    integral = bool(np.all(y == np.round(y)))
    if task == "classification" and not integral:
        bad = int(np.flatnonzero(y != np.round(y))[0])
        raise DataError(
            f'data file {path}: task = "classification" needs integer targets, but '
            f"row {rows[bad][0]} has {rows[bad][1][t]}"
        )
    classify = integral and task != "regression"
    info: dict[str, Any] = {
        "path": str(path),
        "columns": None if names is None else [c for i, c in enumerate(names) if i != t],
        "target": names[t] if names is not None else t,
        "n_features": int(x.shape[1]),
    }
    if classify:
        yi = y.astype(np.int64)
        train, test = _split({"x": x, "y": yi}, opts, strata=yi)
        info.update(_class_info(yi))
    else:
        train, test = _split({"x": x, "y": y}, opts, strata=None)
        info["task"] = "regression"
    for part in (train, test):
        if part is not None:
            part["x"] = np.ascontiguousarray(part["x"], dtype=dtype)
            if not classify:
                part["y"] = np.ascontiguousarray(part["y"], dtype=dtype)
    return Dataset(train, test, info)


def _target_column(opts: _Opts, names: list[str] | None, width: int, path: Path) -> int:
    target = opts.raw("target")
    if target is None:
        return width - 1
    if isinstance(target, str):
        if names is None:
            raise DataError(
                f"data file {path} has no header row, so option 'target' must be a column "
                f"index, not the name '{target}'"
            )
        hits = [i for i, c in enumerate(names) if c == target]
        if not hits:
            hint = _did_you_mean(target, names)
            raise DataError(
                f"data file {path} has no column named '{target}'{hint}; columns: "
                f"{', '.join(names)}"
            )
        if len(hits) > 1:
            raise DataError(f"data file {path} has {len(hits)} columns named '{target}'")
        return hits[0]
    t = opts.as_int("target")
    assert t is not None
    if not -width <= t < width:
        raise DataError(
            f"option 'target' = {t} is out of range for data file {path}, which has {width} columns"
        )
    return t % width


# --------------------------------------------------------------------------- image resize


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] linear interpolation weights (half-pixel centres, edges clamped)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    return m


def bilinear_resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly resize images [..., H, W] to [..., height, width] (half-pixel centres, like
    PIL and torch's align_corners=False without antialiasing); float64 result."""
    images = np.asarray(images, dtype=np.float64)
    mh = _interp_matrix(images.shape[-2], height)
    mw = _interp_matrix(images.shape[-1], width)
    return mh @ images @ mw.T


# --------------------------------------------------------------------------- batching

SAMPLINGS = ("shuffle", "with_replacement", "sequential")
_STATE_FORMAT = "dslrun.batcher/1"


class Batcher:
    """Cuts equally long arrays into mini-batches, one epoch per `epoch()` call.

    Sampling:
      * "shuffle": a fresh permutation per epoch; each sample once per epoch.
      * "with_replacement": ceil(N / batch) batches of exactly `batch` indices drawn uniformly
        with replacement.
      * "sequential": the samples in order, no randomness.
    With `drop_last` a final short batch is skipped (shuffle and sequential). A `batch` larger
    than N is clamped to N. The same seed gives bit-identical batches.

    The returned arrays are valid only until the next batch is requested: shuffled and
    with-replacement batches are gathered into buffers that are reused (pass
    `reuse_buffers=False` for fresh arrays), and sequential batches are read-only views of the
    data. Copy what you keep.

    `state()` is a JSON-serializable snapshot of the position (epoch, batch within it, and the
    random generator as it was at the start of that epoch); `set_state()` on a Batcher built
    with the same arrays length, batch, sampling and drop_last continues the identical sequence.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        batch: int,
        seed: int = 0,
        sampling: str = "shuffle",
        drop_last: bool = False,
        reuse_buffers: bool = True,
    ):
        if not arrays:
            raise DataError("there are no data arrays to batch")
        self._arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        n = None
        for key, a in self._arrays.items():
            if a.ndim == 0:
                raise DataError(f"data field '{key}' is a scalar and cannot be batched")
            if n is None:
                n, first = a.shape[0], key
            elif a.shape[0] != n:
                raise DataError(
                    f"data fields '{first}' and '{key}' have different numbers of samples "
                    f"({n} and {a.shape[0]})"
                )
        assert n is not None
        if n == 0:
            raise DataError("there are no samples to batch")
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
            raise DataError(f"the batch size must be a positive integer, not {batch!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise DataError(f"the sampling seed must be a non-negative integer, not {seed!r}")
        if sampling not in SAMPLINGS:
            hint = _did_you_mean(str(sampling), SAMPLINGS)
            raise DataError(
                f"unknown sampling '{sampling}'{hint}; choose one of {', '.join(SAMPLINGS)}"
            )
        self.n = int(n)
        self.batch = min(int(batch), self.n)
        self.seed = int(seed)
        self.sampling = sampling
        self.drop_last = bool(drop_last)
        self.reuse_buffers = bool(reuse_buffers)
        if sampling == "with_replacement" or not self.drop_last:
            self.batches_per_epoch = -(-self.n // self.batch)
        else:
            self.batches_per_epoch = self.n // self.batch
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self._epoch = 0
        self._pos = 0
        self._start_state = self._rng.bit_generator.state  # at the start of epoch `_epoch`
        self._order: np.ndarray | None = None
        self._bufs: dict[str, np.ndarray] | None = None
        self._readonly = {k: v.view() for k, v in self._arrays.items()}  # for `_slice`
        for v in self._readonly.values():
            v.flags.writeable = False

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def epochs_done(self) -> int:
        """The number of completed epochs (the index of the current one)."""
        return self._epoch

    @property
    def position(self) -> int:
        """The number of batches of the current epoch already handed out."""
        return self._pos

    def _ensure_order(self) -> np.ndarray | None:
        if self._order is None and self.sampling != "sequential":
            if self.sampling == "shuffle":
                self._order = self._rng.permutation(self.n)
            else:
                size = self.batches_per_epoch * self.batch
                self._order = self._rng.integers(0, self.n, size=size, dtype=np.int64)
        return self._order

    def _finish_epoch(self) -> None:
        self._epoch += 1
        self._pos = 0
        self._order = None
        if self.sampling != "sequential":  # (sequential order never draws)
            self._start_state = self._rng.bit_generator.state

    def _gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        m = idx.shape[0]
        if not self.reuse_buffers:
            return {k: np.take(v, idx, axis=0) for k, v in self._arrays.items()}
        if self._bufs is None:
            self._bufs = {
                k: np.empty((self.batch, *v.shape[1:]), dtype=v.dtype)
                for k, v in self._arrays.items()
            }
        out = {}
        for k, v in self._arrays.items():
            buf = self._bufs[k][:m]
            # mode="clip" avoids numpy's extra buffering of `out`; indices are valid anyway.
            np.take(v, idx, axis=0, out=buf, mode="clip")
            out[k] = buf
        return out

    def _slice(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        return {k: v[lo:hi] for k, v in self._readonly.items()}  # read-only views

    def epoch(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield the remaining batches of the current epoch (all of them unless the epoch was
        interrupted or resumed mid-way), then advance to the next epoch."""
        order = self._ensure_order()
        epoch, start = self._epoch, self._pos
        for i in range(start, self.batches_per_epoch):
            if (self._epoch, self._pos) != (epoch, i):
                raise RuntimeError("the Batcher's position changed while an epoch was iterated")
            lo = i * self.batch
            if order is None:
                batch = self._slice(lo, min(lo + self.batch, self.n))
            else:
                batch = self._gather(order[lo : lo + self.batch])
            self._pos += 1
            if self._pos == self.batches_per_epoch:
                self._finish_epoch()
            yield batch

    def state(self) -> dict[str, Any]:
        """A JSON-serializable snapshot from which `set_state` continues the same sequence."""
        return {
            "format": _STATE_FORMAT,
            "n": self.n,
            "batch": self.batch,
            "sampling": self.sampling,
            "drop_last": self.drop_last,
            "seed": self.seed,
            "epoch": self._epoch,
            "position": self._pos,
            "rng": copy.deepcopy(self._start_state),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a `state()` snapshot; the run continues exactly where the snapshot was."""
        if not isinstance(state, Mapping) or state.get("format") != _STATE_FORMAT:
            raise DataError("the saved batcher state is not a dslrun batcher state")
        for key in ("n", "batch", "sampling", "drop_last"):
            if state.get(key) != getattr(self, key):
                raise DataError(
                    f"the saved batcher state was made with {key} = {state.get(key)!r}, but this "
                    f"run has {key} = {getattr(self, key)!r}; resume with the same data and "
                    "batching"
                )
        epoch, pos, rng_state = state.get("epoch"), state.get("position"), state.get("rng")
        if (
            not isinstance(epoch, int)
            or not isinstance(pos, int)
            or epoch < 0
            or not 0 <= pos < self.batches_per_epoch
            or not isinstance(rng_state, Mapping)
        ):
            raise DataError("the saved batcher state is corrupt")
        rng = np.random.Generator(np.random.PCG64())
        try:
            rng.bit_generator.state = copy.deepcopy(dict(rng_state))
        except (TypeError, ValueError, KeyError) as e:
            raise DataError(f"the saved batcher state has a bad random generator state: {e}") from e
        self._rng = rng
        self._start_state = rng.bit_generator.state
        self._epoch = epoch
        self._pos = pos
        self._order = None


@_register("random", n=1024, shape=None, classes=10, seed=0, test_fraction=0.0)
def _load_random(opts: _Opts, dtype: np.dtype) -> Dataset:
    """Random inputs x ~ N(0, 1) of shape [n, *shape] and labels y uniform in [0, classes):
    workloads for benchmarks and smoke tests."""
    n, seed = _n(opts), opts.seed()
    classes = opts.as_int("classes", 1, 10**6)
    raw = opts.raw("shape")
    if not isinstance(raw, list | tuple) or not raw or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in raw):
        raise opts._bad("shape", "a list of positive integers (the shape of one sample)", raw)
    rng = np.random.Generator(np.random.PCG64(seed))
    x = rng.standard_normal((n, *raw)).astype(dtype)
    y = rng.integers(0, classes, n).astype(np.int64)
    train, test = _split({"x": x, "y": y}, opts, strata=None)
    info = {"task": "classification", "n_classes": int(classes), "n_features": int(np.prod(raw))}
    return Dataset(train, test, info)
