"""The catalogue's "Optimization theory" specs, each checked for what it shows, plus the cost
guard of the dense Hessian and `newton_cg`:

    newton_logistic      Newton's method from the symbolic Hessian: ‖∇ℓ‖ < 1e-8 within 10
                         iterations, at scikit-learn's minimum (C = 1/(nλ)) to 1e-5
    deep_linear_network  GD on ℓ(A, B) = 1/(2n) Σ‖y − ABx‖² ends at (tr Σ_yy − Σ top-p λ)/(2n)
    weight_averaging     Polyak–Ruppert and exponential averages of noisy SGD beat the last
                         iterate
    hessian / newton     a dense Hessian over max_size entries is a compile-time error at the
                         spec's line, pointing to newton_cg; newton_cg gives newton's iterates
                         when CG runs to convergence, and scipy's Newton-CG iterates
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import spec

import dsl
from dsl.cli import main as cli_main
from dsl.errors import DslError
from dsl.lower.tensor_builtins import HESSIAN_MAX_SIZE

# ---------------------------------------------------------------- newton_logistic

LAMBDA = 1e-2  # the spec's ℓ2 weight on w


def _logistic_problem(model: dsl.api.Model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training set of newton_logistic as float64 [x, 1], y, and the penalty mask."""
    tr = model.dataset.train
    x = np.c_[tr["x"].astype(np.float64), np.ones(len(tr["y"]))]
    return x, tr["y"].astype(np.float64), np.r_[np.ones(x.shape[1] - 1), 0.0]


def _logistic_grad_hess(theta, x, y, mask, lam=LAMBDA):
    """∇ℓ and ∇²ℓ of the mean logistic loss + λ/2 ‖w‖² in closed form (B §6.2.2)."""
    p = 1 / (1 + np.exp(-(x @ theta)))
    n = len(y)
    g = x.T @ (p - y) / n + lam * mask * theta
    h = (x * (p * (1 - p))[:, None]).T @ x / n + lam * np.diag(mask)
    return g, h


def _sklearn_coef(x: np.ndarray, y: np.ndarray, lam: float = LAMBDA) -> np.ndarray:
    """scikit-learn's minimum of C Σᵢ logloss + ½‖w‖² (intercept not penalized), which is n/λ
    times the spec's mean loss + λ/2 ‖w‖² when C = 1/(nλ); lbfgs, a different algorithm."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1 / (len(y) * lam), tol=1e-12, max_iter=10_000)
    clf.fit(x[:, :-1], y)
    return np.r_[clf.coef_[0], clf.intercept_]


def test_newton_logistic_converges_in_10_iterations_to_sklearns_minimum() -> None:
    model = dsl.load(spec("newton_logistic"), dtype="float64")
    x, y, mask = _logistic_problem(model)
    iterates = [model.params["theta"].copy()]
    model.fit(on_step=lambda s, losses: iterates.append(model.params["theta"].copy()))
    out = model()
    norms = out["grad_norms"]
    assert len(norms) == 10 and len(iterates) == 11
    # an independent float64 Newton loop with the closed-form Hessian: the same iterates
    theta = np.zeros(x.shape[1])
    for t in range(10):
        g, h = _logistic_grad_hess(theta, x, y, mask)
        assert norms[t] == pytest.approx(np.linalg.norm(g), rel=1e-8, abs=1e-15)
        theta = theta - np.linalg.solve(h, g)
        np.testing.assert_allclose(iterates[t + 1], theta, rtol=1e-9, atol=1e-12)
    # ‖∇ℓ‖ falls below 1e-8 within the 10 iterations, quadratically at the end
    first = int(np.argmax(norms < 1e-8))
    assert norms[first] < 1e-8 and first <= 9, norms
    assert np.all(np.diff(norms[:first + 1]) < 0), norms
    for t in range(first):
        if norms[t] < 1e-2:  # in the quadratic region: ‖g⁺‖ ≤ c‖g‖² with a modest c
            assert norms[t + 1] <= 50 * norms[t] ** 2, norms
    g_end, _ = _logistic_grad_hess(out["coef"], x, y, mask)
    assert np.linalg.norm(g_end) < 1e-12
    np.testing.assert_allclose(out["coef"], _sklearn_coef(x, y), atol=1e-5)


def test_newton_logistic_on_its_defaults() -> None:
    """The default run (float32 data and storage, f64 arithmetic in the step)."""
    model = dsl.load(spec("newton_logistic"))
    model.fit()
    out = model()
    assert float(np.min(out["grad_norms"])) < 1e-8, out["grad_norms"]
    x, y, _ = _logistic_problem(model)
    np.testing.assert_allclose(out["coef"].astype(np.float64), _sklearn_coef(x, y), atol=1e-5)
    ev = model.evaluate("test")
    assert ev["acc"] >= 0.95, ev


# ---------------------------------------------------------------- deep_linear_network

D, P = 5, 2


def _dln_problem(model: dsl.api.Model) -> tuple[np.ndarray, np.ndarray]:
    """x and y = M x + σ ε of the spec, from its training array, in float64."""
    xe = model.dataset.train["x"].astype(np.float64)
    m = np.array([[2.0, 0.5, 0.0, 0.0, 0.0], [0.0, 1.5, 0.5, 0.0, 0.0],
                  [0.0, 0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.7, 0.5],
                  [0.0, 0.0, 0.0, 0.0, 0.4]])
    x = xe[:, :D]
    return x, x @ m.T + 0.3 * xe[:, D:]


def _dln_loss(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return 0.5 * float(np.mean(np.sum((y - x @ w.T) ** 2, axis=1)))   # (12.1), W = AB


def test_deep_linear_network_reaches_the_closed_form() -> None:
    model = dsl.load(spec("deep_linear_network"), dtype="float64")
    model.fit()
    out = model()
    x, y = _dln_problem(model)
    n = len(x)
    s_yx, s_xx = y.T @ x, x.T @ x
    sigma = s_yx @ np.linalg.inv(s_xx) @ s_yx.T                # Σ of Fact 12.3
    lam, u = np.linalg.eigh(sigma)
    lam, u = lam[::-1], u[:, ::-1]                            # λ₁ > … > λ_d
    assert np.all(np.diff(lam) < 0)                           # distinct (Fact 12.4)
    np.testing.assert_allclose(out["eigenvalues"], lam[::-1], rtol=1e-10)
    loss_star = (np.trace(y.T @ y) - lam[:P].sum()) / (2 * n)  # (12.8) / (2n)
    assert float(out["loss_closed_form"]) == pytest.approx(loss_star, rel=1e-10)
    assert float(out["loss_final"]) == pytest.approx(loss_star, rel=1e-9)
    assert float(out["rel_gap"]) < 1e-9
    assert float(out["loss_final"]) == pytest.approx(_dln_loss(x, y, out["W"]), rel=1e-12)
    # W = AB is the least-squares L* projected on the top-p eigenvectors (Fact 12.5)
    l_star = s_yx @ np.linalg.inv(s_xx)
    np.testing.assert_allclose(out["W"], u[:, :P] @ u[:, :P].T @ l_star, atol=1e-6)


def test_deep_linear_network_critical_values_need_the_1_over_2n() -> None:
    """At the critical point (12.7) of every index set I, the loss (12.1) is
    (tr Σ_yy − Σ_I λ)/(2n): (12.8) as printed is 2n times too large; the top p is the least."""
    model = dsl.load(spec("deep_linear_network"), dtype="float64")
    x, y = _dln_problem(model)
    n = len(x)
    s_yx, s_xx, s_yy = y.T @ x, x.T @ x, y.T @ y
    l_star = s_yx @ np.linalg.inv(s_xx)
    lam, u = np.linalg.eigh(s_yx @ l_star.T)
    values = {}
    for idx in itertools.combinations(range(D), P):
        u_i = u[:, list(idx)]
        a, b = u_i, u_i.T @ l_star                           # (12.7) with C = I
        values[idx] = _dln_loss(x, y, a @ b)
        assert values[idx] == pytest.approx((np.trace(s_yy) - lam[list(idx)].sum()) / (2 * n),
                                            rel=1e-10)
        assert values[idx] != pytest.approx(np.trace(s_yy) - lam[list(idx)].sum(), rel=0.5)
    assert min(values, key=values.get) == (D - 2, D - 1)      # eigh is ascending: the top two


def test_deep_linear_network_on_its_defaults() -> None:
    model = dsl.load(spec("deep_linear_network"))
    model.fit()
    out = model()
    assert float(out["rel_gap"]) < 1e-3
    x, y = _dln_problem(model)
    n = len(x)
    s_yx = y.T @ x
    lam = np.linalg.eigvalsh(s_yx @ np.linalg.solve(x.T @ x, s_yx.T))
    want = (np.sum(y * y) - lam[-P:].sum()) / (2 * n)
    assert float(out["loss_final"]) == pytest.approx(want, rel=1e-3)


# ---------------------------------------------------------------- weight_averaging


def test_weight_averaging_beats_the_last_iterate() -> None:
    model = dsl.load(spec("weight_averaging"))
    model.fit()
    for split in ("train", "test"):
        ev = model.evaluate(split)
        assert ev["loss_polyak"] < ev["loss_last"], (split, ev)
        assert ev["loss_ema"] < ev["loss_last"], (split, ev)
    out = model()
    last, pr, ema = (float(out[k]) for k in ("excess_last", "excess_polyak", "excess_ema"))
    assert 0 < pr < ema < last, (last, pr, ema)
    assert pr < 0.1 * last             # Polyak–Ruppert removes most of the SGD noise


def test_weight_averaging_update_rules() -> None:
    """The state follows B 11.15 (divided by the number of iterates) and the exponential
    average, over the iterates w⁰ … w^{T−1} the update block sees."""
    model = dsl.load(spec("weight_averaging"), dtype="float64", overrides={"STEPS": 300})
    iterates = [model.params["w"].copy()]
    model.fit(on_step=lambda s, losses: iterates.append(model.params["w"].copy()))
    ws = np.array(iterates[:-1])                               # w⁰ … w^{T−1}
    assert len(ws) == 300 and not np.allclose(ws[-1], ws[-2])
    u = np.zeros_like(ws[0])
    for w in ws:
        u = 0.99 * u + 0.01 * w
    out = model()
    np.testing.assert_allclose(out["w_polyak_ruppert"], ws.mean(axis=0), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(out["w_exponential"], u, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(out["w_last"], iterates[-1], rtol=0, atol=0)


# ---------------------------------------------------------------- every spec's own gradients


@pytest.mark.parametrize("name", ["newton_logistic", "deep_linear_network", "weight_averaging"])
def test_whole_spec_gradient_check(name: str, capsys) -> None:
    code = cli_main(["check-grad", spec(name)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert ": pass" in out


# ---------------------------------------------------------------- the cost of a dense Hessian

MLP_NEWTON = """model big
data digits(test_fraction = 0.2, seed = 0)
input x: f32[B, 64]
input y: i64[B]
net mlp(x) { return dense(tanh(dense(x, 40)), 10) }
objective loss = cross_entropy(mlp(x), y)
optimizer newton() minimize loss
train { steps = 1 }
"""


def test_newton_over_a_few_thousand_parameters_is_a_compile_time_error() -> None:
    with pytest.raises(DslError) as info:
        dsl.compile(MLP_NEWTON, file="big.dl")
    err = info.value
    assert (err.span.file, err.span.line, err.span.col) == ("big.dl", 7, 1)  # the spec's line
    msg = err.message
    for says in ("newton: hessian:", "2560 entries of mlp.dense2.W (f32[64,40])",
                 "2560 reverse passes", "2560×2560 = 6,553,600 numbers (25 MB)", "O(n³)",
                 f"max_size = {HESSIAN_MAX_SIZE}", "Use newton_cg"):
        assert says in msg, (says, msg)
    assert any("prelude's 'newton'" in n for n in err.notes)
    assert "optimizer newton() minimize loss" in str(err)


SMALL_LOGISTIC = """model small
data breast_cancer(test_fraction = 0.2, seed = 0, labels = "01")
const LIMIT = 31
input x: f64[B, 30]
input y: f64[B]
param theta: f64[31] = zeros
x1 = concat(x, ones([shape(x)[0], 1], dtype = "f64"), axis = 1)
objective loss = bce_with_logits(x1 @ theta, y) + 0.01 / 2 * sum(theta[0:30] ** 2)
optimizer newton(max_size = LIMIT) minimize loss
train { steps = 1 }
"""


def test_the_limit_is_an_option_of_newton_and_hessian() -> None:
    dsl.compile(SMALL_LOGISTIC)                                # 31 entries, limit 31
    with pytest.raises(DslError, match="31 entries of theta .* max_size = 30"):
        dsl.compile(SMALL_LOGISTIC, overrides={"LIMIT": 30})
    text = SMALL_LOGISTIC + "output h = hessian(loss, theta, max_size = 20)\n"
    with pytest.raises(DslError, match="hessian: a dense Hessian over the 31 entries") as info:
        dsl.compile(text, file="small.dl")
    assert (info.value.span.line, info.value.span.col) == (11, 12)   # at the call
    text = SMALL_LOGISTIC + "output h = hessian(loss, theta)\n"    # the default limit
    assert dsl.compile(text).program is not None


def test_newton_and_hessian_share_the_default_limit() -> None:
    from dsl import reference

    entries = {e.name: e for e in reference.entries()}
    assert f"max_size = {HESSIAN_MAX_SIZE}" in entries["newton"].signature
    assert f"max_size = {HESSIAN_MAX_SIZE}" in entries["hessian"].signature
    assert "newton_cg" in entries["newton"].description
    assert "newton_cg" in entries["hessian"].description


# ---------------------------------------------------------------- newton_cg

NEWTON_VS_CG = """model compare
data breast_cancer(test_fraction = 0.2, seed = 0, labels = "01")
const ITERS = 40
const ETA = 1e-12
input x: f64[B, 30]
input y: f64[B]
param theta: f64[31] = zeros
param theta_cg: f64[31] = zeros
x1 = concat(x, ones([shape(x)[0], 1], dtype = "f64"), axis = 1)
def f(t) { return bce_with_logits(x1 @ t, y) + 0.01 / 2 * sum(t[0:30] ** 2) }
objective loss = f(theta)
objective loss_cg = f(theta_cg)
optimizer newton() minimize loss over theta
optimizer newton_cg(iters = ITERS, eta = ETA) minimize loss_cg over theta_cg
train { steps = 8 }
"""


def _paths(model: dsl.api.Model, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    paths = {k: [model.params[k].copy()] for k in names}

    def record(step: int, losses: dict) -> None:
        for k in names:
            paths[k].append(model.params[k].copy())

    model.fit(on_step=record)
    return {k: np.array(v) for k, v in paths.items()}


def test_newton_cg_gives_newtons_iterates_when_cg_converges() -> None:
    model = dsl.compile(NEWTON_VS_CG, dtype="float64")
    paths = _paths(model, ("theta", "theta_cg"))
    assert np.max(np.abs(paths["theta"][-1] - paths["theta"][0])) > 0.3   # they travel
    np.testing.assert_allclose(paths["theta_cg"], paths["theta"], rtol=0, atol=1e-8)


def test_newton_cg_with_few_cg_steps_is_inexact_but_converges() -> None:
    model = dsl.compile(NEWTON_VS_CG, dtype="float64", overrides={"ITERS": 3, "ETA": 0.0})
    paths = _paths(model, ("theta", "theta_cg"))
    gap = np.max(np.abs(paths["theta_cg"] - paths["theta"]), axis=1)
    assert gap[1] > 1e-3                                         # truncated CG: another step
    x, y, mask = _logistic_problem(model)
    norms = [np.linalg.norm(_logistic_grad_hess(t, x, y, mask)[0]) for t in paths["theta_cg"]]
    assert np.all(np.diff(norms) < 0) and norms[-1] < 1e-3 * norms[0], norms


def test_newton_cg_follows_scipys_newton_cg() -> None:
    """With eta = 0 (scipy's forcing term) CG stops where scipy's does, and scipy's Wolfe line
    search accepts the full step here, so the iterates are scipy's."""
    from scipy.optimize import minimize

    model = dsl.compile(NEWTON_VS_CG, dtype="float64", overrides={"ETA": 0.0})
    ours = _paths(model, ("theta_cg",))["theta_cg"]
    x, y, mask = _logistic_problem(model)

    def f(t):
        z = x @ t
        return np.mean(np.logaddexp(0, z) - y * z) + LAMBDA / 2 * np.sum((mask * t) ** 2)

    def hessp(t, v):
        return _logistic_grad_hess(t, x, y, mask)[1] @ v

    theirs = [np.zeros(x.shape[1])]
    minimize(f, theirs[0], jac=lambda t: _logistic_grad_hess(t, x, y, mask)[0], hessp=hessp,
             method="Newton-CG", callback=lambda t: theirs.append(t.copy()),
             options={"maxiter": 8, "xtol": 1e-30})
    k = min(len(theirs), len(ours))
    assert k >= 7
    np.testing.assert_allclose(ours[:k], np.array(theirs[:k]), rtol=0, atol=1e-12)


SOFTMAX_VS_CG = """model compare_matrix
data iris(test_fraction = 0.2, seed = 0)
input x: f64[B, 4]
input y: i64[B]
def risk(W, b) { return cross_entropy(x @ W + b, y) + 0.05 / 2 * (sum(W * W) + sum(b * b)) }
param n_W: f64[4, 3] = zeros
param n_b: f64[3] = zeros
param cg_W: f64[4, 3] = zeros
param cg_b: f64[3] = zeros
objective loss = risk(n_W, n_b)
objective loss_cg = risk(cg_W, cg_b)
optimizer newton() minimize loss over params("n_*")
optimizer newton_cg(iters = 20, eta = 1e-12) minimize loss_cg over params("cg_*")
train { steps = 6 }
"""


def test_newton_and_newton_cg_on_matrix_parameters() -> None:
    """Both apply their rule to each parameter tensor (a [4, 3] matrix and a vector): the
    same block-diagonal Newton iterates."""
    model = dsl.compile(SOFTMAX_VS_CG, dtype="float64")
    paths = _paths(model, ("n_W", "n_b", "cg_W", "cg_b"))
    assert np.max(np.abs(paths["n_W"][-1])) > 0.3
    np.testing.assert_allclose(paths["cg_W"], paths["n_W"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(paths["cg_b"], paths["n_b"], rtol=0, atol=1e-8)


def test_newton_cg_steps_along_the_gradient_at_negative_curvature() -> None:
    """f = ½ wᵀ diag(1, −2) w + cᵀw at w = 0: dᵀHd < 0 along d = −∇f, so the first CG step
    is scipy's −(gᵀg / |gᵀHg|) g, and then CG stops."""
    text = """model saddle
param w: f64[2] = zeros
objective f = 0.5 * (w[0] ** 2 - 2 * w[1] ** 2) + 0.1 * w[0] + w[1]
optimizer newton_cg(iters = 5) minimize f
train { steps = 1 }
"""
    model = dsl.compile(text, dtype="float64")
    model.fit()
    g = np.array([0.1, 1.0])
    curv = g @ np.diag([1.0, -2.0]) @ g
    np.testing.assert_allclose(model.params["w"], -(g @ g) / abs(curv) * g, rtol=1e-14)


def test_hvp_is_the_hessian_times_v() -> None:
    text = """model probe
param w: f64[3] = [0.3, -0.2, 0.5]
const V = [1.0, 2.0, -1.0]
f = sum(exp(w) * w) + w[0] * w[1] * w[2]
output hv = hvp(f, w, array(V))
output h_v = hessian(f, w) @ array(V)
output zero = hvp(sum(w), w, array(V))
"""
    out = dsl.compile(text, dtype="float64")()
    np.testing.assert_allclose(out["hv"], out["h_v"], rtol=1e-14)
    w, v = np.array([0.3, -0.2, 0.5]), np.array([1.0, 2.0, -1.0])
    h = np.diag(np.exp(w) * (2 + w)) + np.array([[0, w[2], w[1]], [w[2], 0, w[0]],
                                                  [w[1], w[0], 0]])
    np.testing.assert_allclose(out["hv"], h @ v, rtol=1e-14)
    np.testing.assert_array_equal(out["zero"], np.zeros(3))
