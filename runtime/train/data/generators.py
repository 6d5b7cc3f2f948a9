"""Seeded generators of small tabular sets: scikit-learn's moons, circles and blobs (re-made in
NumPy, identical arrays), `linear_gaussian` (y = x theta + noise, `info["true_theta"]`) and
`random` (benchmark workloads). All take `n` and `seed`; `test_fraction` is a seeded split
(none by default), stratified for the classification sets. `labels = "pm1"` (binary sets
only) maps the 0/1 labels to float -1/+1.

This module must not import `dsl`.
"""

from __future__ import annotations

import numpy as np

from runtime.train import sklearn_sets
from runtime.train.data.dataset import DataError, Dataset, ensure_room
from runtime.train.data.preprocess import finish_classification
from runtime.train.data.registry import Options, register
from runtime.train.data.splits import split_by_options

_GEN_DEFAULTS = {"n": 200, "seed": 0, "labels": "01", "test_fraction": 0.0}


@register("moons", **_GEN_DEFAULTS, noise=0.1)
def _load_moons(opts: Options, dtype: np.dtype) -> Dataset:
    """Two interleaving half circles (scikit-learn's make_moons) with Gaussian `noise`:
    x [n, 2], y 0/1 (±1 with `labels = "pm1"`)."""
    n, noise, seed, labels = opts.n(), opts.as_float("noise", 0.0), opts.seed(), opts.labels()
    if n < 2:
        raise DataError("option 'n' of data set 'moons' must be at least 2, one per moon")
    x, y = sklearn_sets.make_moons(n, noise, seed)
    return finish_classification("moons", x, y, opts, dtype, False, labels, {"noise": noise})


@register("circles", **_GEN_DEFAULTS, noise=0.05, factor=0.5)
def _load_circles(opts: Options, dtype: np.dtype) -> Dataset:
    """Two concentric circles (make_circles), the inner one `factor` times as large, with
    Gaussian `noise`: x [n, 2], y 0/1 (±1 with `labels = "pm1"`)."""
    n, noise, seed, labels = opts.n(), opts.as_float("noise", 0.0), opts.seed(), opts.labels()
    factor = opts.as_float("factor", 0.0, 1.0, hi_open=True)
    if n < 2:
        raise DataError("option 'n' of data set 'circles' must be at least 2, one per circle")
    x, y = sklearn_sets.make_circles(n, noise, factor, seed)
    info = {"noise": noise, "factor": factor}
    return finish_classification("circles", x, y, opts, dtype, False, labels, info)


@register("blobs", **_GEN_DEFAULTS, centers=2, std=1.0)
def _load_blobs(opts: Options, dtype: np.dtype) -> Dataset:
    """Gaussian blobs (make_blobs) of standard deviation `std` around `centers` (a count of
    random 2-D centers, or a list of points): x [n, d], y int64 (±1 with `labels = "pm1"`)."""
    n, seed, labels = opts.n(), opts.seed(), opts.labels()
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
            raise opts.bad("centers", "a count or a list of equally long lists of numbers", raw)
        k, d = centers.shape
        x, y = sklearn_sets.make_blobs(n, centers, std, seed)
    else:
        k = opts.as_int("centers", 1, 10**6)
        d = 2
        x, y = sklearn_sets.make_blobs(n, k, std, seed)
    if labels == "pm1" and k != 2:
        raise DataError(f"labels = \"pm1\" needs 2 blobs, but data set 'blobs' has {k} centers")
    ds = finish_classification("blobs", x, y, opts, dtype, False, labels, {"std": std})
    ds.info["n_classes"] = int(k)
    ds.info["n_features"] = int(d)
    return ds


@register(
    "linear_gaussian", n=200, d=None, noise=0.1, seed=0, bias=False, theta=None, test_fraction=0.0
)
def _load_linear_gaussian(opts: Options, dtype: np.dtype) -> Dataset:
    """y = x θ + noise·ε with x, ε ~ N(0, 1): x [n, d] (d = 5 unless `d` or `theta` says),
    y [n] float; `bias` appends a column of ones to x (and an intercept to θ); θ is drawn
    from the seed unless given. The info holds the true θ."""
    n, noise, seed, bias = opts.n(), opts.as_float("noise", 0.0), opts.seed(), opts.as_bool("bias")
    d = opts.as_int("d", 1, 10**6)
    raw_theta = opts.raw("theta")
    theta: np.ndarray | None = None
    if raw_theta is not None:
        try:
            theta = np.array(raw_theta, dtype=np.float64)
        except (TypeError, ValueError):
            theta = None
        if theta is None or theta.ndim != 1 or theta.size == 0 or not np.all(np.isfinite(theta)):
            raise opts.bad("theta", "a non-empty list of numbers", raw_theta)
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
    train, test = split_by_options({"x": x, "y": y}, opts, strata=None)
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




@register("random", n=1024, shape=None, classes=10, seed=0, test_fraction=0.0)
def _load_random(opts: Options, dtype: np.dtype) -> Dataset:
    """Random inputs x ~ N(0, 1) of shape [n, *shape] and labels y uniform in [0, classes):
    workloads for benchmarks and smoke tests."""
    n, seed = opts.n(), opts.seed()
    classes = opts.as_int("classes", 1, 10**6)
    raw = opts.raw("shape")
    if not isinstance(raw, list | tuple) or not raw or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in raw):
        raise opts.bad("shape", "a list of positive integers (the shape of one sample)", raw)
    elements = n * int(np.prod(raw, dtype=object))
    ensure_room(elements * (8 + dtype.itemsize), f"the {elements:,} random inputs of data set "
                f"'random' (n = {n}, shape = {list(raw)})", "lower n or shape")
    rng = np.random.Generator(np.random.PCG64(seed))
    x = rng.standard_normal((n, *raw)).astype(dtype)
    y = rng.integers(0, classes, n).astype(np.int64)
    train, test = split_by_options({"x": x, "y": y}, opts, strata=None)
    info = {"task": "classification", "n_classes": int(classes), "n_features": int(np.prod(raw))}
    return Dataset(train, test, info)
