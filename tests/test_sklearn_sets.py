"""Tests for runtime.train.sklearn_sets: the same arrays as scikit-learn, without importing it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, cli_env
from sklearn import datasets

from runtime.train import sklearn_sets


def _assert_same(got, want):
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w, strict=True)


@pytest.mark.parametrize("name", sklearn_sets.SHIPPED)
def test_shipped_equals_sklearn(name):
    _assert_same(sklearn_sets.shipped(name), getattr(datasets, f"load_{name}")(return_X_y=True))


@pytest.mark.parametrize("name", sklearn_sets.SHIPPED)
@pytest.mark.parametrize("corrupt", [False, True])
def test_shipped_falls_back_to_sklearn(name, corrupt, tmp_path, monkeypatch):
    if corrupt:
        for f in ("digits.csv.gz", "diabetes_data_raw.csv.gz", "diabetes_target.csv.gz"):
            (tmp_path / f).write_bytes(b"not gzip")
        for f in ("iris.csv", "breast_cancer.csv", "wine_data.csv"):
            (tmp_path / f).write_text("n_samples,n_features\n1,2,x\n")
    monkeypatch.setattr(sklearn_sets, "_data_dir", lambda: tmp_path)
    _assert_same(sklearn_sets.shipped(name), getattr(datasets, f"load_{name}")(return_X_y=True))
    monkeypatch.setattr(sklearn_sets, "_data_dir", lambda: None)
    _assert_same(sklearn_sets.shipped(name), getattr(datasets, f"load_{name}")(return_X_y=True))


def test_shipped_unknown_name():
    with pytest.raises(ValueError, match="unknown scikit-learn data set"):
        sklearn_sets.shipped("linnerud")


_SIZES = [1, 2, 3, 7, 200]
_SEEDS = [0, 1, 42, 2**32 - 1]


@pytest.mark.parametrize("n", _SIZES)
@pytest.mark.parametrize("noise", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("seed", _SEEDS)
def test_make_moons_equals_sklearn(n, noise, seed):
    want = datasets.make_moons(n_samples=n, noise=noise, random_state=seed)
    _assert_same(sklearn_sets.make_moons(n, noise, seed), want)


@pytest.mark.parametrize("n", _SIZES)
@pytest.mark.parametrize("noise", [0.0, 0.05])
@pytest.mark.parametrize("factor", [0.0, 0.5, 0.8])
@pytest.mark.parametrize("seed", _SEEDS)
def test_make_circles_equals_sklearn(n, noise, factor, seed):
    want = datasets.make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
    _assert_same(sklearn_sets.make_circles(n, noise, factor, seed), want)


@pytest.mark.parametrize("n", _SIZES)
@pytest.mark.parametrize("centers", [1, 2, 3, 5])
@pytest.mark.parametrize("std", [0.0, 0.5, 1.0, 2.5])
@pytest.mark.parametrize("seed", _SEEDS)
def test_make_blobs_count_equals_sklearn(n, centers, std, seed):
    want = datasets.make_blobs(
        n_samples=n, n_features=2, centers=centers, cluster_std=std, random_state=seed
    )
    _assert_same(sklearn_sets.make_blobs(n, centers, std, seed), want)


@pytest.mark.parametrize("n", _SIZES)
@pytest.mark.parametrize(
    "centers",
    [[[0.0, 0.0]], [[-1.0, 2.0], [3.0, -4.5]], [[1.0], [2.0], [3.0]], [[0, 1, 2], [3, 4, 5]]],
)
@pytest.mark.parametrize("std", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("seed", [0, 7])
def test_make_blobs_centers_equals_sklearn(n, centers, std, seed):
    c = np.array(centers, dtype=np.float64)
    want = datasets.make_blobs(n_samples=n, centers=c, cluster_std=std, random_state=seed)
    _assert_same(sklearn_sets.make_blobs(n, c, std, seed), want)


@pytest.mark.parametrize("n_features", [1, 3])
def test_make_blobs_n_features_equals_sklearn(n_features):
    want = datasets.make_blobs(
        n_samples=11, n_features=n_features, centers=3, cluster_std=0.7, random_state=5
    )
    _assert_same(sklearn_sets.make_blobs(11, 3, 0.7, 5, n_features=n_features), want)


def test_loading_does_not_import_sklearn():
    code = (
        "import sys\n"
        "from runtime.train.data import load_dataset\n"
        "load_dataset('digits')\n"
        "load_dataset('circles')\n"
        "print('sklearn' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "False", out.stderr
