"""The second half of the catalogue's convolution / normalization / regularization specs: each
test checks the "shows" column through the Python API (shortened runs where needed).

    mlp_regularized   test accuracy ≥ 0.97; the smoothed-CE optimum logit gap log((m−1)(1−ε)/ε)
    mlp_norms         batch / layer / group / instance norm; eval uses the running statistics
    multilabel_bce    independent sigmoid heads on multi-hot targets train; loss is full BCE
    resnet_small      trains with and without skips
    all_cnn           1,369,738 parameters printed by `dslrun check`; runs
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import spec

import dsl
from dsl.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_blas_thread")


# ---------------------------------------------------------------- mlp_regularized

def test_mlp_regularized_test_accuracy() -> None:
    model = dsl.load(spec("mlp_regularized"))
    result = model.fit()
    assert result.metrics["test"]["acc"] >= 0.97, result.metrics
    assert result.loss_final < result.loss_first


def test_mlp_regularized_decay_spares_biases() -> None:
    model = dsl.load(spec("mlp_regularized"))
    p = model.params
    want = sum(float(np.sum(v.astype(np.float64) ** 2)) for k, v in p.items()
               if k.endswith(".W"))
    out = model(x=model.dataset.test["x"][:8], y=model.dataset.test["y"][:8])
    assert float(out["weight_norm2"]) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(("mode", "gap"), [("m-1", math.log(9 * 0.9 / 0.1)),
                                           ("m", math.log((1 - 0.1 + 0.01) / 0.01))])
def test_label_smoothing_optimum_logit_gap(mode: str, gap: float) -> None:
    """B 6.15: free logits minimizing the smoothed CE sit log((m−1)(1−ε)/ε) = 4.394 apart
    (m = 10, ε = 0.1); with ε/m the gap is log((1 − ε + ε/m)/(ε/m))."""
    text = f"""model smoothing_gap
param z: [10] = zeros
objective loss = cross_entropy(reshape(z, [1, 10]), cast(array([3]), "i64"), smoothing = 0.1,
                               smoothing_mode = "{mode}")
optimizer gd(lr = 5.0) minimize loss
train {{ steps = 400 }}
"""
    model = dsl.compile(text, dtype="float64")
    model.fit()
    z = model.params["z"]
    others = np.delete(z, 3)
    np.testing.assert_allclose(others, others.mean(), atol=1e-9)
    assert z[3] - others.mean() == pytest.approx(gap, abs=1e-6)
    if mode == "m-1":
        assert gap == pytest.approx(4.394, abs=1e-3)


# ---------------------------------------------------------------- mlp_norms

NORMS = ["batch", "layer", "group", "instance", "none"]


def _norm_np(norm: str, z: np.ndarray, p: dict, s: dict) -> np.ndarray:
    pre = "classifier.normalize1."
    eps = 1e-5
    if norm == "batch":
        rm, rv = s[pre + "batch_norm1.running_mean"], s[pre + "batch_norm1.running_var"]
        return (z - rm) / np.sqrt(rv + eps) * p[pre + "batch_norm1.gamma"] \
            + p[pre + "batch_norm1.beta"]
    if norm == "layer":
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + eps) * p[pre + "layer_norm1.gamma"] \
            + p[pre + "layer_norm1.beta"]
    if norm in ("group", "instance"):
        g = 4 if norm == "group" else 16
        key = next(k[:-len(".gamma")] for k in p if k.startswith(pre) and k.endswith(".gamma"))
        v = z.reshape(len(z), g, -1)
        v = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + eps)
        v = v.reshape(len(z), 16, -1) * p[key + ".gamma"][None, :, None] \
            + p[key + ".beta"][None, :, None]
        return v.reshape(len(z), -1)
    return z


def _forward_np(norm: str, x: np.ndarray, values: dict, stats: str = "running") -> np.ndarray:
    v = {k: a.astype(np.float64) for k, a in values.items()}
    z = x @ v["classifier.dense1.W"] + v["classifier.dense1.b"]
    if norm == "batch" and stats == "batch":   # training mode: the batch's own statistics
        v = dict(v)
        v["classifier.normalize1.batch_norm1.running_mean"] = z.mean(0)
        v["classifier.normalize1.batch_norm1.running_var"] = z.var(0)
    h = np.maximum(_norm_np(norm, z, v, v), 0)
    return h @ v["classifier.dense2.W"] + v["classifier.dense2.b"]


@pytest.mark.parametrize("norm", NORMS)
def test_mlp_norms_eval_uses_running_statistics(norm: str) -> None:
    model = dsl.load(spec("mlp_norms"), overrides={"NORM": norm})
    result = model.fit(steps=60)
    assert result.loss_final < result.loss_first
    values = model.trainer.get_variables()
    te = model.dataset.test
    x = te["x"][:50]
    out = model(x=x)["scores"]
    np.testing.assert_allclose(out, _forward_np(norm, x.astype(np.float64), values),
                               rtol=2e-4, atol=2e-4)
    if norm == "batch":
        rm = values["classifier.normalize1.batch_norm1.running_mean"]
        rv = values["classifier.normalize1.batch_norm1.running_var"]
        assert np.max(np.abs(rm)) > 1e-2            # the buffers moved from zeros / ones
        assert np.max(np.abs(rv - 1)) > 1e-2
        train_mode = _forward_np(norm, x.astype(np.float64), values, stats="batch")
        assert np.max(np.abs(train_mode - out)) > 1e-2   # train and eval outputs differ
    else:
        assert not any("running" in k for k in values)


def test_mlp_norms_batch_reaches_096() -> None:
    model = dsl.load(spec("mlp_norms"))
    result = model.fit()
    assert result.metrics["test"]["acc"] >= 0.96, result.metrics


# ---------------------------------------------------------------- multilabel_bce

def test_multilabel_bce_trains_and_is_full_bce() -> None:
    model = dsl.load(spec("multilabel_bce"))
    result = model.fit(epochs=4)
    ev = model.evaluate("test")
    assert ev["loss"] < 0.5 * result.loss_first
    assert ev["bce_explicit"] == pytest.approx(ev["loss"], rel=1e-4)
    assert ev["label_acc"] >= 0.9, ev
    # the targets: d ≥ 5, even, prime, closed loop
    te = model.dataset.test
    d = te["y"]
    want = np.stack([d >= 5, d % 2 == 0, np.isin(d, [2, 3, 5, 7]),
                     np.isin(d, [0, 4, 6, 8, 9])], axis=1).astype(float)
    assert ev["positives"] == pytest.approx(want.mean(), rel=1e-5)
    probs = model(x=te["x"])["probs"]
    assert probs.shape == (len(d), 4)
    assert np.mean((probs >= 0.5) == want) == pytest.approx(ev["label_acc"], abs=1e-6)


# ---------------------------------------------------------------- resnet_small

@pytest.mark.parametrize("skip", [True, False])
def test_resnet_small_trains_both_variants(skip: bool) -> None:
    model = dsl.load(spec("resnet_small"), overrides={"SKIP": skip})
    result = model.fit(steps=40)
    assert result.loss_final < 0.6 * result.loss_first
    assert model.evaluate("test")["acc"] >= 0.7


# ---------------------------------------------------------------- all_cnn

def test_all_cnn_parameter_count_and_runs(capsys) -> None:
    code = cli_main(["check", spec("all_cnn")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "parameters: 1369738" in out
    model = dsl.load(spec("all_cnn"), overrides={"WIDTH": 0.25})
    result = model.fit(steps=2)
    assert np.isfinite(result.loss_final)
