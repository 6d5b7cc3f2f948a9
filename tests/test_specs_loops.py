"""The specs with run-time loops: kalman_filter (a procedure: the filter matches a plain NumPy
loop to 1e-12 in float64, and its graph does not grow with the series) and rnn_runtime_loop
(the `loop` and the unrolled `for` variant give the same loss and gradients; it trains on
sequences far longer than unrolling allows).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import spec, step_values

import dsl


def kalman_numpy(y: np.ndarray, a: float, q: float, r: float) -> tuple[np.ndarray, np.ndarray]:
    mu, s2 = 0.0, 1.0
    means, variances = [], []
    for yt in y:
        p = a * a * s2 + q
        k = p / (p + r)
        mu = a * mu + k * (yt - a * mu)
        s2 = p * (1 - k)
        means.append(mu)
        variances.append(s2)
    return np.array(means), np.array(variances)


def test_kalman_filter_matches_a_numpy_loop() -> None:
    m = dsl.load(spec("kalman_filter"), dtype="float64")
    y = np.random.default_rng(3).standard_normal(300)
    out = m.run("filter", y=y, a=0.8, q=0.2, r=0.3)
    means, variances = kalman_numpy(y, 0.8, 0.2, 0.3)
    np.testing.assert_allclose(out["means"], means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["variances"], variances, rtol=1e-12, atol=1e-12)


def test_kalman_simulation_is_seeded_and_filters_its_own_series() -> None:
    m = dsl.load(spec("kalman_filter"), dtype="float64")
    a = m.run("simulate_and_filter", n=50, seed=1)
    b = m.run("simulate_and_filter", n=50, seed=1)
    assert set(a) == {"states", "y", "means", "variances"}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["y"].shape == (50,)
    means, _ = kalman_numpy(a["y"], 0.9, 0.1, 0.5)
    np.testing.assert_allclose(a["means"], means, rtol=1e-12, atol=1e-12)
    # the filter tracks the state better than the raw observations do
    assert np.mean((a["means"] - a["states"]) ** 2) < np.mean((a["y"] - a["states"]) ** 2)


def test_kalman_graph_does_not_grow_with_the_series() -> None:
    m = dsl.load(spec("kalman_filter"), dtype="float64")
    sizes = [len(m.procedure_graph("simulate_and_filter", n=n).graph.nodes) for n in (10, 10000)]
    assert sizes[0] == sizes[1]


def test_rnn_loop_and_unrolled_for_give_the_same_loss_and_gradients() -> None:
    looped, unrolled = (step_values("rnn_runtime_loop", r, batch=8, T="12")
                        for r in (True, False))
    assert looped.keys() == unrolled.keys() and len(looped) == 6
    for k in looped:
        np.testing.assert_allclose(looped[k], unrolled[k], rtol=1e-12, atol=1e-12, err_msg=k)


CARRY_FROM_A_CONSTANT = """
model carry_from_constant
input x: f32[4, 6, 3]
param w: f32[3, 3] = 0.1
const RUNTIME = true
net rnn(x) {
    h = zeros([4, 3])         # a compile-time value the loop carries: it becomes a tensor
    if RUNTIME { loop t in 0 .. 6 { h = tanh(x[:, t] @ w + h) } }
    else { for t in 0 .. 6 { h = tanh(x[:, t] @ w + h) } }
    return h
}
objective loss = mean(rnn(x) ** 2)
optimizer sgd(lr = 0.1) minimize loss
"""


@pytest.mark.parametrize("runtime", ["true", "false"])
def test_a_value_known_at_compile_time_is_carried_by_a_loop(runtime: str) -> None:
    x = np.random.default_rng(0).standard_normal((4, 6, 3))
    m = dsl.compile(CARRY_FROM_A_CONSTANT, dtype="float64", overrides={"RUNTIME": runtime},
                    data={"x": x})
    h = np.zeros((4, 3))
    for t in range(6):
        h = np.tanh(x[:, t] @ np.full((3, 3), 0.1) + h)
    assert float(m(x=x)["loss"]) == pytest.approx(np.mean(h ** 2), rel=1e-12)


def _size(g) -> int:
    return sum(1 + sum(_size(r) for r in n.regions) for n in g.nodes.values())


def test_rnn_runtime_loop_trains_on_long_sequences() -> None:
    m = dsl.load(spec("rnn_runtime_loop"), overrides={"T": "200"})
    short = dsl.load(spec("rnn_runtime_loop"), overrides={"T": "20"})
    step = lambda model: model.compiled.stages["optimized"][0][1]  # noqa: E731
    assert _size(step(m)) == _size(step(short))  # the body is compiled once, whatever T
    result = m.fit(steps=150)
    assert result.loss_final < 0.7 * result.loss_first
    assert result.metrics["test"]["acc"] >= 0.8


@pytest.mark.parametrize("args, says", [
    (["sample", "kalman_filter", "filter"], "needs argument 'y'"),
    (["sample", "kalman_filter", "smooth"], "has no procedure 'smooth'"),
])
def test_sample_mistakes(dslrun, args: list[str], says: str) -> None:
    proc = dslrun(*args)
    assert proc.returncode == 1 and says in proc.stderr and "Traceback" not in proc.stderr
