"""`runtime.ops.row_reduce`: sums and means over trailing axes equal NumPy's on every layout,
take the matrix-vector path exactly where it is meant to, and write into a given `out`."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.ops import row_reduce
from runtime.ops.row_reduce import SHORT_MAX, SHORT_MAX_ROWS, SHORT_ROW, row_max, row_mean, row_sum

CASES = [  # shape, axis, keepdims, dtype, takes the matrix-vector path
    ((32, 4, 64, 64), -1, True, np.float32, True),
    ((2048, 128), (1,), False, np.float64, True),
    ((8, 6, 5), (1, 2), True, np.float32, True),  # two trailing axes, 30 per row
    ((8, 6, 5), (0, 1), False, np.float32, False),  # leading axes: NumPy's sum
    ((16, SHORT_ROW + 1), -1, False, np.float32, False),  # long rows keep the pairwise sum
    ((1, 64), -1, False, np.float32, False),  # one row: the whole array
    ((0, 64), -1, True, np.float32, False),  # no rows
    ((64, 1), -1, False, np.float32, False),  # rows of one
    ((16, 64), None, False, np.float32, False),  # everything
    ((16, 64), -1, False, np.float16, False),  # half precision: NumPy's float32 accumulation
]


@pytest.mark.parametrize("shape, axis, keepdims, dtype, fast", CASES)
def test_row_sum_and_mean_equal_numpy(shape, axis, keepdims, dtype, fast, monkeypatch) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    used = []
    real = row_reduce._ones
    monkeypatch.setattr(row_reduce, "_ones", lambda *a: used.append(a) or real(*a))
    for ours, ref in ((row_sum, np.sum), (row_mean, np.mean)):
        got, want = ours(np, x, axis, keepdims), ref(x, axis=axis, keepdims=keepdims)
        assert np.shape(got) == np.shape(want) and np.asarray(got).dtype == want.dtype
        tol = 1e-3 if dtype == np.float16 else 1e-5 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    assert bool(used) == fast


def test_transposed_input_keeps_numpy_sum(monkeypatch) -> None:
    x = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32).T
    monkeypatch.setattr(row_reduce, "_ones", None)  # the matrix-vector path would call it
    np.testing.assert_array_equal(row_sum(np, x, -1), np.sum(x, axis=-1))


def test_other_array_modules_keep_their_sum() -> None:
    class Module:  # an array module whose arrays are not NumPy's: its own sum, always
        def sum(self, x, axis, keepdims, out):
            return ("own sum", axis, keepdims)

        def mean(self, x, axis, keepdims):
            return ("own mean", axis, keepdims)

    class Arr:
        dtype, ndim, shape, size = np.dtype(np.float32), 2, (8, 16), 128
        flags = np.zeros(1).flags

    assert row_sum(Module(), Arr(), -1, True) == ("own sum", -1, True)
    assert row_mean(Module(), Arr(), -1) == ("own mean", -1, False)


def test_out_is_written() -> None:
    x = np.random.default_rng(2).standard_normal((128, 10)).astype(np.float32)
    out = np.empty((128, 1), np.float32)
    got = row_sum(np, x, -1, keepdims=True, out=out)
    assert got is out
    np.testing.assert_allclose(out, x.sum(axis=-1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out, row_sum(np, x, -1, keepdims=True))  # same bytes


def test_non_finite_values_propagate() -> None:
    x = np.zeros((4, 8), np.float32)
    x[0, 3], x[1, 2], x[2, 0], x[2, 1] = np.inf, np.nan, np.inf, -np.inf
    s = row_sum(np, x, -1)
    assert s[0] == np.inf and np.isnan(s[1]) and np.isnan(s[2]) and s[3] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(128, 10), (64, 2), (8, 8, 64), (SHORT_MAX_ROWS, 33),
                                   (SHORT_MAX_ROWS, SHORT_MAX), (200, 3)])
def test_row_max_by_doubling_windows_is_exact(shape, dtype) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    rows = x.reshape(-1, shape[-1])
    rows[3, 1], rows[5, :], rows[7, 1] = np.inf, -np.inf, np.nan  # NaN: its row only
    want = np.max(x, axis=-1, keepdims=True)
    # the array module is not used on the doubling path (None would fail on NumPy's)
    np.testing.assert_array_equal(row_max(None, x, -1), want)
    out = np.full_like(want, 7.0)
    assert row_max(None, x, -1, out=out) is out
    np.testing.assert_array_equal(out, want)
    flat = out.reshape(-1)
    assert np.isnan(flat[7]) and not np.isnan(flat[8]) and flat[5] == -np.inf


def test_row_max_writes_an_out_of_any_layout() -> None:
    x = np.random.default_rng(6).standard_normal((16, 8, 10))
    out = np.zeros((8, 16, 1)).transpose(1, 0, 2)  # not viewable as one flat run
    assert row_max(None, x, -1, out=out) is out
    np.testing.assert_array_equal(out, np.max(x, axis=-1, keepdims=True))


@pytest.mark.parametrize("shape, axis", [((16, 10), -1), ((128, SHORT_MAX + 1), -1),
                                         ((128, 10), 0), ((128, 10), (1,))])
def test_row_max_elsewhere_is_numpys(shape, axis) -> None:
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(row_max(np, x, axis), np.max(x, axis=axis, keepdims=True))
