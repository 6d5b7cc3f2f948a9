"""Tests of the symbolic reverse-mode driver (`runtime.autodiff`): known values, Hessians,
Hessian-vector products, MLP gradients against finite differences and against PyTorch,
un-broadcasting, missing rules and integer inputs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_numeric import Runner, add_input, assert_grad_close, new_graph, numeric_grad, rng_for
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.autodiff import GradError, gradients, hessian
from runtime.ops import REGISTRY, OpDef


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# --------------------------------------------------------------------------- (a) known values


def test_logistic_graph_values_at_1_2():
    """f(x, y) = xy - log(1 + e^{xy}); ∂f/∂x = y(1 - σ(xy)), ∂f/∂y = x(1 - σ(xy))."""
    g, b = new_graph()
    x, y = add_input(b, "x", "f64", ()), add_input(b, "y", "f64", ())
    p = x * y
    f = p - b.emit("log", 1.0 + b.emit("exp", p))
    dx, dy = gradients(b, f.id, [x.id, y.id])
    g.outputs.update(f=f.id, dx=dx.id, dy=dy.id)
    res = Runner(g, ["f", "dx", "dy"])({"x": 1.0, "y": 2.0})
    assert round(float(res["f"]), 6) == -0.126928
    assert round(float(res["dx"]), 6) == 0.238406
    assert round(float(res["dy"]), 6) == 0.119203


# --------------------------------------------------------------------------- (b) Hessian


def test_hessian_of_mean_logistic_loss_is_xt_s_x_over_n():
    """L(w) = mean softplus(-y (Xw)), y = ±1: ∇²L = Xᵀ S X / n, S = diag(σ(z)(1 - σ(z)))."""
    n, d = 9, 3
    rng = rng_for("hessian")
    X = rng.standard_normal((n, d))
    y = rng.choice([-1.0, 1.0], n)
    w = rng.standard_normal(d)
    g, b = new_graph()
    Xv, yv, wv = (add_input(b, "X", "f64", (n, d)), add_input(b, "y", "f64", (n,)),
                  add_input(b, "w", "f64", (d,)))
    loss = b.emit("mean", b.emit("softplus", -yv * (Xv @ wv)))
    h = hessian(b, loss.id, wv.id)
    assert h.shape == (d, d)
    g.outputs.update(h=h.id)
    got = Runner(g, ["h"])({"X": X, "y": y, "w": w})["h"]
    z = X @ w
    s = _sigmoid(z) * (1 - _sigmoid(z))
    want = X.T @ (s[:, None] * X) / n
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got, got.T, rtol=0, atol=1e-15)


def test_hessian_of_a_function_not_depending_on_w_is_zero():
    g, b = new_graph()
    x, w = add_input(b, "x", "f64", (2,)), add_input(b, "w", "f64", (2,))
    y = b.emit("sum", x * x)
    h = hessian(b, y.id, w.id)
    g.outputs["h"] = h.id
    res = Runner(g, ["h"])({"x": np.ones(2), "w": np.ones(2)})["h"]
    np.testing.assert_array_equal(res, np.zeros((2, 2)))


# --------------------------------------------------------------------------- MLP builders

PARAMS = ("W1", "b1", "W2", "b2")


def _tanh_mlp(n=6, d=3, h=4):
    """loss = mean((tanh(X W1 + b1) W2 + b2 - t)^2): a scalar regression MLP."""
    g, b = new_graph()
    X, t = add_input(b, "X", "f64", (n, d)), add_input(b, "t", "f64", (n,))
    shapes = {"W1": (d, h), "b1": (h,), "W2": (h,), "b2": ()}
    P = {k: add_input(b, k, "f64", s) for k, s in shapes.items()}
    hid = b.emit("tanh", X @ P["W1"] + P["b1"])
    r = hid @ P["W2"] + P["b2"] - t
    loss = b.emit("mean", b.emit("square", r))
    rng = rng_for("tanh_mlp")
    feeds = {"X": rng.standard_normal((n, d)), "t": rng.standard_normal(n)}
    feeds |= {k: 0.7 * rng.standard_normal(s) for k, s in shapes.items()}
    return b, P, loss, feeds


def _relu_ce_mlp(n=5, d=4, h=6, c=3, smoothing=0.0, mode="m-1"):
    """loss = mean softmax_cross_entropy(relu(X W1 + b1) W2 + b2, labels)."""
    g, b = new_graph()
    X, lab = add_input(b, "X", "f64", (n, d)), add_input(b, "labels", "i64", (n,))
    shapes = {"W1": (d, h), "b1": (h,), "W2": (h, c), "b2": (c,)}
    P = {k: add_input(b, k, "f64", s) for k, s in shapes.items()}
    hid = b.emit("relu", X @ P["W1"] + P["b1"])
    logits = hid @ P["W2"] + P["b2"]
    loss = b.emit("mean", b.emit("softmax_cross_entropy", logits, lab, smoothing=smoothing,
                                 smoothing_mode=mode))
    rng = rng_for("relu_mlp", n, d, h, c)
    feeds = {"X": rng.standard_normal((n, d)), "labels": rng.integers(0, c, n)}
    feeds |= {k: rng.standard_normal(s) for k, s in shapes.items()}
    return b, P, logits, loss, feeds


# --------------------------------------------------------------------------- (c) HVP


def test_hessian_vector_product_of_tanh_mlp_matches_differences_of_gradients():
    """Hv = ∇_w (∇_w L · v) equals (∇L(w + εv) - ∇L(w - εv)) / 2ε."""
    b, P, loss, feeds = _tanh_mlp()
    g = b.graph
    grads = gradients(b, loss.id, [P[k].id for k in PARAMS])
    rng = rng_for("hvp_v")
    v = {k: rng.standard_normal(P[k].shape) for k in PARAMS}
    dot = None
    for k, gk in zip(PARAMS, grads, strict=True):
        term = b.emit("sum", gk * b.const(v[k], "f64"))
        dot = term if dot is None else dot + term
    hv = gradients(b, dot.id, [P[k].id for k in PARAMS])
    for k, gk, hk in zip(PARAMS, grads, hv, strict=True):
        g.outputs[f"g_{k}"], g.outputs[f"hv_{k}"] = gk.id, hk.id
    run = Runner(g, list(g.outputs))
    got = run(feeds)
    eps = 1e-5
    plus = run({**feeds, **{k: feeds[k] + eps * v[k] for k in PARAMS}})
    minus = run({**feeds, **{k: feeds[k] - eps * v[k] for k in PARAMS}})
    for k in PARAMS:
        fd = (plus[f"g_{k}"] - minus[f"g_{k}"]) / (2 * eps)
        assert got[f"hv_{k}"].shape == P[k].shape
        assert_grad_close(got[f"hv_{k}"], fd, 1e-7, f"Hv[{k}]")


# --------------------------------------------------------------------------- (d) MLP gradients


def test_relu_softmax_cross_entropy_mlp_gradients_match_finite_differences():
    b, P, logits, loss, feeds = _relu_ce_mlp()
    g = b.graph
    grads = gradients(b, loss.id, [P[k].id for k in PARAMS])
    g.outputs["loss"] = loss.id
    for k, gk in zip(PARAMS, grads, strict=True):
        g.outputs[f"g_{k}"] = gk.id
    got = Runner(g, list(g.outputs))(feeds)
    f = Runner(g, ["loss"])
    num = numeric_grad(lambda fd: f(fd)["loss"], feeds, PARAMS)
    for k in PARAMS:
        assert_grad_close(got[f"g_{k}"], num[k], 1e-6, f"dL/d{k}")


# --------------------------------------------------------------------------- (e) un-broadcasting


@pytest.mark.parametrize("bias_shape, reduce", [
    ((4,), lambda u: u.sum(0)),
    ((1, 4), lambda u: u.sum(0, keepdims=True)),
    ((), lambda u: u.sum()),
    (("B", 1), lambda u: u.sum(1, keepdims=True)),
], ids=["row", "1xH", "scalar", "Bx1"])
def test_bias_gradient_is_summed_back_to_the_bias_shape(bias_shape, reduce):
    """Z = X W + bias with a symbolic batch B: dsum(U ⊙ Z)/dbias sums U over the broadcast
    axes, and the gradient has the bias's own (symbolic) type."""
    g, b = new_graph()
    X, W = add_input(b, "X", "f64", ("B", 3)), add_input(b, "W", "f64", (3, 4))
    bias, U = add_input(b, "bias", "f64", bias_shape), add_input(b, "U", "f64", ("B", 4))
    Z = X @ W + bias
    y = b.emit("sum", U * Z)
    gb, gw = gradients(b, y.id, [bias.id, W.id])
    assert gb.type == bias.type and gw.type == W.type
    g.outputs.update(gb=gb.id, gw=gw.id)
    for n in (2, 5):
        rng = rng_for("bias", n, bias_shape)
        conc = tuple(n if d == "B" else d for d in bias_shape)
        feeds = {"X": rng.standard_normal((n, 3)), "W": rng.standard_normal((3, 4)),
                 "bias": rng.standard_normal(conc), "U": rng.standard_normal((n, 4))}
        res = Runner(g, ["gb", "gw"], dims={"B": n})(feeds)
        np.testing.assert_allclose(res["gb"], reduce(feeds["U"]), rtol=1e-13)
        np.testing.assert_allclose(res["gw"], feeds["X"].T @ feeds["U"], rtol=1e-13)


def test_gradient_used_twice_accumulates_and_broadcast_contributions_fit():
    """x feeds an elementwise op with a broadcast partner twice; both paths add up."""
    g, b = new_graph()
    x, m = add_input(b, "x", "f64", (3,)), add_input(b, "m", "f64", (2, 3))
    y = b.emit("sum", (m * x) + b.emit("exp", x))
    (gx,) = gradients(b, y.id, [x.id])
    g.outputs["gx"] = gx.id
    xv, mv = np.array([0.1, -0.2, 0.3]), rng_for("acc").standard_normal((2, 3))
    res = Runner(g, ["gx"])({"x": xv, "m": mv})["gx"]
    np.testing.assert_allclose(res, mv.sum(0) + 2 * np.exp(xv), rtol=1e-14)


# --------------------------------------------------------------------------- (f) errors


def test_missing_vjp_raises_grad_error_naming_the_op(monkeypatch):
    monkeypatch.setitem(REGISTRY, "ruleless_op", OpDef(
        "ruleless_op", lambda attrs, t: t, lambda xp, x: x, None, arity=1))
    g, b = new_graph()
    x = add_input(b, "x", "f64", (3,))
    y = b.emit("sum", b.emit("ruleless_op", b.emit("exp", x)))
    with pytest.raises(GradError, match="ruleless_op"):
        gradients(b, y.id, [x.id])


def test_nondiff_op_without_vjp_gives_no_gradient_and_no_error():
    g, b = new_graph()
    x = add_input(b, "x", "f64", (3,))
    y = b.emit("sum", b.emit("cast", b.emit("argmax", x, axis=0), dtype="f64") + x)
    (gx,) = gradients(b, y.id, [x.id])
    g.outputs["gx"] = gx.id
    np.testing.assert_array_equal(Runner(g, ["gx"])({"x": [1.0, 3.0, 2.0]})["gx"], np.ones(3))


def test_target_must_be_a_float_scalar():
    g, b = new_graph()
    x, k = add_input(b, "x", "f64", (3,)), add_input(b, "k", "i64", (3,))
    with pytest.raises(GradError, match="scalar"):
        gradients(b, b.emit("exp", x).id, [x.id])
    with pytest.raises(GradError, match="float"):
        gradients(b, b.emit("sum", k).id, [k.id])


# --------------------------------------------------------------------------- (g) integers


def test_integer_inputs_get_no_gradient():
    g, b = new_graph()
    x, k = add_input(b, "x", "f64", (3,)), add_input(b, "k", "i64", (3,))
    emb, idx = add_input(b, "emb", "f64", (5, 2)), add_input(b, "idx", "i32", (4,))
    mask = add_input(b, "mask", "bool", (3,))
    y = (b.emit("sum", b.emit("cast", k, dtype="f64") * x)
         + b.emit("sum", b.emit("take", emb, idx))
         + b.emit("sum", b.emit("where", mask, x, 0.0 * x)))
    gx, gk, gemb, gidx, gmask = gradients(b, y.id, [x.id, k.id, emb.id, idx.id, mask.id])
    assert gk is None and gidx is None and gmask is None
    g.outputs.update(gx=gx.id, gemb=gemb.id)
    feeds = {"x": [1.0, 2.0, 3.0], "k": [4, 5, 6], "emb": np.zeros((5, 2)),
             "idx": [0, 2, 2, 4], "mask": [True, False, True]}
    res = Runner(g, ["gx", "gemb"])(feeds)
    np.testing.assert_array_equal(res["gx"], [5.0, 5.0, 7.0])
    np.testing.assert_array_equal(res["gemb"], [[1, 1], [0, 0], [2, 2], [0, 0], [1, 1]])
    # nothing in the gradient graph is typed as an integer adjoint
    assert all(n.type.is_float or n.op in ("greater", "greater_equal", "less", "less_equal",
                                           "equal", "not_equal", "one_hot")
               for n in g.nodes.values() if n.role == "grad" and n.op != "const")


# --------------------------------------------------------------------------- (h) PyTorch


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mlp_outputs_and_gradients_match_torch_autograd(smoothing):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (cross-check only)")
    b, P, logits, loss, feeds = _relu_ce_mlp(n=7, d=5, h=8, c=4, smoothing=smoothing, mode="m")
    g = b.graph
    grads = gradients(b, loss.id, [P[k].id for k in PARAMS])
    g.outputs.update(logits=logits.id, loss=loss.id)
    for k, gk in zip(PARAMS, grads, strict=True):
        g.outputs[f"g_{k}"] = gk.id
    ours = Runner(g, list(g.outputs))(feeds)

    T = {k: torch.tensor(feeds[k], dtype=torch.float64, requires_grad=True) for k in PARAMS}
    Xt = torch.tensor(feeds["X"], dtype=torch.float64)
    zt = torch.relu(Xt @ T["W1"] + T["b1"]) @ T["W2"] + T["b2"]
    lt = torch.nn.functional.cross_entropy(zt, torch.tensor(feeds["labels"]),
                                           label_smoothing=smoothing)
    lt.backward()
    np.testing.assert_allclose(ours["logits"], zt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["loss"], lt.item(), rtol=1e-10, atol=1e-12)
    for k in PARAMS:
        np.testing.assert_allclose(ours[f"g_{k}"], T[k].grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=f"d loss / d {k}")


def test_tanh_mlp_gradients_match_torch_autograd():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (cross-check only)")
    b, P, loss, feeds = _tanh_mlp()
    g = b.graph
    grads = gradients(b, loss.id, [P[k].id for k in PARAMS])
    g.outputs["loss"] = loss.id
    for k, gk in zip(PARAMS, grads, strict=True):
        g.outputs[f"g_{k}"] = gk.id
    ours = Runner(g, list(g.outputs))(feeds)
    T = {k: torch.tensor(feeds[k], dtype=torch.float64, requires_grad=True) for k in PARAMS}
    Xt, tt = (torch.tensor(feeds[k], dtype=torch.float64) for k in ("X", "t"))
    lt = ((torch.tanh(Xt @ T["W1"] + T["b1"]) @ T["W2"] + T["b2"] - tt) ** 2).mean()
    lt.backward()
    np.testing.assert_allclose(ours["loss"], lt.item(), rtol=1e-10, atol=1e-12)
    for k in PARAMS:
        np.testing.assert_allclose(ours[f"g_{k}"], T[k].grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=f"d loss / d {k}")


# --------------------------------------------------------------------------- property: shapes


def _unbroadcast(c, shape):
    """Reference adjoint of broadcasting: sum leading axes, then axes where shape has 1."""
    c = c.sum(axis=tuple(range(c.ndim - len(shape)))) if c.ndim > len(shape) else c
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and c.shape[i] != 1)
    return c.sum(axis=axes, keepdims=True) if axes else c


@st.composite
def _broadcast_pair(draw):
    out = draw(st.lists(st.integers(1, 3), min_size=0, max_size=3))
    def operand():
        k = draw(st.integers(0, len(out)))
        return tuple(1 if draw(st.booleans()) else d for d in out[len(out) - k:])
    return tuple(out), operand(), operand()


@settings(max_examples=40, deadline=None)
@given(shapes=_broadcast_pair(), op=st.sampled_from(["add", "mul", "sub"]))
def test_binary_gradients_are_summed_back_to_any_broadcast_shape(shapes, op):
    _, sa, sb = shapes
    g, b = new_graph()
    a, c = add_input(b, "a", "f64", sa), add_input(b, "c", "f64", sb)
    z = b.emit(op, a, c)
    u = add_input(b, "u", "f64", z.shape)
    ga, gc = gradients(b, b.emit("sum", u * z).id, [a.id, c.id])
    assert ga.type == a.type and gc.type == c.type
    g.outputs.update(ga=ga.id, gc=gc.id)
    rng = rng_for("prop", sa, sb)
    av, cv, uv = (rng.standard_normal(s) for s in (sa, sb, z.shape))
    res = Runner(g, ["ga", "gc"])({"a": av, "c": cv, "u": uv})
    da = {"add": uv, "sub": uv, "mul": uv * cv}[op] * np.ones(z.shape)
    dc = {"add": uv, "sub": -uv, "mul": uv * av}[op] * np.ones(z.shape)
    np.testing.assert_allclose(res["ga"], _unbroadcast(da, sa), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(res["gc"], _unbroadcast(dc, sb), rtol=1e-13, atol=1e-14)


def test_gradients_that_are_shared_nodes_are_reported_for_every_parameter():
    """d loss/da and d loss/dc are both the constant 1.0 that the forward graph uses too:
    both gradients are outputs of the grad stage, and the forward constant keeps no name."""
    from dsl.compiler import compile_spec

    c = compile_spec("model m\ninput x: f32[B, 2]\nparam a: [] = zeros\nparam c: [] = zeros\n"
                     "objective loss = a + c + sum(x + 1.0)\n"
                     "optimizer sgd(lr = 0.1) minimize loss\n")
    g = c.stages["grad"][0][1]
    assert g.outputs["a.grad"] == g.outputs["c.grad"]
    shared = g[g.outputs["a.grad"]]
    assert shared.op == "const" and shared.name is None
