"""scikit-learn's shipped data sets and toy generators without importing scikit-learn.

Importing scikit-learn takes one to two seconds, so this module reads the data files bundled
with the installed scikit-learn directly and re-implements `make_moons`, `make_circles` and
`make_blobs` in NumPy. The arrays (values and dtypes) are identical to scikit-learn's:

* `shipped(name)` is `sklearn.datasets.load_<name>(return_X_y=True)` for digits,
  breast_cancer, iris, wine and diabetes; it falls back to scikit-learn itself when the files
  cannot be found or read.
* `make_moons`, `make_circles` and `make_blobs` draw from `np.random.RandomState(seed)` in the
  same order as scikit-learn (points, shuffle, then noise).

This module must not import `dsl`, nor `sklearn` except in the fallback.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import numbers
import warnings
import zlib
from pathlib import Path

import numpy as np

__all__ = ["SHIPPED", "make_blobs", "make_circles", "make_moons", "shipped"]

SHIPPED = ("digits", "breast_cancer", "iris", "wine", "diabetes")

_CSV_FILES = {"iris": "iris.csv", "breast_cancer": "breast_cancer.csv", "wine": "wine_data.csv"}


def _data_dir() -> Path | None:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "datasets" / "data"


def shipped(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(data, target) exactly as `sklearn.datasets.load_<name>(return_X_y=True)` returns them."""
    if name not in SHIPPED:
        raise ValueError(f"unknown scikit-learn data set {name!r}; known: {', '.join(SHIPPED)}")
    data_dir = _data_dir()
    if data_dir is not None:
        try:
            return _read(name, data_dir)
        except (OSError, ValueError, IndexError, EOFError, StopIteration, csv.Error, zlib.error):
            pass
    from sklearn import datasets  # fallback only: importing scikit-learn is slow

    return getattr(datasets, f"load_{name}")(return_X_y=True)


def _read(name: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        data = _load_gz(data_dir / "digits.csv.gz", delimiter=",")
        return data[:, :-1], data[:, -1].astype(int, copy=False)
    if name == "diabetes":
        data = _load_gz(data_dir / "diabetes_data_raw.csv.gz")
        target = _load_gz(data_dir / "diabetes_target.csv.gz")
        data = _scale(data)
        data /= data.shape[0] ** 0.5
        return data, target
    return _load_csv(data_dir / _CSV_FILES[name])


def _load_gz(path: Path, **kwargs: object) -> np.ndarray:
    with open(path, "rb") as f, gzip.open(f, mode="rt", encoding="utf-8") as text:
        return np.loadtxt(text, **kwargs)


def _load_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """sklearn.datasets._base.load_csv_data: a header `n_samples,n_features,...`, then rows of
    features followed by an integer target."""
    with open(path, encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows)
        n_samples, n_features = int(header[0]), int(header[1])
        data = np.empty((n_samples, n_features))
        target = np.empty((n_samples,), dtype=int)
        for i, row in enumerate(rows):
            data[i] = np.asarray(row[:-1], dtype=np.float64)
            target[i] = np.asarray(row[-1], dtype=int)
    return data, target


def _scale(x: np.ndarray) -> np.ndarray:
    """sklearn.preprocessing.scale(x, copy=False) of a dense float64 array (axis 0, with mean
    and std): centering and scaling in place, with the same re-centering corrections."""
    mean = np.nanmean(x, 0)
    scale = np.nanstd(x, 0)
    x -= mean
    mean_1 = np.nanmean(x, axis=0)
    if not np.allclose(mean_1, 0):
        warnings.warn(
            "Numerical issues were encountered when centering the data and might not be "
            "solved. Dataset may contain too large values. You may need to prescale your "
            "features.",
            stacklevel=2,
        )
        x -= mean_1
    scale[scale < 10 * np.finfo(scale.dtype).eps] = 1.0
    x /= scale
    mean_2 = np.nanmean(x, axis=0)
    if not np.allclose(mean_2, 0):
        warnings.warn(
            "Numerical issues were encountered when scaling the data and might not be solved. "
            "The standard deviation of the data is probably very close to 0. ",
            stacklevel=2,
        )
        x -= mean_2
    return x


def _shuffle(
    rs: np.random.RandomState, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """sklearn.utils.shuffle(x, y, random_state=rs)."""
    indices = np.arange(x.shape[0])
    rs.shuffle(indices)
    return x[indices], y[indices]


def _two_classes(
    rs: np.random.RandomState,
    out_x: np.ndarray,
    out_y: np.ndarray,
    in_x: np.ndarray,
    in_y: np.ndarray,
    noise: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    x = np.vstack([np.append(out_x, in_x), np.append(out_y, in_y)]).T
    y = np.hstack([np.zeros(len(out_x), dtype=np.intp), np.ones(len(in_x), dtype=np.intp)])
    x, y = _shuffle(rs, x, y)
    if noise is not None:
        x += rs.normal(scale=noise, size=x.shape)
    return x, y


def make_moons(n: int, noise: float | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn.datasets.make_moons(n_samples=n, noise=noise, random_state=seed)."""
    rs = np.random.RandomState(seed)
    n_out = n // 2
    n_in = n - n_out
    return _two_classes(
        rs,
        np.cos(np.linspace(0, np.pi, n_out)),
        np.sin(np.linspace(0, np.pi, n_out)),
        1 - np.cos(np.linspace(0, np.pi, n_in)),
        1 - np.sin(np.linspace(0, np.pi, n_in)) - 0.5,
        noise,
    )


def make_circles(
    n: int, noise: float | None, factor: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """sklearn.datasets.make_circles(n_samples=n, noise=noise, factor=factor,
    random_state=seed)."""
    rs = np.random.RandomState(seed)
    n_out = n // 2
    n_in = n - n_out
    lin_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    lin_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    return _two_classes(
        rs,
        np.cos(lin_out),
        np.sin(lin_out),
        np.cos(lin_in) * factor,
        np.sin(lin_in) * factor,
        noise,
    )


def make_blobs(
    n: int, centers: int | np.ndarray, std: float, seed: int, n_features: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """sklearn.datasets.make_blobs(n_samples=n, n_features=n_features, centers=centers,
    cluster_std=std, random_state=seed); an array of centers sets the number of features."""
    rs = np.random.RandomState(seed)
    if isinstance(centers, numbers.Integral):
        centers = rs.uniform(-10.0, 10.0, size=(int(centers), n_features))
    else:
        centers = np.asarray(centers, dtype=np.float64)
        n_features = centers.shape[1]
    k = len(centers)
    per_center = [n // k] * k
    for i in range(n % k):
        per_center[i] += 1
    x = np.empty((n, n_features), dtype=np.float64)
    y = np.empty((n,), dtype=int)
    start = 0
    for i, m in enumerate(per_center):
        x[start : start + m] = rs.normal(loc=centers[i], scale=std, size=(m, n_features))
        y[start : start + m] = i
        start += m
    return _shuffle(rs, x, y)
