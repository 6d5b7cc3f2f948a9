"""What the loaders of classic sets do after reading: split, standardize with the train part's
statistics, map labels (`labels = "pm1"`), cast to the requested dtype.

This module must not import `dsl`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.train.data.dataset import DataError, Dataset, class_info
from runtime.train.data.registry import Options
from runtime.train.data.splits import split_by_options

__all__ = ["finish_classification", "map_labels", "standardize"]


def standardize(
    train: np.ndarray, test: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Standardize with the train part's mean and std (std 0 counts as 1)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, None if test is None else (test - mean) / std, mean, std


def map_labels(y: np.ndarray, labels: str, dtype: np.dtype, name: str) -> np.ndarray:
    """0/1 labels as int64 ("01") or as float -1/+1 ("pm1", binary sets only)."""
    if labels == "01":
        return y.astype(np.int64)
    if not np.all((y == 0) | (y == 1)):
        raise DataError(f"labels = \"pm1\" needs a binary data set, but '{name}' has more classes")
    return (2 * y - 1).astype(dtype)


def finish_classification(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    opts: Options,
    dtype: np.dtype,
    standardize_x: bool,
    labels: str = "01",
    info: dict[str, Any] | None = None,
) -> Dataset:
    """Split (stratified), standardize x from train, map labels, cast."""
    train, test = split_by_options({"x": x, "y": y}, opts, strata=y)
    info = dict(info or {})
    info.update(class_info(y))
    if standardize_x:
        xtr, xte, mean, std = standardize(
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
            part["y"] = map_labels(part["y"], labels, dtype, name)
    info["n_features"] = int(np.prod(train["x"].shape[1:]))
    return Dataset(train, test, info)
