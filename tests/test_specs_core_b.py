"""The second half of the catalogue's Core specs: each test checks the "shows" column through
the Python API, every spec passes a whole-spec gradient check, and the bench specs compile.

    logistic_regression        test accuracy ≥ 0.93 on breast_cancer; the loss is Eq. 6.9
    softmax_regression         test accuracy ≥ 0.93 on digits; the loss is Eq. 6.12 at any T
    mlp_digits                 test accuracy ≥ 0.97 on its defaults
    quadratic_optimizers       six optimizers follow their update rules on a₁x₁² + a₂x₂²;
                               GD converges for η < 2/λ₁ and diverges for η > 2/λ₁
    optimizers_from_documents  the heavy-ball forms B 10.4-10.6, C 2.7 and D/L give the same
                               iterates; B 10.8 is the prelude's nesterov; RMSProp C 2.8 and
                               the book's Adam 11.25 (well-defined at t = 0) follow their rules
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import spec

import dsl
from dsl.cli import main as cli_main
from dsl.compiler import compile_file
from runtime.gradcheck import check_gradients

# ---------------------------------------------------------------- classifiers

def test_logistic_regression_test_accuracy_and_loss() -> None:
    model = dsl.load(spec("logistic_regression"))
    model.fit()
    ev = model.evaluate("test")
    assert ev["acc"] >= 0.93, ev
    # the metric `nll` is Eq. 6.9 (as a mean) on the test split, computed here in NumPy
    te = model.dataset.test
    w, b = model.params["w"].astype(np.float64), float(model.params["b"])
    p = 1 / (1 + np.exp(-(te["x"].astype(np.float64) @ w + b)))
    y = te["y"].astype(np.float64)
    nll = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert ev["nll"] == pytest.approx(nll, rel=1e-4)
    assert ev["acc"] == pytest.approx(np.mean((p >= 0.5) == (y == 1)), abs=1e-6)


def _softmax_ce(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))


def test_softmax_regression_test_accuracy() -> None:
    model = dsl.load(spec("softmax_regression"))
    model.fit()
    ev = model.evaluate("test")
    assert ev["acc"] >= 0.93, ev
    assert ev["ce_explicit"] == pytest.approx(ev["loss"], rel=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 3.0])
def test_softmax_regression_loss_is_eq_6_12_at_temperature(temperature: float) -> None:
    model = dsl.load(spec("softmax_regression"), dtype="float64",
                     overrides={"T": temperature})
    model.fit(steps=10)
    te = model.dataset.test
    logits = te["x"] @ model.params["W"] + model.params["b"]
    ev = model.evaluate("test")
    assert ev["loss"] == pytest.approx(_softmax_ce(logits, te["y"], temperature), rel=1e-10)
    assert ev["ce_explicit"] == pytest.approx(ev["loss"], rel=1e-10)
    assert ev["acc"] == pytest.approx(np.mean(logits.argmax(axis=1) == te["y"]))


def test_mlp_digits_reaches_097_on_its_defaults() -> None:
    model = dsl.load(spec("mlp_digits"))
    result = model.fit()
    assert result.step == 460  # 20 epochs of ceil(1437 / 64) batches: the full default run
    assert result.metrics["test"]["acc"] >= 0.97, result.metrics
    assert result.loss_final < result.loss_first


# ---------------------------------------------------------------- optimizers on a quadratic

A1, A2 = 1.0, 10.0
X0 = np.array([1.5, 1.0])
LAMBDA1 = 2 * max(A1, A2)


def _grad(x: np.ndarray) -> np.ndarray:
    return np.array([2 * A1 * x[0], 2 * A2 * x[1]])


def _f(x: np.ndarray) -> float:
    return float(A1 * x[0] ** 2 + A2 * x[1] ** 2)


def _numpy_paths(steps: int, lr_gd: float) -> dict[str, np.ndarray]:
    """Independent NumPy loops of the six rules with the spec's default hyperparameters;
    row t of each path is xᵗ."""
    lr_m, mom, lr_ag, lr_rms, beta, lr_adam = 0.05, 0.7, 0.5, 0.02, 0.9, 0.1
    x = {k: X0.copy() for k in ("gd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")}
    v_m, v_n, s_ag, s_rms = (np.zeros(2) for _ in range(4))
    m_a, v_a = np.zeros(2), np.zeros(2)
    paths: dict[str, list[np.ndarray]] = {k: [] for k in x}
    for t in range(1, steps + 1):
        for k in x:
            paths[k].append(x[k].copy())
        x["gd"] = x["gd"] - lr_gd * _grad(x["gd"])
        v_m = mom * v_m + _grad(x["momentum"])
        x["momentum"] = x["momentum"] - lr_m * v_m
        g = _grad(x["nesterov"])
        v_n = mom * v_n + g
        x["nesterov"] = x["nesterov"] - lr_m * (g + mom * v_n)
        g = _grad(x["adagrad"])
        s_ag = s_ag + g * g
        x["adagrad"] = x["adagrad"] - lr_ag * g / (np.sqrt(s_ag) + 1e-10)
        g = _grad(x["rmsprop"])
        s_rms = beta * s_rms + (1 - beta) * g * g
        x["rmsprop"] = x["rmsprop"] - lr_rms * g / (np.sqrt(s_rms) + 1e-8)
        g = _grad(x["adam"])
        m_a = 0.9 * m_a + 0.1 * g
        v_a = 0.999 * v_a + 0.001 * g * g
        mhat, vhat = m_a / (1 - 0.9 ** t), v_a / (1 - 0.999 ** t)
        x["adam"] = x["adam"] - lr_adam * mhat / (np.sqrt(vhat) + 1e-8)
    out = {k: np.array(p) for k, p in paths.items()}
    out.update({f"final_{k}": v for k, v in x.items()})
    return out


def test_quadratic_optimizers_follow_their_rules() -> None:
    model = dsl.load(spec("quadratic_optimizers"), dtype="float64")
    model.fit()
    out = model()
    want = _numpy_paths(100, 0.09)
    for k in ("gd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"):
        np.testing.assert_allclose(out[f"trajectory_{k}"], want[k], rtol=1e-10, atol=1e-12,
                                   err_msg=k)
        np.testing.assert_allclose(out[f"final_{k}"], want[f"final_{k}"], rtol=1e-10,
                                   atol=1e-12, err_msg=k)
        assert float(out[f"loss_{k}"]) == pytest.approx(_f(want[f"final_{k}"]), rel=1e-9,
                                                        abs=1e-15)
        assert float(out[f"f_{k}"]) == pytest.approx(float(out[f"loss_{k}"]), abs=1e-15)
    # every method makes progress from f(x⁰) = 12.25; the non-adaptive ones to ~0
    for k in ("gd", "momentum", "nesterov", "adagrad"):
        assert float(out[f"loss_{k}"]) < 1e-12, k
    for k in ("rmsprop", "adam"):
        assert float(out[f"loss_{k}"]) < 1e-3, k
    assert float(out["lr_critical"]) == pytest.approx(2 / LAMBDA1)


@pytest.mark.parametrize(("lr", "diverges"), [(0.095, False), (0.105, True)])
def test_quadratic_gd_threshold_at_2_over_lambda1(lr: float, diverges: bool) -> None:
    model = dsl.load(spec("quadratic_optimizers"), dtype="float64", overrides={"LR_GD": lr})
    model.fit()
    out = model()
    path = out["trajectory_gd"]
    # x₂ⁿ = (1 − ηλ₁)ⁿ x₂⁰ exactly: the oscillating coordinate of D Figure 2b
    n = np.arange(len(path))
    np.testing.assert_allclose(path[:, 1], (1 - lr * LAMBDA1) ** n * X0[1], rtol=1e-9)
    np.testing.assert_allclose(path[:, 0], (1 - lr * 2 * A1) ** n * X0[0], rtol=1e-9)
    amp = np.abs(path[:, 1])
    f_end = float(out["loss_gd"])
    if diverges:
        assert f_end > 1e3 * _f(X0)
        assert np.all(np.diff(amp) > 0)
    else:
        assert f_end < 1e-6 * _f(X0)
        assert np.all(np.diff(amp) < 0)
    # the other optimizers do not depend on GD's step size
    assert float(out["loss_momentum"]) < 1e-12


def test_quadratic_gd_threshold_through_the_cli(tmp_path, capsys, monkeypatch) -> None:
    """`--set LR_GD=...` on both sides of 2/λ₁ = 0.1, run in-process (no subprocess)."""
    monkeypatch.chdir(tmp_path)
    finals = {}
    for lr in ("0.099", "0.101"):
        js = tmp_path / f"{lr}.json"
        code = cli_main([spec("quadratic_optimizers"), "--set", f"LR_GD={lr}", "--quiet",
                         "--dtype", "float64", "--json", str(js)])
        assert code == 0, capsys.readouterr().err
        data = json.loads(js.read_text())
        finals[lr] = data["outputs"]["loss_gd"]
        assert data["outputs"]["lr_critical"] == pytest.approx(0.1)
    assert finals["0.099"] < 0.1 * _f(X0) < _f(X0) < finals["0.101"]


# ---------------------------------------------------------------- the documents' variants

HEAVY_BALL = ("x_polyak_10_4", "x_polyak_10_5", "x_polyak_10_6", "x_momentum_c_2_7",
              "x_momentum_d_l")


def test_heavy_ball_forms_give_identical_iterates() -> None:
    model = dsl.load(spec("optimizers_from_documents"), dtype="float64")
    worst = [0.0, 0.0]
    moved = [0.0]

    def on_step(step: int, losses: dict) -> None:
        p = model.params
        ref = p["x_momentum_d_l"]
        worst[0] = max(worst[0], *(float(np.max(np.abs(p[k] - ref))) for k in HEAVY_BALL))
        worst[1] = max(worst[1], float(np.max(np.abs(p["x_nesterov_10_8"]
                                                     - p["x_nesterov"]))))
        moved[0] = max(moved[0], float(np.max(np.abs(ref - X0))))

    result = model.fit(on_step=on_step)
    assert result.step == 200
    assert moved[0] > 1.0                 # the iterates really travel
    assert worst[0] < 1e-12, worst
    assert worst[1] < 1e-12, worst
    out = model()
    assert float(out["heavy_ball_gap"]) < 1e-12
    assert float(out["nesterov_gap"]) < 1e-12
    # and they are the heavy ball: an independent loop of B 10.4 with η = 0.05, ρ = 0.9
    w_prev, w = X0.copy(), X0.copy()
    for _ in range(200):
        w_prev, w = w, w - 0.05 * _grad(w) + 0.9 * (w - w_prev)
    for k in HEAVY_BALL:
        np.testing.assert_allclose(out["final_" + k[2:]], w, rtol=1e-9, atol=1e-13)


def test_heavy_ball_forms_agree_in_float32_too() -> None:
    out = dsl.load(spec("optimizers_from_documents"))
    out.fit(steps=50)
    assert float(out()["heavy_ball_gap"]) < 1e-5


def test_rmsprop_c_2_8_has_delta_inside_the_root() -> None:
    model = dsl.load(spec("optimizers_from_documents"), dtype="float64",
                     overrides={"DELTA": 1.0, "STEPS": 30})
    model.fit()
    out = model()
    x_in, v_in = X0.copy(), np.zeros(2)
    x_out, v_out = X0.copy(), np.zeros(2)
    for _ in range(30):
        g = _grad(x_in)
        v_in = 0.9 * v_in + 0.1 * g * g
        x_in = x_in - 0.02 / np.sqrt(v_in + 1.0) * g
        g = _grad(x_out)
        v_out = 0.9 * v_out + 0.1 * g * g
        x_out = x_out - 0.02 * g / (np.sqrt(v_out) + 1.0)
    np.testing.assert_allclose(out["final_rmsprop_c_2_8"], x_in, rtol=1e-12)
    np.testing.assert_allclose(out["final_rmsprop"], x_out, rtol=1e-12)
    assert np.max(np.abs(x_in - x_out)) > 1e-3  # a large δ tells the two placements apart


def _adam_book_rule() -> str:
    text = Path(spec("optimizers_from_documents")).read_text()
    m = re.search(r"^optimizer adam_book\(.*?^\}\n", text, re.S | re.M)
    assert m, "adam_book is defined in the spec"
    return m.group(0)


def _adam_book_steps(feedback: bool, grads: list[float], lr: float = 1e-3, b1: float = 0.9,
                     b2: float = 0.999, eps: float = 1e-8) -> np.ndarray:
    """B 11.25 with the exponent t + 1 in the debiasing, in NumPy: with feedback the debiased
    averages are stored (as printed); without, the raw ones (Kingma–Ba, ε inside √)."""
    m = v = 0.0
    steps = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        if feedback:
            m, v = mhat, vhat
        steps.append(lr * mhat / np.sqrt(vhat + eps))
    return np.array(steps)


@pytest.mark.parametrize("feedback", [True, False])
def test_book_adam_is_well_defined_at_t0(feedback: bool) -> None:
    """The spec's own rule, on an objective w·g_t whose gradient is the sequence g_t."""
    grads = [1.0, -0.5, 2.0, 0.3]
    options = f"lr = 1e-3, beta1 = 0.9, beta2 = 0.999, feedback = {str(feedback).lower()}"
    text = f"""model adam_book_probe
{_adam_book_rule()}
const G = {grads}
param w: [] = 0.0
objective lin = w * sum(where(arange(0, 4) == step - 1, array(G), 0.0))
optimizer adam_book({options}) minimize lin
train {{ steps = 4 }}
"""
    model = dsl.compile(text, dtype="float64")
    ws = [float(model.params["w"])]
    model.fit(on_step=lambda s, losses: ws.append(float(model.params["w"])))
    steps = -np.diff(ws)
    assert np.all(np.isfinite(steps))
    np.testing.assert_allclose(steps, _adam_book_steps(feedback, grads), rtol=1e-12)
    if feedback:   # the printed feedback shrinks the steps (the notes' check, §4.6)
        np.testing.assert_allclose(steps, [1.0e-3, 2.0e-4, 3.82e-5, 6.34e-6], rtol=3e-3)
    else:          # Kingma–Ba's steps (ε inside √ changes them by < 1e-7 relative)
        np.testing.assert_allclose(steps, [1.0e-3, 2.66e-4, 6.58e-4, 6.10e-4], rtol=2e-3)


def test_book_adam_default_on_the_quadratic() -> None:
    model = dsl.load(spec("optimizers_from_documents"), dtype="float64")
    model.fit()
    out = model()
    # β₁ = 0.99 (B l. 4951) spirals in slowly, but steadily, from f(x⁰) = 12.25
    assert np.all(np.isfinite(out["final_adam_book"]))
    assert float(out["f_adam_book"]) < 1.0
    assert float(out["f_adam"]) < 1e-6


@pytest.mark.parametrize("name", ["quadratic_optimizers", "optimizers_from_documents"])
def test_every_objective_of_the_quadratic_specs_checks(name: str) -> None:
    """`dslrun check-grad` checks the objective of each phase; these specs run one phase with
    one objective per optimizer, so every objective is checked here against its parameter."""
    c = compile_file(spec(name), dtype="f64")
    p = c.program
    graph = c.stages["step"][0][1].copy()
    graph.outputs = {o: graph.outputs[o] for o in p.objectives}
    values = {n: v.value.astype(np.float64) for n, v in p.variables.items()}
    # a point off the minimum and off the start, different in each coordinate
    for n, v in p.variables.items():
        if v.role == "param":
            values[n] = np.array([0.7, -1.3])
    for obj in p.objectives:
        x = "x_" + obj[2:]
        errs = check_gradients(graph, obj, [x], values, {"step": np.float64(1)}, {}, seed=0)
        assert errs[x] < 1e-8, (obj, errs)


@pytest.mark.parametrize("name", ["bench/mlp_small", "bench/mlp_large"])
def test_bench_specs_check(name: str, capsys) -> None:
    code = cli_main(["check", spec(name)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ok" in out.splitlines()[0]
    sizes = {"bench/mlp_small": (64, 256, 4096), "bench/mlp_large": (784, 1024, 8192)}[name]
    d, h, n = sizes
    assert f"parameters: {d * h + h + h * h + h + h * 10 + 10}" in out
    assert "data: random" in out  # names are checked at compile time; sizes at load time
