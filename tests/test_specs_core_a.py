"""The first Core specs of the catalogue: each test checks the catalogue's "shows" column
through the Python API, and every spec passes a whole-spec gradient check.

    autodiff_example  f = −0.126928, ∂f/∂x = 0.238406, ∂f/∂y = 0.119203 at (1, 2);
                      finite at xy = 1000
    one_neuron        symbolic gradients equal the closed form of B Eqs. 4.7-4.8
    linear_regression GD solution within 1e-4 of (XᵀX)⁻¹XᵀY
    ridge_regression  GD solution within 1e-4 of (XᵀX + λI)⁻¹XᵀY
    gaussian_mle_regression  learned σ within 10% of the generating noise level
    huber_regression  the Huber fit ignores the outliers that drag least squares away
    quantile_regression  empirical coverage of y ≤ f(x) ≈ τ
    lasso             the irrelevant weights are exactly zero (proximal update rule)
    perceptron        zero training mistakes on separable blobs
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import spec

import dsl
from dsl.compiler import compile_file
from runtime.gradcheck import check_gradients


def fitted(name: str, **kw) -> dsl.api.Model:
    model = dsl.load(spec(name), dtype="float64", **kw)
    model.fit()
    return model


def closed_form_ls(x: np.ndarray, y: np.ndarray, lam: float = 0.0) -> np.ndarray:
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


# ---------------------------------------------------------------- the "shows" column

def test_autodiff_example_values_at_1_2() -> None:
    out = dsl.load(spec("autodiff_example"))()
    assert float(out["f"]) == pytest.approx(-0.126928, abs=5e-7)
    assert float(out["dfdx"]) == pytest.approx(0.238406, abs=5e-7)
    assert float(out["dfdy"]) == pytest.approx(0.119203, abs=5e-7)
    # the closed forms of C l. 153: ∂f/∂x = y σ(−xy), ∂f/∂y = x σ(−xy)
    s = 1 / (1 + np.exp(2.0))
    assert float(out["dfdx"]) == pytest.approx(2 * s, rel=1e-12)
    assert float(out["dfdy"]) == pytest.approx(1 * s, rel=1e-12)


@pytest.mark.parametrize(("x", "y", "f", "dfdx", "dfdy"), [
    (1000.0, 1.0, 0.0, 0.0, 0.0),           # exp(1000) overflows in the printed graph
    (-1000.0, 1.0, -1000.0, 1.0, -1000.0),  # f = log σ(xy) ≈ xy, ∂f/∂x = y, ∂f/∂y = x
])
def test_autodiff_example_is_finite_for_large_xy(x, y, f, dfdx, dfdy) -> None:
    out = dsl.load(spec("autodiff_example"), overrides={"x": x, "y": y})()
    for name, want in (("f", f), ("dfdx", dfdx), ("dfdy", dfdy)):
        assert np.isfinite(out[name]), name
        assert float(out[name]) == pytest.approx(want, abs=1e-9), name


def test_autodiff_example_cli_at_xy_1000(dslrun) -> None:
    r = dslrun(spec("autodiff_example"), "--set", "x=1000", "--set", "y=1")
    assert r.returncode == 0, r.stderr
    assert "nan" not in r.stdout.lower() and "inf" not in r.stdout.lower(), r.stdout
    assert "dfdx" in r.stdout


def test_one_neuron_gradients_equal_closed_form() -> None:
    out = dsl.load(spec("one_neuron"), dtype="float64")()
    for g in ("dl_dv", "dl_dw", "dl_dx"):
        np.testing.assert_allclose(out[g], out[f"{g}_closed_form"], rtol=1e-12, atol=1e-15)
    # and an independent NumPy evaluation of Eqs. 4.7-4.8 at the spec's numbers
    x, y = np.array([0.5, -1.0, 2.0]), 1.5
    w, v = np.array([0.3, -0.2, 0.1]), 2.0
    s = 1 / (1 + np.exp(-w @ x))
    np.testing.assert_allclose(out["dl_dv"], (y - v * s) * (-s), rtol=1e-12)
    np.testing.assert_allclose(out["dl_dw"], (y - v * s) * (-v * s * (1 - s)) * x, rtol=1e-12)
    np.testing.assert_allclose(out["loss_value"], 0.5 * (y - v * s) ** 2, rtol=1e-12)


def test_linear_regression_gd_meets_closed_form() -> None:
    model = fitted("linear_regression")
    tr = model.dataset.train
    want = closed_form_ls(tr["x"], tr["y"])
    theta = model.params["theta"]
    assert np.max(np.abs(theta - want)) < 1e-4
    assert float(model()["max_abs_diff"]) < 1e-4


def test_linear_regression_float32_default_is_close_too() -> None:
    model = dsl.load(spec("linear_regression"))
    model.fit()
    assert float(model()["max_abs_diff"]) < 1e-4


def test_ridge_regression_gd_meets_closed_form() -> None:
    model = fitted("ridge_regression")
    tr = model.dataset.train
    want = closed_form_ls(tr["x"], tr["y"], lam=10.0)
    theta = model.params["theta"]
    assert np.max(np.abs(theta - want)) < 1e-4
    # the penalty matters: the ridge solution is not the least-squares one
    assert np.max(np.abs(want - closed_form_ls(tr["x"], tr["y"]))) > 1e-2


def test_gaussian_mle_recovers_sigma() -> None:
    model = fitted("gaussian_mle_regression")
    sigma = float(np.exp(model.params["log_sigma"]))
    assert abs(sigma - 0.5) / 0.5 < 0.10
    # at the optimum σ² is the mean squared residual of the least-squares fit
    tr = model.dataset.train
    res = tr["y"] - tr["x"] @ closed_form_ls(tr["x"], tr["y"])
    assert sigma == pytest.approx(np.sqrt(np.mean(res ** 2)), rel=1e-4)


def test_huber_regression_ignores_outliers() -> None:
    out = fitted("huber_regression")()
    assert float(out["outlier_fraction"]) == pytest.approx(0.1)
    assert float(out["huber_error"]) < 0.1
    assert float(out["least_squares_error"]) > 1.0


@pytest.mark.parametrize("tau", [0.9, 0.25])
def test_quantile_regression_coverage(tau: float) -> None:
    model = fitted("quantile_regression", overrides={"TAU": tau})
    tr = model.dataset.train
    theta = model.params["theta"]
    train_cov = float(np.mean(tr["y"] <= tr["x"] @ theta))
    assert abs(train_cov - tau) <= 0.01
    assert float(model()["train_coverage"]) == pytest.approx(train_cov)
    assert abs(model.evaluate("test")["coverage"] - tau) <= 0.05


def test_lasso_zeroes_the_irrelevant_weights() -> None:
    model = fitted("lasso")
    w = model.params["w"]
    true = np.array([1.5, 0, -2.0, 0, 0, 0.8, 0, 0])
    assert np.all(w[true == 0] == 0.0), w
    assert np.all(np.sign(w[true != 0]) == np.sign(true[true != 0])), w
    out = model()
    assert float(out["nonzero_weights"]) == 3
    assert float(out["kkt_violation"]) < 1e-6
    # least squares on the same data leaves every weight non-zero
    assert np.all(out["w_least_squares"] != 0)


def test_perceptron_makes_no_training_mistakes() -> None:
    model = fitted("perceptron")
    ev = model.evaluate("train")
    assert ev["training_error"] == 0.0
    out = model()
    assert float(out["total_updates"]) > 0
    # every update adds ±x̃ with x̃ = [x, 1], so the bias is an integer
    b = float(model.params["w"][-1])
    assert b == round(b) and b != 0


def test_perceptron_gradient_check_off_the_kink() -> None:
    """The perceptron starts at w = 0, where every sample sits on the kink of
    max(0, −y wᵀx) and finite differences disagree with any subgradient (`dslrun check-grad`
    moves its probes off such kinks, tests/test_gradcheck_kinks.py). Away from the kink the
    hinge is piecewise linear and the symbolic gradient must match exactly."""
    c = compile_file(spec("perceptron"), dtype="f64")
    p = c.program
    ds = dsl.load(spec("perceptron"), dtype="float64").dataset
    feeds = {k: ds.train[k][:32] for k in ("x", "y")}
    w = np.array([-0.4, 0.9, 0.3])
    s = np.c_[feeds["x"], np.ones(32)] @ w
    assert np.any(np.where(s >= 0, 1, -1) != feeds["y"]), "the point must have mistakes"
    assert np.min(np.abs(s)) > 1e-3, "the point must be off the kink"
    values = {n: v.value.astype(np.float64) for n, v in p.variables.items()}
    values["w"] = w
    graph = c.stages["step"][0][1].copy()
    graph.outputs = {"hinge": graph.outputs["hinge"]}
    errs = check_gradients(graph, "hinge", ["w"], values, feeds, {"B": 32}, seed=0)
    assert errs["w"] < 1e-6


def test_autodiff_example_gradients_match_finite_differences() -> None:
    """No parameters to check: the grad outputs are compared with central differences of f
    over the inputs x and y instead. (Loaded in float64: the trainer casts fed float inputs
    to the program's float dtype, so in a float32 program x ± 1e-6 would be rounded.)"""
    model = dsl.load(spec("autodiff_example"), dtype="float64")
    h = 1e-6
    for x0, y0 in ((1.0, 2.0), (-0.7, 0.4), (3.0, -2.5)):
        out = model(x=x0, y=y0)
        fx = (model(x=x0 + h, y=y0)["f"] - model(x=x0 - h, y=y0)["f"]) / (2 * h)
        fy = (model(x=x0, y=y0 + h)["f"] - model(x=x0, y=y0 - h)["f"]) / (2 * h)
        assert float(out["dfdx"]) == pytest.approx(float(fx), rel=1e-6, abs=1e-9)
        assert float(out["dfdy"]) == pytest.approx(float(fy), rel=1e-6, abs=1e-9)
