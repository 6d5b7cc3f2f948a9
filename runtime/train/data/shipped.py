"""scikit-learn's shipped data sets, never downloaded: digits, breast_cancer, iris, wine and
diabetes (read by `runtime.train.sklearn_sets` without importing scikit-learn). All take
`test_fraction` (0.2) and `seed` (0): a seeded split, stratified for the classification sets.

This module must not import `dsl`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from runtime.train import sklearn_sets
from runtime.train.data.dataset import DataError, Dataset
from runtime.train.data.images import bilinear_resize
from runtime.train.data.preprocess import finish_classification
from runtime.train.data.registry import Options, register
from runtime.train.data.splits import split_by_options


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


@register("digits", **_SPLIT_DEFAULTS, image=False, size=None, binarize=False, standardize=False)
def _load_digits(opts: Options, dtype: np.dtype) -> Dataset:
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
    ds = finish_classification("digits", x, y.astype(np.int64), opts, dtype, bool(standardize))
    for part in (ds.train, ds.test):
        if part is not None and image:
            part["x"] = part["x"].reshape(-1, 1, side, side)
    ds.info["image_shape"] = (1, side, side)
    return ds


@register("breast_cancer", **_SPLIT_DEFAULTS, standardize=True, labels="01")
def _load_breast_cancer(opts: Options, dtype: np.dtype) -> Dataset:
    """scikit-learn's breast cancer set: x [N, 30] standardized (`standardize`, on the train
    part), y int64 0/1, or ±1 floats with `labels = "pm1"`."""
    x, y = _shipped("breast_cancer")
    return finish_classification(
        "breast_cancer",
        x,
        y.astype(np.int64),
        opts,
        dtype,
        bool(opts.as_bool("standardize")),
        labels=opts.labels(),
    )


@register("iris", **_SPLIT_DEFAULTS, standardize=True)
def _load_iris(opts: Options, dtype: np.dtype) -> Dataset:
    """scikit-learn's iris: x [N, 4] standardized (`standardize`), y int64 in 0..2."""
    x, y = _shipped("iris")
    return finish_classification(
        "iris", x, y.astype(np.int64), opts, dtype, bool(opts.as_bool("standardize"))
    )


@register("wine", **_SPLIT_DEFAULTS, standardize=True)
def _load_wine(opts: Options, dtype: np.dtype) -> Dataset:
    """scikit-learn's wine: x [N, 13] standardized (`standardize`), y int64 in 0..2."""
    x, y = _shipped("wine")
    return finish_classification(
        "wine", x, y.astype(np.int64), opts, dtype, bool(opts.as_bool("standardize"))
    )


@register("diabetes", **_SPLIT_DEFAULTS, standardize=True)
def _load_diabetes(opts: Options, dtype: np.dtype) -> Dataset:
    """scikit-learn's diabetes regression set: x [N, 10] as shipped, y [N] float. By default
    `standardize` = true standardizes y (train mean and std, kept in the info); set it false
    for the raw targets."""
    x, y = _shipped("diabetes")
    train, test = split_by_options({"x": x, "y": y.astype(np.float64)}, opts, strata=None)
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
