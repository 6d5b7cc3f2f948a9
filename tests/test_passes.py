"""Tests for runtime.passes: each pass's structure and values, the stabilizing rewrites and
their gradients, the rewrite engine's limits, the pipeline (idempotence, dumps, verification)
and the canonical text round trip of optimized graphs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from runtime.autodiff import gradients
from runtime.backends import get_backend
from runtime.ir import Graph, IRError, Node, TensorType
from runtime.ir_text import parse_text
from runtime.ops import Builder, Val, to_text
from runtime.passes import (
    ALGEBRAIC_RULES,
    CONTRACTION_RULES,
    FUSED,
    FUSION_RULES,
    PASSES,
    PIPELINE,
    SIMPLIFY_RULES,
    STABILIZING_RULES,
    Attr,
    Const,
    Rule,
    Var,
    VerifyError,
    eliminate_dead_code,
    fold_constants,
    fuse_elementwise,
    merge_common_subexpressions,
    rewrite,
    run_pipeline,
    simplify,
    stabilize,
    verify_graph,
)
from runtime.passes.rewrite import check_rule
from runtime.plan import Plan

NP = get_backend("numpy")

# --------------------------------------------------------------------------- helpers


def new() -> tuple[Graph, Builder]:
    g = Graph()
    return g, Builder(g)


def inp(b: Builder, name: str, shape: tuple = (), dtype: str = "f64") -> Val:
    return b.val(b.graph.add("input", (), {}, TensorType(dtype, shape), role="input", name=name))


def par(b: Builder, name: str, shape: tuple = (), dtype: str = "f64") -> Val:
    return b.val(b.graph.add("param", (), {}, TensorType(dtype, shape), role="param", name=name))


def ops(g: Graph) -> Counter:
    return Counter(n.op for n in g.nodes.values())


def body_ops(g: Graph) -> list[str]:
    """The ops of the computing nodes in canonical order."""
    return [line.split(" = ")[1].split()[0] for line in to_text(g).splitlines()
            if line.startswith("  %") and " = " in line
            and line.split(" = ")[1].split()[0] not in ("input", "param", "state", "const")]


def fused_ops(n: Node) -> list[str]:
    """The ops of a fused node's body in execution order."""
    body = n.regions[0]
    return [body[i].op for i in body.topo_order(body.results()) if body[i].op != "arg"]


def random_feeds(g: Graph, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for n in g.nodes.values():
        if n.op == "input":
            shape = tuple(n.type.shape)
            if n.type.is_float:
                feeds[n.name] = rng.standard_normal(shape) * scale
            else:
                feeds[n.name] = rng.integers(0, 3, shape)
    return feeds


def random_vars(g: Graph, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n.name: rng.standard_normal(tuple(n.type.shape)) * 0.5
            for n in g.nodes.values() if n.op in ("param", "state")}


def run(g: Graph, feeds: dict, variables: dict | None = None) -> dict[str, np.ndarray]:
    """Outputs by name plus every variable after the step's updates (as 'var:<name>')."""
    vs = {k: np.array(v, dtype=np.float64) for k, v in (variables or {}).items()}
    plan = Plan(g, {}, NP, vs, rng=np.random.default_rng(0))
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN compares equal to NaN
        vals = plan.run(feeds)
    res = {name: np.asarray(v) for name, v in zip(plan.output_names, vals)}
    res.update({f"var:{k}": v for k, v in vs.items()})
    return res


def assert_same_values(before: Graph, after: Graph, seeds: tuple[int, ...] = (0, 1, 2),
                       scale: float = 1.0) -> None:
    assert sorted(before.outputs) == sorted(after.outputs)
    assert sorted(before.updates) == sorted(after.updates)
    for s in seeds:
        feeds = random_feeds(before, s, scale)
        variables = random_vars(before, s + 100)
        r0, r1 = run(before, feeds, variables), run(after, feeds, variables)
        assert r0.keys() == r1.keys()
        for k in r0:
            assert r0[k].shape == r1[k].shape, k
            np.testing.assert_allclose(r1[k], r0[k], rtol=1e-12, atol=1e-12, err_msg=k)


def checked(fn: Callable[[Graph], Graph], g: Graph) -> Graph:
    """Run a pass, verify its result and that it left its argument alone."""
    text = to_text(g)
    out = fn(g)
    assert to_text(g) == text, "the pass mutated its argument"
    verify_graph(out)
    return out


def mlp_graph(stabilized: bool = True) -> Graph:
    """A small MLP classifier with a cross-entropy written as log(softmax), L2 penalty,
    gradients and SGD updates, plus dead code, duplicates and constant arithmetic."""
    g, b = new()
    x, y = inp(b, "x", (4, 3)), inp(b, "y", (4,), "i64")
    inp(b, "unused", (2,))
    w1, b1, w2, b2 = par(b, "W1", (3, 5)), par(b, "b1", (5,)), par(b, "W2", (5, 3)), par(b, "b2",
                                                                                       (3,))
    h = b.emit("tanh", x @ w1 + b1)
    z = h @ w2 + b2
    probs = b.emit("softmax", z, axis=-1)
    onehot = b.emit("one_hot", y, depth=3, dtype="f64")
    nll = -b.emit("mean", b.emit("sum", onehot * b.emit("log", probs), axis=-1))
    l2 = b.emit("sum", w1 ** 2) + b.emit("sum", w2 * w2)
    decay = b.const(0.5, "f64") * b.const(0.002, "f64")  # folds to 0.001
    loss = nll + decay * l2 * 1.0
    b.emit("exp", x @ w1)  # dead
    g.outputs["loss"] = loss.id
    g.outputs["probs"] = probs.id
    g.outputs["hidden_sum"] = b.emit("sum", b.emit("tanh", x @ w1 + b1)).id  # duplicate of h
    if stabilized:
        g = stabilize(g)
        b = Builder(g)
    ws = [g.find("param", n) for n in ("W1", "b1", "W2", "b2")]
    grads = gradients(b, g.outputs["loss"], ws)
    lr = b.const(0.1, "f64")
    for w, gw in zip(ws, grads):
        g.updates[g[w].name] = (b.val(w) - lr * gw).id
    g.outputs["grad_b2"] = grads[3].id
    return g


# --------------------------------------------------------------------------- dead code


def test_dce_keeps_ancestors_of_outputs_and_updates():
    g, b = new()
    x, u = inp(b, "x", (3,)), inp(b, "unused", (3,))
    w = par(b, "w", (3,))
    par(b, "v", (3,))
    par(b, "dead_param", (3,))
    y = b.emit("exp", x)
    b.emit("log", y)  # dead
    b.emit("sin", u)  # dead, and the only use of `unused`
    g.outputs["y"] = y.id
    g.updates["w"] = (w + y).id
    g.updates["v"] = b.emit("full", shape=(3,), value=0.0, dtype="f64").id  # v itself unused
    out = checked(eliminate_dead_code, g)
    assert ops(out) == Counter({"input": 1, "param": 2, "exp": 1, "add": 1, "full": 1})
    assert {n.name for n in out.nodes.values() if n.op in ("input", "param")} == {"x", "w", "v"}
    assert_same_values(g, out)


def test_dce_removes_everything_without_roots():
    g, b = new()
    b.emit("exp", inp(b, "x"))
    assert checked(eliminate_dead_code, g).nodes == {}


# --------------------------------------------------------------------------- CSE


def test_cse_merges_equal_nodes_and_constants():
    g, b = new()
    x = inp(b, "x", (2, 3))
    c1 = b.val(g.add_const(np.array(2.0), TensorType("f64", ())))
    c2 = b.val(g.add_const(np.array(2.0), TensorType("f64", ())))
    c3 = b.val(g.add_const(np.array(-0.0), TensorType("f64", ())))
    c4 = b.val(g.add_const(np.array(0.0), TensorType("f64", ())))
    e1 = b.emit("exp", x)
    e2 = b.emit("exp", x, name="e")
    s1 = b.emit("sum", e1 * c1, axis=(0,))
    s2 = b.emit("sum", e2 * c2, axis=[0])  # list vs tuple attrs: the same reduction
    s3 = b.emit("sum", e2 * c2, axis=(1,))  # different attrs: kept
    m1 = b.emit("mean", e1 + c3, axis=0)
    m2 = b.emit("mean", e1 + c4, axis=0)  # -0.0 and 0.0 are different constants
    g.outputs.update(s1=s1.id, s2=s2.id, s3=s3.id, m1=m1.id, m2=m2.id)
    out = checked(merge_common_subexpressions, g)
    assert ops(out) == Counter({"input": 1, "const": 3, "exp": 1, "mul": 1, "sum": 2, "add": 2,
                                "mean": 2})
    assert out.outputs["s1"] == out.outputs["s2"] != out.outputs["s3"]
    assert out[out.outputs["s1"]].inputs[0] == out[out.outputs["s3"]].inputs[0]
    (exp_id,) = [i for i, n in out.nodes.items() if n.op == "exp"]
    assert exp_id == e1.id and out[exp_id].name == "e"  # smaller id survives, adopts the name
    assert_same_values(g, out)


def test_cse_never_merges_random_ops_or_leaves():
    g, b = new()
    a, a2 = inp(b, "a", (3,)), inp(b, "a2", (3,))
    r1 = b.emit("random_normal", shape=(3,), dtype="f64")
    r2 = b.emit("random_normal", shape=(3,), dtype="f64")
    g.outputs["d"] = (r1 - r2).id
    g.outputs["s"] = (a + a2).id
    out = checked(merge_common_subexpressions, g)
    assert ops(out)["random_normal"] == 2 and ops(out)["input"] == 2
    assert np.any(run(out, random_feeds(out))["d"] != 0.0)


def test_cse_merges_chains_and_keeps_outputs():
    g, b = new()
    x = inp(b, "x", (4,))
    chains = [b.emit("tanh", b.emit("exp", x) * 3.0) for _ in range(3)]
    for k, c in enumerate(chains):
        g.outputs[f"o{k}"] = c.id
    out = checked(merge_common_subexpressions, g)
    assert body_ops(out) == ["exp", "mul", "tanh"]
    assert len(set(out.outputs.values())) == 1
    assert_same_values(g, out)


# --------------------------------------------------------------------------- folding


def test_fold_constants_structure_and_values():
    g, b = new()
    x = inp(b, "x", (3,))
    k = b.emit("exp", b.const([0.0, 1.0, 2.0], "f64")) * 2.0 + 1.0
    t = b.emit("sum", b.emit("reshape", b.const(np.arange(6.0), "f64"), shape=(2, 3)), axis=0)
    g.outputs["y"] = (x * k + t).id
    out = checked(fold_constants, g)
    assert body_ops(out) == ["mul", "add"]
    assert ops(out)["const"] == 2
    np.testing.assert_allclose(out.consts[out[out.outputs["y"]].inputs[1]], [3.0, 5.0, 7.0])
    assert_same_values(g, out)
    assert to_text(out) == to_text(checked(fold_constants, out))


def test_fold_skips_random_symbolic_and_inflating_nodes():
    g, b = new()
    r = b.emit("random_uniform", shape=(3,), dtype="f64")
    sym = b.emit("full", shape=("B",), value=1.0, dtype="f64")
    big = b.emit("broadcast_to", b.const(1.0, "f64"), shape=(100, 100))
    small = b.emit("full", shape=(2,), value=3.0, dtype="f64")
    g.outputs.update(r=(r * 2.0).id, sym=sym.id, big=big.id, small=small.id)
    out = checked(fold_constants, g)
    assert ops(out)["random_uniform"] == 1 and ops(out)["mul"] == 1
    assert ops(out)["full"] == 1 and ops(out)["broadcast_to"] == 1
    assert out[out.outputs["small"]].op == "const"


def test_fold_keeps_name_and_grad_role():
    g, b = new()
    with b.context(role="grad"):
        v = b.emit("neg", b.const(2.0, "f64"), name="minus_two")
    g.outputs["v"] = v.id
    out = checked(fold_constants, g)
    n = out[out.outputs["v"]]
    assert (n.op, n.role, n.name, out.consts[n.id].item()) == ("const", "grad", "minus_two", -2.0)


# --------------------------------------------------------------------------- simplify

RowBuilder = Callable[[Builder, Val], Val]

# (description, input shape, graph builder, expected body ops after simplify)
SIMPLIFY_CASES: list[tuple[str, tuple, RowBuilder, list[str]]] = [
    ("log(1+exp(x))", (3,), lambda b, x: b.emit("log", 1.0 + b.emit("exp", x)), ["softplus"]),
    ("log(exp(x)+1)", (3,), lambda b, x: b.emit("log", b.emit("exp", x) + 1.0), ["softplus"]),
    ("log1p(exp(x))", (3,), lambda b, x: b.emit("log1p", b.emit("exp", x)), ["softplus"]),
    ("log(softmax(x))", (2, 3),
     lambda b, x: b.emit("log", b.emit("softmax", x, axis=0, temperature=2.0)), ["log_softmax"]),
    ("log(sigmoid(x))", (3,), lambda b, x: b.emit("log", b.emit("sigmoid", x)),
     ["neg", "softplus", "neg"]),
    ("log(1-sigmoid(x))", (3,), lambda b, x: b.emit("log", 1.0 - b.emit("sigmoid", x)),
     ["softplus", "neg"]),
    ("log(sum(exp(x)))", (2, 3),
     lambda b, x: b.emit("log", b.emit("sum", b.emit("exp", x), axis=1, keepdims=True)),
     ["logsumexp"]),
    ("exp(x)/sum(exp(x))", (2, 3),
     lambda b, x: b.emit("exp", x) / b.emit("sum", b.emit("exp", x), axis=-1, keepdims=True),
     ["softmax"]),
    ("1/(1+exp(-x))", (3,), lambda b, x: 1.0 / (1.0 + b.emit("exp", -x)), ["sigmoid"]),
    ("x*1", (3,), lambda b, x: b.emit("tanh", x * 1.0), ["tanh"]),
    ("1*x", (3,), lambda b, x: b.emit("tanh", 1.0 * x), ["tanh"]),
    ("x+0", (3,), lambda b, x: b.emit("tanh", x + 0.0), ["tanh"]),
    ("0+x", (3,), lambda b, x: b.emit("tanh", 0.0 + x), ["tanh"]),
    ("x-0", (3,), lambda b, x: b.emit("tanh", x - 0.0), ["tanh"]),
    ("0-x", (3,), lambda b, x: 0.0 - x, ["neg"]),
    ("x/1", (3,), lambda b, x: b.emit("tanh", x / 1.0), ["tanh"]),
    ("x**1", (3,), lambda b, x: b.emit("tanh", x ** 1.0), ["tanh"]),
    ("x**2", (3,), lambda b, x: x ** 2.0, ["square"]),
    ("x*ones", (3,), lambda b, x: b.emit("tanh", x * b.const([1.0, 1.0, 1.0], "f64")),
     ["tanh"]),
    ("neg(neg(x))", (3,), lambda b, x: b.emit("tanh", b.emit("neg", -x)), ["tanh"]),
    ("x+(-y)", (3,), lambda b, x: x + -b.emit("exp", x), ["exp", "sub"]),
    ("x-(-y)", (3,), lambda b, x: x - -b.emit("exp", x), ["exp", "add"]),
    ("cast same dtype", (3,), lambda b, x: b.emit("tanh", b.emit("cast", x, dtype="f64")),
     ["tanh"]),
    ("sum_to same shape", (2, 3),
     lambda b, x: b.emit("tanh", b.emit("sum_to", x, shape=(2, 3))), ["tanh"]),
    ("reshape same shape", (2, 3),
     lambda b, x: b.emit("tanh", b.emit("reshape", x, shape=(2, -1))), ["tanh"]),
    ("broadcast_to same shape", (2, 3),
     lambda b, x: b.emit("tanh", b.emit("broadcast_to", x, shape=(2, 3))), ["tanh"]),
    ("reshape chain", (2, 3),
     lambda b, x: b.emit("reshape", b.emit("reshape", x, shape=(3, 2)), shape=(6,)),
     ["reshape"]),
    ("broadcast chain", (3,),
     lambda b, x: b.emit("broadcast_to", b.emit("broadcast_to", x, shape=(2, 3)),
                         shape=(4, 2, 3)), ["broadcast_to"]),
    ("transpose twice = identity", (2, 2, 3),
     lambda b, x: b.emit("tanh", b.emit("transpose", b.emit("transpose", x, axes=(1, 2, 0)),
                                       axes=(2, 0, 1))), ["tanh"]),
    ("transpose of reversed", (2, 3),
     lambda b, x: b.emit("tanh", b.emit("transpose", b.emit("transpose", x))), ["tanh"]),
    ("transpose twice composes", (2, 3, 4),
     lambda b, x: b.emit("transpose", b.emit("transpose", x, axes=(1, 0, 2)), axes=(0, 2, 1)),
     ["transpose"]),
    ("stop_gradient kept", (3,), lambda b, x: b.emit("stop_gradient", x) * 1.0,
     ["stop_gradient"]),
    # must NOT be rewritten:
    ("x*1 broadcasting x", (), lambda b, x: x * b.const([1.0, 1.0], "f64"), ["mul"]),
    ("x+0 broadcasting x", (3,), lambda b, x: x + b.const(np.zeros((2, 3)), "f64"), ["add"]),
    ("exp(log(x)) unsafe", (3,), lambda b, x: b.emit("exp", b.emit("log", x)), ["log", "exp"]),
    ("x*0 unsafe", (3,), lambda b, x: x * 0.0, ["mul"]),
    ("sum_to reducing", (2, 3), lambda b, x: b.emit("sum_to", x, shape=(3,)), ["sum_to"]),
    ("transpose of square", (3, 3),
     lambda b, x: b.emit("transpose", b.emit("transpose", x, axes=(1, 0)), axes=(0, 1)),
     ["transpose"]),
    ("softplus of int", (3,), lambda b, x: b.emit("log", 1.0 + b.emit("exp", b.emit(
        "cast", x, dtype="i64"))), ["cast", "exp", "add", "log"]),
]


@pytest.mark.parametrize("desc, shape, build, expected", SIMPLIFY_CASES,
                         ids=[c[0] for c in SIMPLIFY_CASES])
def test_simplify_rows(desc, shape, build, expected):
    g, b = new()
    x = inp(b, "x", shape)
    y = build(b, x)
    g.outputs["y"] = y.id
    out = checked(simplify, g)
    assert body_ops(out) == expected, to_text(out)
    assert out[out.outputs["y"]].type == g[g.outputs["y"]].type
    assert_same_values(g, out)  # NaN where log(x < 0) on both sides


def test_simplify_never_changes_dtype():
    g, b = new()
    x = inp(b, "x", (3,), "i64")
    g.outputs["y"] = (x * 1.0).id  # float result from an int tensor: not x
    g.outputs["z"] = (x * b.const(1, "i64")).id  # same type: x
    out = checked(simplify, g)
    assert out[out.outputs["y"]].op == "mul"
    assert out.outputs["z"] == x.id


def test_rewritten_node_keeps_identity():
    g, b = new()
    x = inp(b, "x", (3,))
    with b.context(role="grad", of=x.id):
        y = b.emit("log", b.emit("sigmoid", x), name="logsig")
    g.outputs["y"] = y.id
    out = checked(simplify, g)
    n = out[out.outputs["y"]]
    assert (n.id, n.op, n.role, n.name, n.of) == (y.id, "neg", "grad", "logsig", x.id)
    assert all(m.role == "grad" for m in out.nodes.values() if m.op in ("softplus",))


def test_shared_interior_nodes_survive():
    g, b = new()
    x = inp(b, "x", (2, 3))
    p = b.emit("softmax", x)
    g.outputs["p"] = p.id
    g.outputs["logp"] = b.emit("log", p).id
    out = checked(simplify, g)
    assert sorted(body_ops(out)) == ["log_softmax", "softmax"]
    assert_same_values(g, out)


def test_simplify_reaches_fixed_point_through_nested_rows():
    g, b = new()
    x = inp(b, "x", (3,))
    y = b.emit("log", 1.0 + b.emit("exp", b.emit("neg", -(x * 1.0)) + 0.0))
    g.outputs["y"] = y.id
    out, stats = rewrite(g, SIMPLIFY_RULES)
    verify_graph(out)
    assert body_ops(out) == ["softplus"] and stats.stopped is None
    assert stats.rewrites == 4
    assert to_text(simplify(out)) == to_text(out)
    assert_same_values(g, out)


# --------------------------------------------------------------------------- stabilization


def sigma(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x)) if x >= 0 else np.exp(x) / (1.0 + np.exp(x))


@pytest.mark.parametrize("form", ["1+exp", "exp+1"])
def test_stabilized_softplus_and_gradient_are_finite(form):
    g, b = new()
    x = inp(b, "x")
    e = b.emit("exp", x)
    y = b.emit("log", 1.0 + e if form == "1+exp" else e + 1.0)
    g.outputs["y"] = y.id
    with np.errstate(over="ignore"):
        assert np.isinf(run(g, {"x": 1000.0})["y"])  # the naive form overflows
    s = checked(stabilize, g)
    assert body_ops(s) == ["softplus"]
    b2 = Builder(s)
    (gx,) = gradients(b2, s.outputs["y"], [x.id])
    s.outputs["dy"] = gx.id
    verify_graph(s)
    for v in (1000.0, -1000.0, 0.3, -7.0):
        r = run(s, {"x": v})
        assert np.isfinite(r["y"]) and np.isfinite(r["dy"])
        np.testing.assert_allclose(r["dy"], sigma(v), rtol=1e-15)
        np.testing.assert_allclose(r["y"], max(v, 0.0) + np.log1p(np.exp(-abs(v))), rtol=1e-15)
    opt, _, _ = run_pipeline(s, verify=True)
    np.testing.assert_allclose(run(opt, {"x": 1000.0})["dy"], 1.0)


def test_stabilized_log_softmax_is_finite_at_large_logits():
    g, b = new()
    x = inp(b, "x", (2, 3))
    y = b.emit("log", b.emit("softmax", x, axis=-1))
    g.outputs["y"] = y.id
    g.outputs["loss"] = (-b.emit("sum", y)).id
    z = np.array([[1000.0, 0.0, -1000.0], [3.0, 2.0, 1.0]])
    with np.errstate(divide="ignore"):
        assert np.isinf(run(g, {"x": z})["y"]).any()
    s = checked(stabilize, g)
    assert ops(s)["log_softmax"] == 1 and ops(s)["softmax"] == 0
    (gx,) = gradients(Builder(s), s.outputs["loss"], [x.id])
    s.outputs["dx"] = gx.id
    r = run(s, {"x": z})
    assert np.isfinite(r["y"]).all() and np.isfinite(r["dx"]).all()
    np.testing.assert_allclose(r["y"][0], [0.0, -1000.0, -2000.0])
    ref = z[1] - np.log(np.exp(z[1]).sum())
    np.testing.assert_allclose(r["y"][1], ref, rtol=1e-14)
    # d(-Σ log_softmax)/dx = 3 softmax(x) - 1 per row
    p = np.exp(r["y"])
    np.testing.assert_allclose(r["dx"], 3.0 * p - 1.0, atol=1e-14)


def test_stabilized_log_sigmoid_is_finite():
    g, b = new()
    x = inp(b, "x")
    y = b.emit("log", b.emit("sigmoid", x))
    g.outputs["y"] = y.id
    s = checked(stabilize, g)
    (gx,) = gradients(Builder(s), s.outputs["y"], [x.id])
    s.outputs["dy"] = gx.id
    r = run(s, {"x": -1000.0})
    np.testing.assert_allclose([r["y"], r["dy"]], [-1000.0, 1.0])


def test_stabilize_runs_only_stabilizing_rows():
    g, b = new()
    x = inp(b, "x", (3,))
    g.outputs["y"] = (b.emit("log", 1.0 + b.emit("exp", x)) * 1.0).id
    s = checked(stabilize, g)
    assert body_ops(s) == ["softplus", "mul"]
    assert body_ops(checked(simplify, s)) == ["softplus"]


def test_rule_tables_have_no_overlap_and_are_well_formed():
    names = [str(r) for r in SIMPLIFY_RULES]
    assert names == [str(r) for r in STABILIZING_RULES + ALGEBRAIC_RULES + CONTRACTION_RULES
                     + FUSION_RULES]
    assert len(set(names)) == len(names)
    for r in SIMPLIFY_RULES:
        check_rule(r)
    with pytest.raises(ValueError, match="not bound"):
        check_rule(Rule(("exp", Var("x")), ("log", Var("y"))))
    with pytest.raises(ValueError, match="root"):
        check_rule(Rule(Var("x"), ("neg", ("neg", Var("x")))))
    with pytest.raises(ValueError, match="both a Var and an Attr"):
        check_rule(Rule(("sum", Var("a"), {"axis": Attr("a")}), Var("a")))
    with pytest.raises(ValueError, match="unknown op"):
        check_rule(Rule(("nope", Var("x")), Var("x")))


def _gated(n_gates: int, acts: tuple[str, ...]) -> Graph:
    """z [3, 2 n] split into n gates along its last axis, activation acts[k] on gate k, then
    an LSTM-like state update from the first gates; its output and gradients as outputs."""
    g, b = new()
    z, c = inp(b, "z", (3, 2 * n_gates)), inp(b, "c", (3, 2))
    gates = [b.emit(a, b.emit("getitem", z, index=(("s", None, None, None),  # z[:, :2] first
                                                   ("s", 2 * k or None, 2 * k + 2, None))))
             for k, a in enumerate(acts)]
    c2 = gates[1] * c + gates[0] * gates[2]
    h = gates[-1] * b.emit("tanh", c2)
    y = b.emit("sum", h * h + c2)
    g.outputs.update(h=h.id, c=c2.id)
    for name, gr in zip(("dz", "dc"), gradients(b, y.id, [z.id, c.id])):
        g.outputs[name] = gr.id
    return g


def test_lstm_gates_rule_fuses_the_four_gate_activations():
    # sigmoid / tanh of the four quarters of z -> slices of one lstm_gates(z); the gradient
    # (built before the rewrite, as in the pipeline) reads the same slices
    g = _gated(4, ("sigmoid", "sigmoid", "tanh", "sigmoid"))
    out = checked(simplify, g)
    assert ops(out)["lstm_gates"] == 1 and ops(out)["sigmoid"] == 0
    assert ops(out)["tanh"] == 1  # tanh(c') is no gate
    assert_same_values(g, out, scale=3.0)


@pytest.mark.parametrize("n_gates,acts", [
    (3, ("sigmoid", "sigmoid", "tanh")),                 # a GRU's split: three gates
    (4, ("sigmoid", "sigmoid", "sigmoid", "sigmoid")),   # a sigmoid on gate g
])
def test_lstm_gates_rule_needs_four_gates_with_tanh_on_g(n_gates: int, acts: tuple) -> None:
    g = _gated(n_gates, acts)
    out = checked(simplify, g)
    fused = ops(out)["lstm_gates"]
    if n_gates == 3:
        assert fused == 0 and ops(out)["sigmoid"] == 2
    else:  # i, f, o are gates of lstm_gates; sigmoid on g stays
        assert fused == 1 and ops(out)["sigmoid"] == 1
    assert_same_values(g, out, scale=3.0)


# --------------------------------------------------------------------------- engine limits


def test_growth_limit_stops_an_expanding_rule_set():
    x_ = Var("x")
    grow = [Rule(("neg", x_), ("neg", ("neg", ("neg", x_))))]  # -x -> ---x, forever
    g, b = new()
    x = inp(b, "x", (3,))
    g.outputs["y"] = (-x).id
    out, stats = rewrite(g, grow, max_iterations=10_000, max_new_nodes=50)
    verify_graph(out)
    assert stats.stopped == "growth"
    assert 45 <= stats.new_nodes <= 50 and len(out.nodes) <= len(g.nodes) + 50
    assert_same_values(g, out)


def test_iteration_limit_stops_a_cycling_rule_set():
    x_, y_ = Var("x"), Var("y")
    flip = [Rule(("mul", x_, y_), ("mul", y_, x_))]  # commutes back and forth forever
    g, b = new()
    x, y = inp(b, "x", (3,)), inp(b, "y", (3,))
    g.outputs["z"] = (x * y).id
    out, stats = rewrite(g, flip, max_iterations=7)
    verify_graph(out)
    assert stats.stopped == "iterations" and stats.iterations == 7
    assert stats.rewrites == 7 and stats.new_nodes == 0
    assert_same_values(g, out)


def test_attr_capture_must_agree_and_const_matches_full():
    a = Attr("a")
    same_axis = [Rule(("sum", ("sum", Var("x"), {"axis": a, "keepdims": True}),
                       {"axis": a, "keepdims": True}),
                      ("sum", Var("x"), {"axis": a, "keepdims": True}))]
    g, b = new()
    x = inp(b, "x", (2, 3))
    s0 = b.emit("sum", b.emit("sum", x, axis=0, keepdims=True), axis=0, keepdims=True)
    s1 = b.emit("sum", b.emit("sum", x, axis=1, keepdims=True), axis=0, keepdims=True)
    g.outputs.update(s0=s0.id, s1=s1.id)
    out, stats = rewrite(g, same_axis)
    assert stats.rewrites == 1 and ops(out)["sum"] == 3
    assert_same_values(g, out)

    g, b = new()
    x = inp(b, "x", (3,))
    g.outputs["y"] = (x * b.emit("full", shape=(3,), value=1.0, dtype="f64")).id
    out, _ = rewrite(g, [Rule(("mul", Var("x"), Const(1.0)), Var("x"))])
    assert out.outputs["y"] == x.id


# --------------------------------------------------------------------------- fusion


def test_fuse_elementwise_structure_and_values():
    g, b = new()
    x, w = inp(b, "x", (4, 3)), par(b, "w", (3, 2))
    h = b.emit("tanh", x * 2.0 + 1.0)  # mul, add, tanh: one group
    m = h @ b.emit("transpose", b.emit("sigmoid", b.emit("transpose", w)))  # barrier
    shared = b.emit("exp", m)  # two users, both in y's group: fused into it
    y = b.emit("relu", shared - 1.0) * b.emit("sqrt", shared + 2.0)
    g.outputs["y"] = y.id
    g.outputs["m"] = m.id
    out = checked(fuse_elementwise, g)
    assert body_ops(out) == [FUSED, "transpose", "sigmoid", "transpose", "matmul", FUSED]
    bodies = [fused_ops(n) for _, n in sorted(out.nodes.items()) if n.op == FUSED]
    assert bodies == [["mul", "add", "tanh"], ["exp", "sub", "relu", "add", "sqrt", "mul"]]
    assert out[out.outputs["y"]].id == y.id
    assert_same_values(g, out)
    assert to_text(checked(fuse_elementwise, out)) == to_text(out)

    g.outputs["e"] = shared.id  # an output is computed by its own node
    out = checked(fuse_elementwise, g)
    assert body_ops(out) == [FUSED, "transpose", "sigmoid", "transpose", "matmul", "exp", FUSED]
    assert_same_values(g, out)


def test_fuse_inlines_fused_members():
    g, b = new()
    x = inp(b, "x", (3,))
    y = b.emit("exp", b.emit("tanh", x) * 3.0)
    g.outputs["y"] = y.id
    first = fuse_elementwise(g)
    b1 = Builder(first)
    first.outputs["y"] = b1.emit("log", b1.val(first.outputs["y"]) + 1.0).id
    second = checked(fuse_elementwise, first)
    (n,) = [n for n in second.nodes.values() if n.op == FUSED]
    assert fused_ops(n) == ["tanh", "mul", "exp", "add", "log"]
    assert_same_values(first, second)


def test_fuse_respects_outputs_and_random_ops():
    g, b = new()
    x = inp(b, "x", (3,))
    a = b.emit("exp", x)
    r = b.emit("random_uniform", shape=(3,), dtype="f64")
    g.outputs["a"] = a.id
    g.outputs["y"] = b.emit("tanh", a * r).id
    out = checked(fuse_elementwise, g)
    assert ops(out)["exp"] == 1 and ops(out)["random_uniform"] == 1 and ops(out)[FUSED] == 1


# --------------------------------------------------------------------------- pipeline


def test_pipeline_names_and_order():
    assert [n for n, _ in PIPELINE] == ["stabilize", "fold_constants",
                                        "merge_common_subexpressions", "simplify",
                                        "hoist_loop_invariants", "restructure_loops",
                                        "concat_padded_slices", "eliminate_dead_code",
                                        "fuse_elementwise"]
    assert set(PASSES) == {n for n, _ in PIPELINE}


def test_pipeline_on_mlp_preserves_values_and_is_idempotent():
    g = mlp_graph()
    verify_graph(g)
    text = to_text(g)
    once, ran, _ = run_pipeline(g, verify=True)
    assert to_text(g) == text
    assert ran == [n for n, _ in PIPELINE]
    assert len(once.nodes) < len(g.nodes) // 2
    assert_same_values(g, once)
    twice, _, _ = run_pipeline(once, verify=True)
    assert to_text(twice) == to_text(once)
    for name, fn in PIPELINE:  # every pass alone is a fixed point on the optimized graph
        assert to_text(fn(once)) == to_text(once), name
    assert {n.name for n in once.nodes.values() if n.op == "input"} == {"x", "y"}


def test_pipeline_each_pass_preserves_values_on_mlp():
    g = mlp_graph()
    cur = g
    for _, fn in PIPELINE:
        nxt = checked(fn, cur)
        assert_same_values(cur, nxt, seeds=(3,))
        cur = nxt
    assert ops(cur)["log_softmax"] == 1 and ops(cur)["log"] == 0
    assert ops(cur)["input"] == 2


def test_unstabilized_mlp_pipeline_also_preserves_values():
    g = mlp_graph(stabilized=False)
    out, _, _ = run_pipeline(g, verify=True)
    assert_same_values(g, out)


@pytest.mark.parametrize("name", [n for n, _ in PIPELINE])
def test_dump_after_each_pass(name):
    g = mlp_graph()
    out, ran, dump = run_pipeline(g, dump_after=name)
    k = ran.index(name) + 1
    assert dump is not None
    assert dump.splitlines()[1] == "# passes: " + ", ".join(ran[:k])
    partial, _, _ = run_pipeline(g, passes=ran[:k])
    assert dump == to_text(partial, passes=ran[:k])


def test_run_pipeline_errors_and_custom_passes():
    g = mlp_graph()
    with pytest.raises(ValueError, match="known passes: stabilize, fold_constants"):
        run_pipeline(g, passes=["simplify", "nonsense"])
    with pytest.raises(ValueError, match="nonsense.*passes that run: simplify"):
        run_pipeline(g, passes=["simplify"], dump_after="nonsense")
    out, ran, dump = run_pipeline(g, passes=["eliminate_dead_code", ("mine", simplify)],
                                  dump_after="mine")
    assert ran == ["eliminate_dead_code", "mine"] and dump is not None
    same, ran, dump = run_pipeline(g, passes=[])
    assert same is not g and to_text(same) == to_text(g) and ran == [] and dump is None

    def broken(graph: Graph) -> Graph:
        h = graph.copy()
        h.outputs["bad"] = 10_000
        return h

    with pytest.raises(VerifyError, match="(?s)after pass .broken.*missing node"):
        run_pipeline(g, passes=["simplify", ("broken", broken)], verify=True)


def test_optimized_graph_text_round_trips():
    once, ran, _ = run_pipeline(mlp_graph())
    text = to_text(once, passes=ran)
    parsed = parse_text(text)
    verify_graph(parsed)
    assert to_text(parsed, passes=ran) == text
    feeds, variables = random_feeds(once), random_vars(once)
    r0, r1 = run(once, feeds, variables), run(parsed, feeds, variables)
    for k in r0:
        np.testing.assert_array_equal(r1[k], r0[k])


# --------------------------------------------------------------------------- verifier


def test_verify_graph_reports_broken_invariants():
    g, b = new()
    x = inp(b, "x", (3,))
    y = b.emit("exp", x)
    g.outputs["y"] = y.id
    verify_graph(g)
    bad = g.copy()
    bad.replace_node(y.id, type=TensorType("f64", (4,)))
    with pytest.raises(VerifyError, match=r"stores type f64\[4\] but its inputs give f64\[3\]"):
        verify_graph(bad)
    bad = g.copy()
    bad.outputs["z"] = 99
    with pytest.raises(VerifyError, match="output 'z' names missing node"):
        verify_graph(bad)
    bad = g.copy()
    z = bad.add("neg", (y.id,), {}, TensorType("f64", (3,)))
    bad.replace_node(y.id, inputs=(z,))
    with pytest.raises(VerifyError, match="cycle"):
        verify_graph(bad)
    bad = g.copy()
    bad.add("add", (y.id,), {}, TensorType("f64", (3,)))
    with pytest.raises(VerifyError, match="expected 2"):
        verify_graph(bad)
    bad = g.copy()
    w = bad.add("param", (), {}, TensorType("f64", (2,)), role="param", name="w")
    bad.updates["w"] = y.id
    with pytest.raises(VerifyError, match="update 'w' has type"):
        verify_graph(bad)
    assert w in bad.nodes


# --------------------------------------------------------------------------- graph queries


def test_users_index_and_orders_agree_with_networkx_after_every_pass():
    import networkx as nx

    g = mlp_graph()
    for name in ("stabilize", "fold_constants", "merge_common_subexpressions", "simplify",
                 "eliminate_dead_code", "fuse_elementwise"):
        g, _, _ = run_pipeline(g, passes=[name])
        users: dict[int, set[int]] = {i: set() for i in g.nodes}
        for i, n in g.nodes.items():
            for j in n.inputs:
                users[j].add(i)
        assert {i: set(g.users(i)) for i in g.nodes} == users, name
        ng = g.to_networkx()
        assert isinstance(ng, nx.DiGraph) and set(ng) == set(g.nodes)
        assert g.topo_order() == list(nx.lexicographical_topological_sort(ng))
        for t in g.roots():
            assert g.ancestors(t) == nx.ancestors(ng, t)
            assert g.descendants(t) == nx.descendants(ng, t)
            sub = ng.subgraph(nx.ancestors(ng, t) | {t})
            assert g.topo_order([t]) == list(nx.lexicographical_topological_sort(sub))


def test_topological_orders_follow_every_change_of_the_graph():
    # orders are kept per targets until a node is added, replaced or removed
    import networkx as nx

    g = mlp_graph()
    order = g.topo_order()
    order.append(-1)  # a caller's list is its own
    assert g.topo_order()[-1] != -1
    root = g.roots()[0]
    n = g[root]
    late = g.add("neg", [n.inputs[0]], {}, g[n.inputs[0]].type)
    assert g.topo_order()[-1] == late
    g.replace_node(root, inputs=(late, *n.inputs[1:]))
    assert g.topo_order([root]) == list(nx.lexicographical_topological_sort(
        g.to_networkx().subgraph(g.ancestors(root) | {root})))
    g.replace_node(root, inputs=n.inputs)
    g.remove(late)
    assert late not in g.topo_order() and g.topo_order() == order[:-1]


def test_to_networkx_keeps_attributes_and_input_positions():
    g, b = new()
    x = inp(b, "x", (3,))
    y = b.emit("mul", x, x)
    g.outputs["y"] = y.id
    ng = g.to_networkx()
    assert ng.nodes[y.id]["op"] == "mul" and ng.nodes[y.id]["type"] == "f64[3]"
    assert ng.edges[x.id, y.id]["positions"] == [0, 1]
    h = g.copy()
    h.redirect(x.id, h.add("input", (), {"name": "z"}, TensorType("f64", (3,)), role="input",
                           name="z"))
    assert h.users(x.id) == [] and g.users(x.id) == [y.id]
    h.remove(x.id)
    assert x.id not in h.to_networkx() and x.id in g.to_networkx()
    with pytest.raises(IRError, match="still has users"):
        g.remove(x.id)
