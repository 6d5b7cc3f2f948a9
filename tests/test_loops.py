"""The `loop` node: a body region compiled once and run N times, its text form, the passes
that see into it, and reverse mode through it (a reverse loop over saved residuals).

Gradients through a run-time loop must equal those of the same body unrolled (built here
with a Python `for`) to 1e-12 in float64, first and second order. Nested loops differentiate
(the inner loop is recomputed in the outer backward body); a checkpointed loop (segments
recomputed in the backward pass, with a tail when K does not divide T), a loop with a
run-time trip count and an early-exit loop give the gradients of the plain loop of the same
count to 1e-12, forward and reverse.
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.autodiff import gradients, vjp
from runtime.backends import get_backend
from runtime.ir import Graph, TensorType
from runtime.ir_text import parse_text
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
        (h,), (hs,), _ = loop(b, body, [h0], [x], [w, bias], length=length, reverse=reverse)
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
    # W's transpose, read by every backward iteration, is computed once before the loop;
    # the gradients of W and b are sums over the iterations, computed after it from the
    # stacked terms (restructure_loops)
    body_ops = [n.op for n in back[0].regions[0].nodes.values()]
    assert "transpose" in [n.op for n in opt.nodes.values()]
    assert body_ops.count("transpose") == 0
    assert "fused_elementwise" in body_ops  # fusion ran inside the body
    # the backward loop carries the cotangent of h only; its stacked cotangent of x is
    # dropped (nobody reads it)
    assert back[0].attrs["n_carry"] == 1 and len(back[0].type.items) == 2, text
    assert "transpose" in dump
    for a, u in zip(run(opt, ["loss", "gW", "gb"]), run(g, ["loss", "gW", "gb"])):
        np.testing.assert_allclose(a, u, rtol=1e-13, atol=1e-13)  # sums in another order


def test_dead_carries_and_outputs_are_pruned() -> None:
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f64(T, H), role="input", name="x"))
    body, rb, (t, a, c, xt) = new_region([I64, f64(H), f64(H), f64(H)])
    set_results(body, [a + xt, c * 2.0, a * xt, c])  # carry c and output c: unused
    zero = b.emit("full", shape=(H,), value=0.0, dtype="f64")
    (fa, _fc), (ys, _yc), _ = loop(b, body, [zero] * 2, [x], [], length=T)
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


# ---------------------------------------------------------------- nesting, checkpoints, counts
def rnn_graph(reverse: bool = False, length: int = T, n: bool = False, until: bool = False,
              checkpoint: int | None = None) -> Graph:
    """`rnn` as a loop with options, differentiated with respect to W, b, x and h0. `n`: the
    trip count is the i64 input "n"; `until`: the loop stops after the first iteration whose
    Σ h_{t+1} exceeds the input "thr" (its count is the output "count")."""
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f64(length, B, H), role="input", name="x"))
    h0 = Val(b, g.add("input", (), {}, f64(B, H), role="input", name="h0"))
    w = Val(b, g.add("param", (), {}, f64(H, H), role="param", name="W"))
    bias = Val(b, g.add("param", (), {}, f64(H), role="param", name="b"))
    caps = [w, bias]
    types = [I64, f64(B, H), f64(B, H), f64(H, H), f64(H)]
    if until:
        caps.append(Val(b, g.add("input", (), {}, f64(), role="input", name="thr")))
        types.append(f64())
    body, rb, (t, h, xt, wa, ba, *thr) = new_region(types)
    hn = rb.emit("tanh", h @ wa + xt + ba)
    y = hn * hn + hn * rb.emit("cast", t, dtype="f64") * 0.01
    stop = [rb.emit("sum", hn) > thr[0]] if until else []
    set_results(body, [hn, *stop, y])
    count = Val(b, g.add("input", (), {}, I64, role="input", name="n")) if n else None
    (h,), (hs,), ran = loop(b, body, [h0], [x], caps, length=length, reverse=reverse, n=count,
                            until=until, checkpoint=checkpoint)
    loss = b.emit("sum", hs) + b.emit("sum", h * h)
    g.outputs["loss"] = loss.id
    g.outputs["hs"] = hs.id
    if ran is not None:
        g.outputs["count"] = ran.id
    grads = gradients(Builder(g, role="grad"), loss.id, [w.id, bias.id, x.id, h0.id])
    for name, v in zip(["gW", "gb", "gx", "gh0"], grads):
        g.outputs[name] = v.id
    return g


GRADS = ["loss", "hs", "gW", "gb", "gx", "gh0"]


def run_values(g: Graph, feeds: dict, outputs: list[str] = GRADS) -> dict[str, np.ndarray]:
    _, variables = values()
    plan = Plan(g, {}, get_backend("numpy"), variables, outputs, apply_updates=False)
    return dict(zip(outputs, (np.asarray(v) for v in plan.run(feeds))))


def assert_close(got: dict, want: dict) -> None:
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_nested_loops_differentiate_like_the_unrolled_graph() -> None:
    """An outer loop whose body runs an inner loop: the inner loop (a node with several
    results) is recomputed in the outer backward body, not stacked."""
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f64(3, 2, B, H), role="input", name="x"))
    h0 = Val(b, g.add("input", (), {}, f64(B, H), role="input", name="h0"))
    w = Val(b, g.add("param", (), {}, f64(H, H), role="param", name="W"))
    bias = Val(b, g.add("param", (), {}, f64(H), role="param", name="b"))
    inner, ib, (t, h, xt, wa, ba) = new_region([I64, f64(B, H), f64(B, H), f64(H, H), f64(H)])
    hn = ib.emit("tanh", h @ wa + xt + ba)
    set_results(inner, [hn, hn * hn])
    outer, ob, (s, ho, xs, wo, bo) = new_region([I64, f64(B, H), f64(2, B, H), f64(H, H),
                                                 f64(H)])
    (hi,), (ys,), _ = loop(ob, inner, [ho], [xs], [wo, bo], length=2)
    set_results(outer, [hi * 0.5, ys])
    (hf,), (yss,), _ = loop(b, outer, [h0], [x], [w, bias], length=3)
    g.outputs["loss"] = (b.emit("sum", yss) + b.emit("sum", hf)).id
    with_grads(g)
    verify_graph(g)
    feeds, variables = values()
    xv = feeds["x"].reshape(3, 2, B, H)
    plan = Plan(g, {}, get_backend("numpy"), variables, ["loss", "gW", "gb"],
                apply_updates=False)
    got = [np.asarray(v) for v in plan.run({"x": xv, "h0": feeds["h0"]})]

    def loss(wv: np.ndarray, bv: np.ndarray) -> float:
        h, total = feeds["h0"], 0.0
        for s in range(3):
            for k in range(2):
                h = np.tanh(h @ wv + xv[s, k] + bv)
                total += float(np.sum(h * h))
            h = h * 0.5
        return total + float(np.sum(h))

    assert float(got[0]) == pytest.approx(loss(variables["W"], variables["b"]), rel=1e-12)
    eps = 1e-6
    for name, gv in [("W", got[1]), ("b", got[2])]:
        base = dict(variables)
        fd = np.zeros_like(base[name])
        for i in np.ndindex(fd.shape):
            e = np.zeros_like(fd)
            e[i] = eps
            up = {**base, name: base[name] + e}
            dn = {**base, name: base[name] - e}
            fd[i] = (loss(up["W"], up["b"]) - loss(dn["W"], dn["b"])) / (2 * eps)
        np.testing.assert_allclose(gv, fd, rtol=1e-6, atol=1e-7)
    opt, _, _ = run_pipeline(g, verify=True)
    got_opt = [np.asarray(v) for v in Plan(opt, {}, get_backend("numpy"), variables,
                                           ["loss", "gW", "gb"], apply_updates=False).run(
        {"x": xv, "h0": feeds["h0"]})]
    for a, u in zip(got_opt, got):
        np.testing.assert_allclose(a, u, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("every", [1, 2, 3, 4, 6])
def test_checkpointed_gradients_equal_the_plain_loop(reverse: bool, every: int) -> None:
    """T = 6 in segments of 1, 2, 3 or 6 iterations, or one of 4 and a tail of 2."""
    feeds, _ = values()
    want = run_values(rnn_graph(reverse), feeds)
    g = rnn_graph(reverse, checkpoint=every)
    verify_graph(g)
    assert_close(run_values(g, feeds), want)
    opt, _, _ = run_pipeline(g, verify=True)
    assert_close(run_values(opt, feeds), want)


def test_checkpointed_forward_keeps_one_carry_per_segment() -> None:
    """After the pipeline, no loop of the step (outside loop bodies) stacks per iteration:
    the forward loop runs over the 3 segments, stacking the carry entering each (and the
    output hs, [3, 2, B, H]); each backward iteration recomputes its segment."""
    opt, _, _ = run_pipeline(rnn_graph(checkpoint=2), verify=True)
    loops = [n for n in opt.nodes.values() if n.op == "loop"]
    assert {n.attrs["length"] for n in loops} == {3}
    stacked = [t for n in loops for t in n.type.items[n.attrs["n_carry"]:]]
    assert f64(3, B, H) in stacked and all(t.shape[0] == 3 for t in stacked)
    assert all(any(m.op == "loop" for m in n.regions[0].nodes.values()) for n in loops)
    text = to_text(opt)
    assert to_text(parse_text(text)) == text


def test_hessian_vector_product_through_a_checkpointed_loop() -> None:
    """Second order: the backward loop of a checkpointed loop differentiates again (segments
    of 4 and a tail of 2), equal to the plain loop's after the pipeline."""

    def hvp(every: int | None) -> np.ndarray:
        g = rnn_graph(checkpoint=every)
        b = Builder(g, role="grad")
        v = Val(b, g.add("input", (), {}, f64(H, H), role="input", name="V"))
        (hv,) = gradients(b, b.emit("sum", Val(b, g.outputs["gW"]) * v).id,
                          [g.find("param", "W")])
        g.outputs["hv"] = hv.id
        opt, _, _ = run_pipeline(g, verify=True)
        feeds, _ = values()
        return run_values(opt, {**feeds, "V": direction}, ["hv"])["hv"]

    direction = np.random.default_rng(5).standard_normal((H, H))
    np.testing.assert_allclose(hvp(4), hvp(None), rtol=1e-12, atol=1e-12)


def test_checkpoint_needs_a_count_in_range() -> None:
    from runtime.ops import ShapeError

    for bad in (0, -1, 7, 2.5):
        with pytest.raises(ShapeError, match=r"checkpoint = .* must be an integer in 1 \.\. 6"):
            rnn_graph(checkpoint=bad)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("n", [-2, 0, 1, 4, 6, 9])
def test_run_time_trip_count_equals_a_constant_count(reverse: bool, n: int) -> None:
    """n (clipped to [0, 6]) iterations of a loop of at most 6: the same loss and gradients
    as a loop of that constant length over the first rows of x; rows past the count are
    zeros (of hs and of the gradient of x)."""
    feeds, _ = values()
    m = min(max(n, 0), T)
    got = run_values(rnn_graph(reverse, n=True), {**feeds, "n": np.int64(n)})
    if m:
        want = run_values(rnn_graph(reverse, length=m), {**feeds, "x": feeds["x"][:m]})
    else:
        want = {"loss": np.sum(feeds["h0"] ** 2), "hs": np.zeros((0, B, H)),
                "gW": np.zeros((H, H)), "gb": np.zeros(H), "gx": np.zeros((0, B, H)),
                "gh0": 2 * feeds["h0"]}
    for k in ("hs", "gx"):
        np.testing.assert_array_equal(got[k][m:], 0.0)
        got[k] = got[k][:m]
    assert_close(got, want)


def test_run_time_trip_count_through_the_pipeline_and_text() -> None:
    g = rnn_graph(n=True)
    verify_graph(g)
    text = to_text(g)
    assert "dynamic=True" in text and to_text(parse_text(text)) == text
    feeds, _ = values()
    feeds["n"] = np.int64(4)
    opt, _, _ = run_pipeline(g, verify=True)
    back = [n for n in opt.nodes.values() if n.op == "loop" and n.attrs["reverse"]]
    assert len(back) == 1 and back[0].attrs["dynamic"]
    assert_close(run_values(opt, feeds), run_values(g, feeds))


def test_hessian_vector_product_through_a_run_time_trip_count() -> None:
    """The gradient of ⟨∇L, V⟩ through a loop of n = 3 of at most 6 iterations (the VJP of a
    backward loop with a run-time count) against central differences of ∇L."""
    direction = np.random.default_rng(5).standard_normal((H, H))
    feeds, variables = values()
    feeds["n"] = np.int64(3)
    g = rnn_graph(n=True)
    b = Builder(g, role="grad")
    v = Val(b, g.add("input", (), {}, f64(H, H), role="input", name="V"))
    (hv,) = gradients(b, b.emit("sum", Val(b, g.outputs["gW"]) * v).id, [g.find("param", "W")])
    g.outputs["hv"] = hv.id
    got = run_values(g, {**feeds, "V": direction}, ["hv"])["hv"]
    eps = 1e-5

    def grad_at(w: np.ndarray) -> np.ndarray:
        plan = Plan(g, {}, get_backend("numpy"), {**variables, "W": w}, ["gW"],
                    apply_updates=False)
        return np.asarray(plan.run(feeds)[0])

    fd = (grad_at(variables["W"] + eps * direction) - grad_at(variables["W"] - eps * direction)
          ) / (2 * eps)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("thr", [-1e9, 0.5, 1e9])
def test_early_exit_equals_a_constant_count(thr: float) -> None:
    """The loop stops after the first iteration with Σ h_{t+1} > thr (at once, after a few
    iterations, never): its count is that iteration's number, the loss and gradients those of
    a loop of that constant length, the rows past it zeros."""
    feeds, variables = values()
    h, want_count = feeds["h0"], T
    for k in range(T):
        h = np.tanh(h @ variables["W"] + feeds["x"][k] + variables["b"])
        if h.sum() > thr:
            want_count = k + 1
            break
    got = run_values(rnn_graph(until=True), {**feeds, "thr": np.float64(thr)},
                     [*GRADS, "count"])
    assert got["count"].dtype == np.int64 and int(got["count"]) == want_count
    if thr == 0.5:
        assert 1 < want_count < T
    m = want_count
    want = run_values(rnn_graph(length=m), {**feeds, "x": feeds["x"][:m]})
    for k in ("hs", "gx"):
        np.testing.assert_array_equal(got[k][m:], 0.0)
        got[k] = got[k][:m]
    assert_close(got, want)
    opt, _, _ = run_pipeline(rnn_graph(until=True), verify=True)
    got_opt = run_values(opt, {**feeds, "thr": np.float64(thr)}, ["gW", "count"])
    np.testing.assert_allclose(got_opt["gW"], want["gW"], rtol=1e-12, atol=1e-12)
    assert int(got_opt["count"]) == want_count


def test_early_exit_text_reads_back() -> None:
    g = rnn_graph(until=True)
    verify_graph(g)
    text = to_text(g)
    assert "until=True" in text and to_text(parse_text(text)) == text


def test_pruning_keeps_the_stop_flag_and_the_count() -> None:
    """Nobody reads the count or a carry that only the stop flag reads: both stay."""
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f64(T, H), role="input", name="x"))
    body, rb, (t, acc, c, xt) = new_region([I64, f64(H), f64(H), f64(H)])
    c2 = c + xt
    set_results(body, [acc + xt, c2, rb.emit("sum", c2) > 1.0, xt * 2.0])
    zero = b.emit("full", shape=(H,), value=0.0, dtype="f64")
    (fa, _fc), (_ys,), _count = loop(b, body, [zero, zero], [x], [], length=T, until=True)
    g.outputs["y"] = b.emit("sum", fa).id
    opt, _, _ = run_pipeline(g, verify=True)
    (node,) = [n for n in opt.nodes.values() if n.op == "loop"]
    assert node.attrs["n_carry"] == 2 and len(node.type.items) == 3
    xv = np.abs(np.random.default_rng(1).standard_normal((T, H)))
    stop = int(np.argmax(np.cumsum(xv, 0).sum(1) > 1.0)) + 1
    for gg in (g, opt):
        plan = Plan(gg, {}, get_backend("numpy"), {}, ["y"], apply_updates=False)
        assert float(plan.run({"x": xv})[0]) == pytest.approx(xv[:stop].sum(), rel=1e-12)


def test_dynamic_and_until_shape_errors() -> None:
    from runtime.ops import ShapeError

    g = Graph()
    b = Builder(g)
    h0 = b.emit("full", shape=(H,), value=0.0, dtype="f64")
    body, rb, (t, h) = new_region([I64, f64(H)])
    set_results(body, [h * 2.0])
    with pytest.raises(ShapeError, match=r"run-time trip count .* an i64\[\]; got f64\[\]"):
        loop(b, body, [h0], [], [], length=3, n=b.const(2.0, "f64"))
    with pytest.raises(ShapeError, match=r"yields its stop flag, a bool\[\], after its 1 "
                       r"carried values; got f64\[4\]"):
        body2, rb2, (t2, h2) = new_region([I64, f64(H)])
        set_results(body2, [h2 * 2.0, h2])
        loop(b, body2, [h0], [], [], length=3, until=True)
    body3, rb3, (t3, h3) = new_region([I64, f64(H)])
    set_results(body3, [h3 * 2.0, rb3.emit("sum", h3) > 0.0])
    with pytest.raises(ShapeError, match="an early-exit loop .* runs forward"):
        loop(b, body3, [h0], [], [], length=3, until=True, reverse=True)
    with pytest.raises(ShapeError, match="checkpoint = K needs a fixed trip count"):
        loop(b, body3, [h0], [], [], length=3, until=True, checkpoint=1)
