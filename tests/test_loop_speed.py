"""The rewrites and executor paths that make run-time loops and sequence models fast: values
first (float64, against the graph before the rewrite), then the structure they promise.

- `restructure_loops`: input projections run over whole sequences before the loop, invariant
  sums before it, weight-gradient sums after it (one `tensordot`), stacked invariants become
  broadcasts and captured again;
- `concat_padded_slices`: the gradient of a split is a `concat`;
- the contraction rules: products over stacked rows as one `tensordot`;
- the plan: loop bodies reuse buffers (bit-identical to the plain steps), the loop driver
  (`runtime.plan.scan`) gives the op kernel's results, `sigmoid`, `softmax` and `tensordot`
  have out= forms with the plain kernels' bits.
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.autodiff import gradients
from runtime.backends import get_backend
from runtime.ir import Graph, TensorType
from runtime.ops import REGISTRY, Builder, Val
from runtime.ops.control import loop, new_region, set_results
from runtime.passes import (
    concat_padded_slices,
    restructure_loops,
    run_pipeline,
    simplify,
    verify_graph,
)
from runtime.plan import Plan
from runtime.plan.out_kernels import out_spec, same, spec_matches

T, B, F, H = 5, 3, 2, 4
I64 = TensorType("i64", ())


def f64(*shape: int | str) -> TensorType:
    return TensorType("f64", tuple(shape))


def cell_loop(reverse: bool = False) -> Graph:
    """An RNN with an input projection and two biases, its gradients and a second loop over
    the same weights: loss = Σ_t Σ h_t² + Σ h_T, h' = tanh(h U + x_t W + b1 + b2)."""
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f64(T, B, F), role="input", name="x"))
    h0 = b.emit("full", shape=(B, H), value=0.0, dtype="f64")
    params = {}
    for name, shape in (("W", (F, H)), ("U", (H, H)), ("b1", (H,)), ("b2", (H,))):
        params[name] = Val(b, g.add("param", (), {}, f64(*shape), role="param", name=name))
    body, rb, (t, h, xt, w, u, b1, b2) = new_region(
        [I64, f64(B, H), f64(B, F), f64(F, H), f64(H, H), f64(H), f64(H)])
    hn = rb.emit("tanh", h @ u + xt @ w + b1 + b2)
    set_results(body, [hn, hn * hn])
    (hl,), (hs,), _ = loop(b, body, [h0], [x], [params[k] for k in ("W", "U", "b1", "b2")],
                          length=T, reverse=reverse)
    loss = b.emit("sum", hs) + b.emit("sum", hl)
    g.outputs["loss"] = loss.id
    grads = gradients(Builder(g, role="grad"), loss.id, [v.id for v in params.values()])
    for name, v in zip(params, grads):
        g.outputs["g" + name] = v.id
    return g


def feeds_and_vars(g: Graph, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    feeds = {n.name: rng.standard_normal(n.type.shape) for n in g.nodes.values()
             if n.op == "input"}
    variables = {n.name: rng.standard_normal(n.type.shape) * 0.5 for n in g.nodes.values()
                 if n.op == "param"}
    return feeds, variables


def run(g: Graph, reuse: bool = True, steps: int = 1) -> dict[str, np.ndarray]:
    feeds, variables = feeds_and_vars(g)
    plan = Plan(g, {}, get_backend("numpy"), variables, list(g.outputs), apply_updates=False)
    plan.reuse_buffers = reuse
    for _ in range(steps):
        out = plan.run(feeds)
    return {k: np.array(v, copy=True) for k, v in zip(g.outputs, out)}


def assert_close(got: dict, want: dict) -> None:
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12, err_msg=k)


def loops_of(g: Graph) -> list:
    return [n for n in g.nodes.values() if n.op == "loop"]


# ---------------------------------------------------------------- restructure_loops
@pytest.mark.parametrize("reverse", [False, True])
def test_restructured_loops_keep_values(reverse: bool) -> None:
    g = cell_loop(reverse)
    out = restructure_loops(g)
    verify_graph(out)
    assert_close(run(out), run(g))
    opt, _, _ = run_pipeline(g, verify=True)
    assert_close(run(opt), run(g))


def test_input_projection_runs_before_the_loop_and_weight_sums_after() -> None:
    opt, _, _ = run_pipeline(cell_loop(), verify=True)
    fwd, back = sorted(loops_of(opt), key=lambda n: n.attrs["reverse"])
    fwd_ops = [n.op for n in fwd.regions[0].nodes.values()]
    assert fwd_ops.count("matmul") == 1  # h U; x_t W is one tensordot over the sequence
    # b1 + b2 is summed once, outside: the body adds one vector
    assert any(n.op == "add" and n.type == f64(H) for n in opt.nodes.values())
    # the backward loop carries the cotangent of h only: the gradients of W, U, b1 and b2
    # are sums after it (tensordot over time and batch, sums of the stacked cotangent)
    assert back.attrs["n_carry"] == 1
    back_ops = [n.op for n in back.regions[0].nodes.values()]
    assert "transpose" not in back_ops and back_ops.count("matmul") == 1
    assert sum(n.op == "tensordot" for n in opt.nodes.values()) == 3
    # the forward loop no longer stacks the captured weights for the backward loop
    assert all(len(t.shape) != 3 or t.shape[1:] != (H, H) for t in fwd.type.items)


def test_stacked_invariants_become_captured_values() -> None:
    # the body yields a captured value as a stacked result; the next loop slices it
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f64(T, H), role="input", name="x"))
    w = Val(b, g.add("param", (), {}, f64(H), role="param", name="W"))
    body, rb, (t, c, xt, wa) = new_region([I64, f64(H), f64(H), f64(H)])
    set_results(body, [c + xt * wa, wa])
    (c,), (ws,), _ = loop(b, body, [b.emit("full", shape=(H,), value=0.0, dtype="f64")],
                          [x], [w], length=T)
    body2, rb2, (t2, c2, wt) = new_region([I64, f64(H), f64(H)])
    set_results(body2, [c2 * 0.5 + rb2.emit("exp", wt)])
    (d,), _, _ = loop(b, body2, [c], [ws], [], length=T)
    g.outputs["d"] = d.id
    opt, _, _ = run_pipeline(g, verify=True)
    assert_close(run(opt), run(g))
    first, second = loops_of(opt)
    assert len(first.type.items) == 1  # nothing stacked
    assert second.attrs["n_seq"] == 0  # W captured; exp(W) computed once, before the loop
    assert "exp" not in [n.op for n in second.regions[0].nodes.values()]


def test_loops_with_a_run_time_count_keep_their_sums() -> None:
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f64(T, B, H), role="input", name="x"))
    n = Val(b, g.add("input", (), {}, I64, role="input", name="n"))
    w = Val(b, g.add("param", (), {}, f64(H, H), role="param", name="W"))
    body, rb, (t, h, xt, wa) = new_region([I64, f64(B, H), f64(B, H), f64(H, H)])
    set_results(body, [rb.emit("tanh", h @ wa + xt)])
    (h,), _, _ = loop(b, body, [b.emit("full", shape=(B, H), value=0.0, dtype="f64")], [x],
                      [w], length=T, n=n)
    loss = b.emit("sum", h * h)
    g.outputs["loss"] = loss.id
    (gw,) = gradients(Builder(g, role="grad"), loss.id, [w.id])
    g.outputs["gW"] = gw.id
    opt, _, _ = run_pipeline(g, verify=True)
    feeds, variables = feeds_and_vars(g)
    for count in (0, 3, T):
        got = Plan(opt, {}, get_backend("numpy"), dict(variables), ["loss", "gW"],
                   apply_updates=False).run({**feeds, "n": np.int64(count)})
        want = Plan(g, {}, get_backend("numpy"), dict(variables), ["loss", "gW"],
                    apply_updates=False).run({**feeds, "n": np.int64(count)})
        for a, u in zip(got, want):
            np.testing.assert_allclose(a, u, rtol=1e-12, atol=1e-12)
    back = [n for n in loops_of(opt) if n.attrs["reverse"]]
    assert back and back[0].attrs["n_carry"] == 2  # the sum of gW stays in the loop


# ---------------------------------------------------------------- concat_padded_slices
def split_graph(cuts: tuple[tuple[int, int], ...]) -> Graph:
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("param", (), {}, f64(B, 6), role="param", name="x"))
    parts = [b.emit("getitem", x, index=(("s", None, None, None), ("s", lo, hi, None)))
             for lo, hi in cuts]
    terms = [b.emit("sum", b.emit(op, p)) for op, p in zip(("exp", "tanh", "sin"), parts)]
    loss = terms[0]
    for term in terms[1:]:
        loss = loss + term
    g.outputs["loss"] = loss.id
    (gx,) = gradients(Builder(g, role="grad"), loss.id, [x.id])
    g.outputs["gx"] = gx.id
    return g


def test_the_gradient_of_a_split_is_a_concat() -> None:
    g = split_graph(((0, 2), (2, 3), (3, 6)))
    out = concat_padded_slices(simplify(g))
    verify_graph(out)
    assert_close(run(out), run(g))
    concats = [n for n in out.nodes.values() if n.op == "concat"]
    assert len(concats) == 1 and concats[0].attrs["axis"] == 1
    assert not any(n.op == "index_put" for n in out.nodes.values())


@pytest.mark.parametrize("cuts", [((0, 2), (3, 6)), ((0, 3), (2, 6))])
def test_slices_that_do_not_tile_the_axis_stay_sums(cuts: tuple) -> None:
    g = split_graph(cuts)
    out = concat_padded_slices(simplify(g))
    assert_close(run(out), run(g))
    assert not any(n.op == "concat" for n in out.nodes.values())


# ---------------------------------------------------------------- contraction rules
def test_products_over_stacked_rows_are_one_tensordot() -> None:
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f64("B", T, F), role="input", name="x"))
    w = Val(b, g.add("param", (), {}, f64(H, F), role="param", name="W"))
    y = x @ b.emit("transpose", w)
    loss = b.emit("sum", b.emit("tanh", y))
    g.outputs["loss"] = loss.id
    (gw,) = gradients(Builder(g, role="grad"), loss.id, [w.id])
    g.outputs["gW"] = gw.id
    out = simplify(g)
    verify_graph(out)
    ops = [out[i].op for i in out.topo_order(out.roots())]
    assert "matmul" not in ops and ops.count("tensordot") == 2  # y, and W's gradient
    assert "sum_to" not in ops
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((B, T, F))}
    variables = {"W": rng.standard_normal((H, F))}
    got, want = (Plan(gr, {"B": B}, get_backend("numpy"), dict(variables), ["loss", "gW"],
                      apply_updates=False).run(feeds) for gr in (out, g))
    for a, u in zip(got, want):
        np.testing.assert_allclose(a, u, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the plan
@pytest.mark.parametrize("reverse", [False, True])
def test_loop_bodies_reuse_buffers_bit_identically(reverse: bool) -> None:
    for g in (cell_loop(reverse), run_pipeline(cell_loop(reverse))[0]):
        plain, reused = run(g, reuse=False, steps=3), run(g, reuse=True, steps=3)
        for k in plain:
            assert same(np.asarray(plain[k]), np.asarray(reused[k])), k


def _forward_loop() -> tuple:
    """The forward loop node of `cell_loop`, its plan instruction and its operands after a run,
    and a plan context."""
    from runtime.plan.step import PlanContext

    g = cell_loop()
    (node,) = [n for n in loops_of(g) if not n.attrs["reverse"]]
    feeds, variables = feeds_and_vars(g)
    plan = Plan(g, {}, get_backend("numpy"), variables, list(g.outputs), apply_updates=False)
    plan.run(feeds)
    slot = {ins.nid: ins for ins in plan.instrs}[node.id]
    return node, slot, [plan.vals[i] for i in slot.ins], PlanContext(get_backend("numpy"), {},
                                                                       None)


def test_the_loop_driver_gives_the_op_kernels_values() -> None:
    from runtime.ops.control import _loop_compile

    node, slot, args, ctx = _forward_loop()
    driver, op = slot.fn(*args), _loop_compile(ctx, node, dict(node.attrs))(*args)
    assert len(driver) == len(op)
    for a, u in zip(driver, op):
        np.testing.assert_array_equal(a, u)


def test_the_loop_driver_reuses_only_stacks_nothing_holds() -> None:
    from runtime.plan.scan import scan_kernel

    # the stacked results are written into the arrays of an earlier call once nothing but
    # the driver holds them; values a caller kept are never overwritten
    node, _slot, args, ctx = _forward_loop()
    driver = scan_kernel(ctx, node, dict(node.attrs))
    nc = node.attrs["n_carry"]
    kept = driver(*args)
    want = [np.array(a) for a in kept]
    first = [id(y) for y in driver(*args)[nc:]]  # dropped at once
    other = [a * 2 if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    for _ in range(3):
        again = driver(*other)
        assert [id(y) for y in again[nc:]] == first  # the dropped set, written again
        del again
    for a, u in zip(kept, want):
        np.testing.assert_array_equal(a, u)
    view = driver(*other)[nc][1:]  # a view keeps its stack too
    assert not any(np.shares_memory(view, y) for y in driver(*other)[nc:])


@pytest.mark.parametrize("op, shape, attrs", [
    ("sigmoid", (4, 6), {}),
    ("softmax", (3, 4, 5), {"axis": -1, "temperature": 1.0}),
    ("softmax", (3, 4, 5), {"axis": 1, "temperature": 2.0}),
    ("tensordot", None, {"axes": 2}),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_forms_have_the_plain_kernels_bits(op: str, shape: tuple, attrs: dict,
                                               dtype: type) -> None:
    rng = np.random.default_rng(3)
    if op == "tensordot":
        args = [rng.standard_normal((5, 3, 4)).astype(dtype).transpose(2, 0, 1),
                rng.standard_normal((5, 3, 6)).astype(dtype)]
    else:
        x = (rng.standard_normal(shape) * 30).astype(dtype)
        x.flat[:8] = [np.nan, np.inf, -np.inf, -0.0, 0.0, -100, 100, -np.nan]
        args = [x[..., 1:]]  # a strided view
    with np.errstate(all="ignore"):
        res = REGISTRY[op].forward(np, *args, **attrs)
        node = type("N", (), {"op": op, "regions": ()})()
        spec = out_spec(np, node, attrs, {}, args, res, [False] * len(args))
        assert spec is not None and spec_matches(spec, args, res)
        out = np.empty_like(res)
        got = spec.make(out, [np.empty_like(like) for like in spec.likes])(*args)
    assert got is out and same(out, res)


POOL = {"kernel": (2, 2), "stride": None, "padding": (0, 0)}
CONV = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}


@pytest.mark.parametrize("op, shapes, attrs", [
    ("max_pool2d", [(2, 3, 8, 8)], POOL),
    ("max_pool2d", [(2, 3, 7, 7)], {**POOL, "stride": (3, 3), "padding": (1, 1)}),
    ("max_pool2d_grad", [(2, 3, 4, 4), (2, 3, 8, 8)], POOL),  # windows tile: no zeroing
    ("max_pool2d_grad", [(2, 3, 3, 3), (2, 3, 8, 8)], {**POOL, "stride": (3, 3)}),  # gaps
    ("max_pool2d_grad", [(2, 3, 3, 3), (2, 3, 7, 7)], POOL),  # a row and column left over
    ("max_pool2d_grad", [(2, 3, 3, 3), (2, 3, 7, 7)], {**POOL, "kernel": (3, 3),
                                                       "stride": (2, 2)}),  # overlapping
    ("max_pool2d_grad", [(2, 3, 5, 5), (2, 3, 8, 8)], {**POOL, "padding": (1, 1)}),
    ("conv2d", [(2, 3, 9, 8), (4, 3, 3, 3)], {**CONV, "padding": (1, 1)}),
    ("conv2d", [(2, 4, 9, 9), (6, 2, 3, 2)], {**CONV, "stride": (2, 1), "groups": 2}),
    ("conv2d_grad_input", [(2, 4, 7, 6), (4, 3, 3, 3)], {**CONV, "input_size": (9, 8)}),
    ("conv2d_grad_input", [(2, 4, 5, 8), (4, 3, 3, 3)], {**CONV, "stride": (2, 1),
                                                        "padding": (1, 1), "input_size": (9, 8)}),
])
def test_window_forms_write_every_element_of_a_used_buffer(op, shapes, attrs) -> None:
    """The conv and pool forms run in buffers a step used before: on one full of NaN they
    must still give the plain kernel's bytes (the check of forms poisons its buffers so)."""
    rng = np.random.default_rng(5)
    args = [rng.standard_normal(s) for s in shapes]
    args[-1][..., :2] = 0.0  # ties in the windows: the first maximum takes the gradient
    res = REGISTRY[op].forward(np, *args, **attrs)
    node = type("N", (), {"op": op, "regions": ()})()
    spec = out_spec(np, node, attrs, {}, args, res, [False] * len(args))
    assert spec is not None and spec_matches(spec, args, res)
    out = np.full_like(res, np.nan)
    assert spec.make(out, [])(*args) is out and same(out, res)
