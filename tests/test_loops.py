"""The `loop` node: a body region compiled once and run N times, its text form, the passes
that see into it, and reverse mode through it (a reverse loop over saved residuals).

Gradients through a run-time loop must equal those of the same body unrolled (built here
with a Python `for`) to 1e-12 in float64, first and second order.
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.autodiff import gradients, vjp
from runtime.backends import get_backend
from runtime.ir import Graph, TensorType, parse_text
from runtime.ops import Builder, Val, to_text
from runtime.ops.control import loop, new_region, set_results
from runtime.passes import run_pipeline, verify_graph
from runtime.plan import Plan

T, B, H = 6, 3, 4
I64 = TensorType("i64", ())


def f64(*shape: int | str) -> TensorType:
    return TensorType("f64", tuple(shape))


def rnn(unrolled: bool, reverse: bool = False, length: int | str = T) -> Graph:
    """loss = Σ_t Σ h_t² + Σ h_T + Σ_t c·t·h_t with h_{t+1} = tanh(h_t W + x_t + b)."""
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f64(length, B, H), role="input", name="x"))
    h0 = Val(b, g.add("input", (), {}, f64(B, H), role="input", name="h0"))
    w = Val(b, g.add("param", (), {}, f64(H, H), role="param", name="W"))
    bias = Val(b, g.add("param", (), {}, f64(H), role="param", name="b"))

    def cell(bb: Builder, t: Val, h: Val, xt: Val, w: Val, bias: Val) -> tuple[Val, Val]:
        hn = bb.emit("tanh", h @ w + xt + bias)
        tf = bb.emit("cast", t, dtype="f64")
        return hn, hn * hn + hn * tf * 0.01

    if unrolled:
        h, ys = h0, []
        steps = range(T - 1, -1, -1) if reverse else range(T)
        for k in steps:
            xt = b.emit("getitem", x, index=(("i", k),))
            h, y = cell(b, b.const(k, "i64"), h, xt, w, bias)
            ys.append(y)
        ys = ys[::-1] if reverse else ys
        hs = b.emit("concat", *(b.emit("reshape", y, shape=(1, B, H)) for y in ys), axis=0)
    else:
        body, rb, (t, h, xt, wa, ba) = new_region([I64, f64(B, H), f64(B, H), f64(H, H),
                                                   f64(H)], ["t", "h", "x_t", "W", "b"])
        set_results(body, list(cell(rb, t, h, xt, wa, ba)))
        (h,), (hs,) = loop(b, body, [h0], [x], [w, bias], length=length, reverse=reverse)
    loss = b.emit("sum", hs) + b.emit("sum", h)
    g.outputs["loss"] = loss.id
    return g


def values(seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    feeds = {"x": rng.standard_normal((T, B, H)), "h0": rng.standard_normal((B, H))}
    variables = {"W": rng.standard_normal((H, H)) * 0.5, "b": rng.standard_normal(H) * 0.1}
    return feeds, variables


def run(g: Graph, outputs: list[str], extra: dict | None = None, dims: dict | None = None
        ) -> list[np.ndarray]:
    feeds, variables = values()
    plan = Plan(g, dims or {}, get_backend("numpy"), variables, outputs, apply_updates=False)
    return [np.asarray(v) for v in plan.run({**feeds, **(extra or {})})]


def with_grads(g: Graph) -> Graph:
    b = Builder(g, role="grad")
    w, bias = g.find("param", "W"), g.find("param", "b")
    gw, gb = gradients(b, g.outputs["loss"], [w, bias])
    g.outputs["gW"], g.outputs["gb"] = gw.id, gb.id
    return g


def test_text_reads_back_and_verifies() -> None:
    g = with_grads(rnn(False))
    verify_graph(g)
    text = to_text(g)
    assert "    region\n      args\n        %0:i64[] = arg {index=0} ; name='t'" in text
    assert "      yield %" in text
    assert to_text(parse_text(text)) == text


@pytest.mark.parametrize("reverse", [False, True])
def test_forward_and_gradients_equal_the_unrolled_graph(reverse: bool) -> None:
    names = ["loss", "gW", "gb"]
    looped = run(with_grads(rnn(False, reverse)), names)
    unrolled = run(with_grads(rnn(True, reverse)), names)
    for a, u in zip(looped, unrolled):
        np.testing.assert_allclose(a, u, rtol=1e-12, atol=1e-12)


def test_symbolic_trip_count() -> None:
    g = with_grads(rnn(False, length="T"))
    got = run(g, ["loss", "gW"], dims={"T": T})
    want = run(with_grads(rnn(True)), ["loss", "gW"])
    for a, u in zip(got, want):
        np.testing.assert_allclose(a, u, rtol=1e-12, atol=1e-12)


def test_hessian_vector_products_through_a_loop() -> None:
    """d/dε ∇L(W + εV) at 0, symbolically (the gradient of ⟨∇L, V⟩: a loop's VJP of a loop's
    VJP) against the unrolled graph and central differences."""

    def hvp(unrolled: bool) -> np.ndarray:
        g = rnn(unrolled)
        b = Builder(g, role="grad")
        w = g.find("param", "W")
        v = Val(b, g.add("input", (), {}, f64(H, H), role="input", name="V"))
        (gw,) = gradients(b, g.outputs["loss"], [w])
        (hv,) = gradients(b, b.emit("sum", gw * v).id, [w])
        g.outputs["hv"] = hv.id
        return run(g, ["hv"], {"V": direction})[0]

    direction = np.random.default_rng(5).standard_normal((H, H))
    looped, unrolled = hvp(False), hvp(True)
    np.testing.assert_allclose(looped, unrolled, rtol=1e-11, atol=1e-11)
    g = with_grads(rnn(False))
    feeds, variables = values()
    eps = 1e-5

    def grad_at(w: np.ndarray) -> np.ndarray:
        plan = Plan(g, {}, get_backend("numpy"), {**variables, "W": w}, ["gW"],
                    apply_updates=False)
        return np.asarray(plan.run(feeds)[0])

    fd = (grad_at(variables["W"] + eps * direction) - grad_at(variables["W"] - eps * direction)
          ) / (2 * eps)
    np.testing.assert_allclose(looped, fd, rtol=1e-6, atol=1e-6)


def test_pipeline_sees_into_bodies_and_keeps_values() -> None:
    g = with_grads(rnn(False))
    opt, ran, dump = run_pipeline(g, verify=True, dump_after="hoist_loop_invariants")
    assert "hoist_loop_invariants" in ran
    text = to_text(opt)
    back = [n for n in opt.nodes.values() if n.op == "loop" and n.attrs["reverse"]]
    assert len(back) == 1
    # W's transpose, read by every backward iteration, is computed once before the loop
    body_ops = [n.op for n in back[0].regions[0].nodes.values()]
    assert "transpose" in [n.op for n in opt.nodes.values()]
    assert body_ops.count("transpose") == 1  # the one left transposes the saved carry
    assert "fused_elementwise" in body_ops  # fusion ran inside the body
    # the backward loop's stacked cotangent of x is dropped: nobody reads it
    assert back[0].attrs["n_carry"] == 3 and len(back[0].type.items) == 3, text
    assert "transpose" in dump
    for a, u in zip(run(opt, ["loss", "gW", "gb"]), run(g, ["loss", "gW", "gb"])):
        np.testing.assert_array_equal(a, u)


def test_dead_carries_and_outputs_are_pruned() -> None:
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f64(T, H), role="input", name="x"))
    body, rb, (t, a, c, xt) = new_region([I64, f64(H), f64(H), f64(H)])
    set_results(body, [a + xt, c * 2.0, a * xt, c])  # carry c and output c: unused
    (fa, _fc), (ys, _yc) = loop(b, body, [b.emit("full", shape=(H,), value=0.0, dtype="f64")] * 2,
                                [x], [], length=T)
    g.outputs["y"] = (b.emit("sum", fa) + b.emit("sum", ys)).id
    opt, _, _ = run_pipeline(g, verify=True)
    (node,) = [n for n in opt.nodes.values() if n.op == "loop"]
    assert node.attrs["n_carry"] == 1 and len(node.type.items) == 2
    xv = np.random.default_rng(1).standard_normal((T, H))
    for gg in (g, opt):
        plan = Plan(gg, {}, get_backend("numpy"), {}, ["y"], apply_updates=False)
        got = float(plan.run({"x": xv})[0])
        want = sum(np.cumsum(xv, 0)[-1]) + sum((np.cumsum(xv, 0) - xv)[k] @ xv[k]
                                                for k in range(T))
        assert got == pytest.approx(want, rel=1e-12)


def test_carry_type_mismatch_is_a_shape_error() -> None:
    from runtime.ops import ShapeError

    g = Graph()
    b = Builder(g)
    body, rb, (t, h) = new_region([I64, f64(H)])
    set_results(body, [b.graph and rb.emit("reshape", h, shape=(1, H))])
    with pytest.raises(ShapeError, match=r"carried value 0 enters as f64\[4\].*leaves the body "
                       r"as f64\[1,4\]"):
        loop(b, body, [b.emit("full", shape=(H,), value=0.0, dtype="f64")], [], [], length=3)


def test_vjp_of_several_outputs() -> None:
    """`vjp` seeds several outputs at once (the backward body uses it)."""
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f64(3), role="input", name="x"))
    y1, y2 = b.emit("exp", x), x * x
    s1 = Val(b, g.add("input", (), {}, f64(3), role="input", name="s1"))
    (gx,) = vjp(b, {y1.id: s1, y2.id: b.const(np.ones(3), "f64")}, [x.id])
    g.outputs["gx"] = gx.id
    xv, sv = np.array([0.1, 0.2, 0.3]), np.array([1.0, 2.0, 3.0])
    plan = Plan(g, {}, get_backend("numpy"), {}, ["gx"], apply_updates=False)
    np.testing.assert_allclose(plan.run({"x": xv, "s1": sv})[0], sv * np.exp(xv) + 2 * xv)
