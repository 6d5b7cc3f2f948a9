"""Tests for the synthetic sequence tasks (runtime/train/data/sequences.py: adding, copy,
parity, sine) and the stream layout of sequential batches (`stream_order`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dsl
from dsl.compiler import compile_spec
from dsl.errors import DataErr
from runtime.train.data import Batcher, DataError, load_dataset, split_validation, stream_order

SETS = {
    "adding": ({"x": ("f32", (2, 50, 2)), "y": ("f32", (2,))}, "regression"),
    "copy": ({"x": ("i64", (2, 30)), "y": ("i64", (2, 30))}, "classification"),
    "parity": ({"x": ("f32", (2, 16, 1)), "y": ("i64", (2,))}, "classification"),
    "sine": ({"x": ("f32", (2, 32, 1)), "y": ("f32", (2, 32, 1))}, "regression"),
}


def _shapes(info: dict, n: int) -> dict:
    return {k: (dt, (n, *shape[1:])) for k, (dt, shape) in info.items()}


@pytest.mark.parametrize("name", sorted(SETS))
def test_shapes_dtypes_and_split_by_position(name):
    fields, task = SETS[name]
    whole = load_dataset(name, {"n": 200, "test_fraction": 0})
    ds = load_dataset(name, {"n": 200})  # test_fraction 0.1: the last 20 samples
    assert ds.field_info() == _shapes(fields, 180)
    assert ds.field_info("test") == _shapes(fields, 20)
    assert ds.info["task"] == task and ds.info["split_by"] == "position"
    for k in whole.train:
        np.testing.assert_array_equal(ds.train[k], whole.train[k][:180])
        np.testing.assert_array_equal(ds.test[k], whole.train[k][180:])
    f64 = load_dataset(name, {"n": 200}, dtype=np.float64)
    assert {k: dt for k, (dt, _) in f64.field_info().items()} == {
        k: "f64" if dt == "f32" else dt for k, (dt, _) in fields.items()}


@pytest.mark.parametrize("name", sorted(SETS))
def test_deterministic_and_seeded(name):
    a = load_dataset(name, {"n": 50, "seed": 4})
    b = load_dataset(name, {"n": 50, "seed": 4})
    c = load_dataset(name, {"n": 50, "seed": 5})
    for k in a.train:
        np.testing.assert_array_equal(a.train[k], b.train[k])
    assert not np.array_equal(a.train["x"], c.train["x"])


def test_adding_problem():
    ds = load_dataset("adding", {"n": 300, "T": 20, "test_fraction": 0}, dtype=np.float64)
    x, y = ds.train["x"], ds.train["y"]
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() < 1
    assert np.all(markers.sum(axis=1) == 2)
    assert np.all(markers[:, :10].sum(axis=1) == 1) and np.all(markers[:, 10:].sum(axis=1) == 1)
    np.testing.assert_allclose(y, (values * markers).sum(axis=1))
    assert abs(np.mean((y - 1.0) ** 2) - 1 / 6) < 0.03  # the baseline the docstring names


def test_copy_task():
    ds = load_dataset("copy", {"n": 100, "T": 25, "length": 5, "symbols": 4,
                               "test_fraction": 0})
    x, y = ds.train["x"], ds.train["y"]
    assert ds.info["vocab_size"] == ds.info["n_classes"] == 6
    assert x[:, :5].min() >= 1 and x[:, :5].max() <= 4
    assert np.all(x[:, 25 - 5 - 1] == 5)  # the delimiter
    assert np.all(x[:, 5:19] == 0) and np.all(x[:, 20:] == 0)
    np.testing.assert_array_equal(y[:, 20:], x[:, :5])
    assert np.all(y[:, :20] == 0)
    with pytest.raises(DataError, match="option 'T' of data set 'copy' must be at least 11"):
        load_dataset("copy", {"T": 10, "length": 5})


def test_parity():
    ds = load_dataset("parity", {"n": 400, "T": 9, "test_fraction": 0})
    x, y = ds.train["x"], ds.train["y"]
    assert set(np.unique(x)) == {0.0, 1.0}
    np.testing.assert_array_equal(y, x[:, :, 0].sum(axis=1).astype(np.int64) % 2)
    assert 0.4 < y.mean() < 0.6 and ds.info["n_classes"] == 2


def test_sine_windows_are_consecutive():
    ds = load_dataset("sine", {"n": 40, "T": 10, "period": 8.0, "test_fraction": 0.25},
                      dtype=np.float64)
    x, y = ds.train["x"][..., 0], ds.train["y"][..., 0]
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])  # y is x one step later
    np.testing.assert_array_equal(x[1:, 0], y[:-1, -1])  # window i + 1 continues window i
    np.testing.assert_array_equal(ds.test["x"][0, 0, 0], y[-1, -1])
    series = np.concatenate([x.reshape(-1), ds.test["x"].reshape(-1)])
    phase = math.asin(series[0]) if series[1] > series[0] else math.pi - math.asin(series[0])
    np.testing.assert_allclose(series, np.sin(2 * math.pi * np.arange(400) / 8 + phase),
                               atol=1e-12)
    noisy = load_dataset("sine", {"n": 40, "T": 10, "noise": 0.1})
    assert not np.allclose(noisy.train["x"], load_dataset("sine", {"n": 40, "T": 10}).train["x"])
    assert ds.info["stride"] == ds.info["T"] == 10


def test_sine_sequential_batches_continue_each_row():
    ds = load_dataset("sine", {"n": 64, "T": 8, "test_fraction": 0})
    batches = list(Batcher(ds.train, batch=4, sampling="sequential", reuse_buffers=False)
                   .epoch())
    assert len(batches) == 16
    for prev, nxt in zip(batches, batches[1:]):
        np.testing.assert_array_equal(nxt["x"][:, 0], prev["y"][:, -1])


def test_validation_of_a_sequence_set_is_its_last_rows():
    ds = load_dataset("parity", {"n": 100, "test_fraction": 0})
    v = split_validation(ds, 0.1, seed=0)
    np.testing.assert_array_equal(v.valid["x"], ds.train["x"][90:])


def test_too_few_samples_for_the_test_split():
    with pytest.raises(DataError, match="test_fraction = 0.5 of 1 samples leaves none"):
        load_dataset("parity", {"n": 1, "test_fraction": 0.5})


# --------------------------------------------------------------------------- stream layout


@pytest.mark.parametrize("n, batch", [(10, 4), (12, 4), (7, 3), (5, 5), (9, 1), (3, 2)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_stream_order(n, batch, drop_last):
    order = stream_order(n, batch, drop_last)
    length, extra = divmod(n, batch)
    if drop_last or extra == 0:
        assert sorted(order.tolist()) == list(range(length * batch))
    else:
        assert sorted(order.tolist()) == list(range(n))
    rows = [order[k:k + batch] for k in range(0, len(order), batch)]
    for prev, nxt in zip(rows, rows[1:]):
        np.testing.assert_array_equal(nxt, prev[: len(nxt)] + 1)  # each row continues
    if drop_last:
        np.testing.assert_array_equal(rows[0], np.arange(batch) * length)  # batchify


# --------------------------------------------------------------------------- in specs

RNN = """model rnn_sine
data sine(n = 128, T = 16, seed = 0)
input x: f32[B, 16, 1]
input y: f32[B, 16, 1]
const H = 16
net cell(x_t, h) { return tanh(dense(x_t, H) + dense(h, H, bias = false)) }
net readout(h) { return dense(h, 1) }
net rnn(x) {
    h = zeros([shape(x)[0], H])
    loss = 0.0
    for t in 0 .. 16 {
        h = cell(x[:, t], h)
        loss = loss + mse(readout(h), y[:, t])
    }
    return loss / 16
}
objective loss = rnn(x)
optimizer adam(lr = 1e-2, clip_norm = 1.0) minimize loss
train { batch = 8, epochs = 3, sampling = "sequential", drop_last = true, seed = 0 }
"""


def test_rnn_on_sine_windows_with_sequential_sampling_learns():
    model = dsl.compile(RNN)
    result = model.fit()
    assert result.loss_final < 0.5 * result.loss_first
    with pytest.raises(DataErr, match=r"input 'x' is f32\[B,16,1\], but axis 1 of its field "
                       r"has size 8, not 16 in the train split of sine"):
        compile_spec(RNN.replace("T = 16,", "T = 8,"), "rnn.dl")
