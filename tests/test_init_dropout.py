"""Statistical tests: initializer variances match their formulas; inverted dropout keeps the
mean in training and is the identity in evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dsl
from runtime import init

# (name, shape, options, expected mean, expected variance)
FAN_IN, FAN_OUT = 400, 300
CONV = (64, 16, 5, 5)  # fan_in = 16·5·5 = 400, fan_out = 64·5·5 = 1600
CASES = [
    ("zeros", (FAN_IN, FAN_OUT), {}, 0.0, 0.0),
    ("constant", (FAN_IN, FAN_OUT), {"value": 0.5}, 0.5, 0.0),
    ("normal", (FAN_IN, FAN_OUT), {"std": 0.2}, 0.0, 0.04),
    ("uniform", (FAN_IN, FAN_OUT), {"low": -1.0, "high": 3.0}, 1.0, 16 / 12),
    ("fan_in_normal", (FAN_IN, FAN_OUT), {}, 0.0, 1 / FAN_IN),
    ("xavier_normal", (FAN_IN, FAN_OUT), {}, 0.0, 2 / (FAN_IN + FAN_OUT)),
    ("xavier_uniform", (FAN_IN, FAN_OUT), {}, 0.0, 2 / (FAN_IN + FAN_OUT)),
    ("he_normal", (FAN_IN, FAN_OUT), {}, 0.0, 2 / FAN_IN),
    ("he_uniform", (FAN_IN, FAN_OUT), {}, 0.0, 2 / FAN_IN),
    ("default", (FAN_IN, FAN_OUT), {}, 0.0, 1 / (3 * FAN_IN)),
    ("he_normal", CONV, {}, 0.0, 2 / 400),
    ("default", CONV, {}, 0.0, 1 / (3 * 400)),
    ("xavier_normal", CONV, {}, 0.0, 2 / (400 + 1600)),
]


@pytest.mark.parametrize(("name", "shape", "opts", "mean", "var"), CASES,
                         ids=[f"{c[0]}-{len(c[1])}d" for c in CASES])
def test_initializer_statistics(name, shape, opts, mean, var):
    w = init.initialize(name, shape, init.seeded_rng(0, "w"), **opts)
    assert w.shape == shape
    n = w.size
    assert abs(w.mean() - mean) <= 5 * math.sqrt(max(var, 1e-30) / n) + 1e-12
    # the sample variance of n draws has a relative standard error of about √(2/n)
    assert w.var() == pytest.approx(var, rel=6 * math.sqrt(2 / n), abs=1e-12)


def test_orthogonal_is_orthogonal():
    w = init.initialize("orthogonal", (64, 32), init.seeded_rng(1, "q"))
    np.testing.assert_allclose(w.T @ w, np.eye(32), atol=1e-10)
    w = init.initialize("orthogonal", (16, 48), init.seeded_rng(1, "q"))
    np.testing.assert_allclose(w @ w.T, np.eye(16), atol=1e-10)


def test_initializers_depend_on_seed_and_name_only():
    a = init.initialize("he_normal", (8, 8), init.seeded_rng(3, "net.dense1.W"))
    b = init.initialize("he_normal", (8, 8), init.seeded_rng(3, "net.dense1.W"))
    c = init.initialize("he_normal", (8, 8), init.seeded_rng(3, "net.dense2.W"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_compiling_draws_no_weights_until_they_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    text = ("model m\ninput x: f32[B, 3]\nparam w: [3, 2] = he_normal\n"
            "objective loss = mean(x @ w)\noptimizer sgd(lr = 0.1, momentum = 0.9) "
            "minimize loss\n")
    drawn = []
    real = init.initialize
    monkeypatch.setattr(init, "initialize", lambda *a, **k: drawn.append(a[0]) or real(*a, **k))
    program = dsl.compile(text, seed=3).program
    assert drawn == [] and program.param_count() == 6
    w = program.variables["w"].value
    assert drawn == ["he_normal"] and w.dtype == np.float32
    expected = real("he_normal", (3, 2), init.seeded_rng(3, "w")).astype(np.float32)
    np.testing.assert_array_equal(w, expected)
    assert program.variables["w"].value is w


def test_a_seed_given_by_a_const_seeds_the_initial_values() -> None:
    spec = ("model m\n{}input x: f32[B, 3]\nparam w: [3, 2] = he_normal\n"
            "objective loss = mean(x @ w)\noptimizer sgd(lr = 0.1) minimize loss\n"
            "train {{ seed = {} }}\n")
    by_const = dsl.compile(spec.format("const S = 7\n", "S")).params["w"]
    by_literal = dsl.compile(spec.format("", "7")).params["w"]
    np.testing.assert_array_equal(by_const, by_literal)
    assert not np.array_equal(by_literal, dsl.compile(spec.format("", "8")).params["w"])


DROPOUT = """
model drop
const P = 0.3
input x: f64[N, 2000]
param s: [] = 1.0
y = dropout(x, p = P)
output out = y
metric kept = mean(cast(y != 0, "f64"))
metric ymean = mean(y)
metric ymax = max(y)
objective loss = s * s
optimizer gd(lr = 0.1) minimize loss
"""


def _dropout_model(p: float):
    return dsl.compile(DROPOUT, overrides={"P": p}, dtype="float64")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_train_mode_keeps_the_mean(p):
    from runtime.backends import get_backend
    from runtime.plan import Plan

    m = _dropout_model(p)
    g = m.program.phases[0].graph  # the training step: dropout in train mode
    backend = get_backend("numpy")
    plan = Plan(g, {"N": 50}, backend, {"s": np.array(1.0)},
                outputs=["kept", "ymean", "ymax"], apply_updates=False,
                rng=backend.make_rng(0))
    kept, ymean, ymax = plan.run({"x": np.full((50, 2000), 2.0)})
    n = 50 * 2000
    assert abs(kept - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert ymax == pytest.approx(2.0 / (1 - p))  # inverted scaling 1/(1-p)
    assert abs(ymean - 2.0) < 5 * 2.0 * math.sqrt(p / ((1 - p) * n))


def test_dropout_eval_mode_is_identity():
    m = _dropout_model(0.5)
    x = np.random.default_rng(0).standard_normal((7, 2000))
    np.testing.assert_array_equal(m(x=x)["out"], x)
    assert not any(n.op.startswith("random") for n in m.program.forward.nodes.values())


def test_mc_dropout_reports_mean_and_variance():
    m = dsl.compile("""
model mc
input x: f64[N, 4]
output y = dropout(x, p = 0.5, mc = true)
""", dtype="float64")
    x = np.ones((3, 4))
    mean, var = m.predict_mc(samples=400, x=x)["y"]
    np.testing.assert_allclose(mean, 1.0, atol=0.25)  # E[y] = x
    np.testing.assert_allclose(var, 1.0, atol=0.3)  # Var[y] = x² p / (1 - p)
    plain = dsl.compile("model d\ninput x: f64[N, 4]\noutput y = dropout(x, p = 0.5)\n")
    np.testing.assert_array_equal(plain(x=x)["y"], x)
