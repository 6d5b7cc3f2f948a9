"""The sequence primitives beyond their rows in `tests/test_ops.py`: the gather's gradient
(`take_grad`, by bincount or a one-hot matmul, never `ufunc.at`) against `np.add.at`;
out-of-range ids as clear errors (from the data at compile time, else when the step runs);
`masked_softmax` on rows with nothing kept (zeros and a zero gradient, never NaN);
`causal_mask`; and `random_categorical`/`categorical` by statistics (frequencies, top_k,
temperature, seeds) and in a procedure.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
from helpers_numeric import Runner, add_input, new_graph, rng_for
from test_conv_norm import GUARDED, _NoAtUfunc

import dsl
from dsl.errors import DataErr
from runtime.autodiff import gradients
from runtime.errors import UserError
from runtime.ops import shape_ops
from runtime.ops.shape_ops import ONE_HOT_MAX_SIZE, IndexRangeError
from runtime.plan import Plan

# --------------------------------------------------------------------------- take_grad


def _add_at(g: np.ndarray, idx: np.ndarray, axis: int, size: int) -> np.ndarray:
    out = np.zeros(g.shape[:axis] + (size,) + g.shape[axis + idx.ndim:], dtype=g.dtype)
    moved = np.moveaxis(out, axis, 0)
    gm = np.moveaxis(g.reshape(g.shape[:axis] + (-1,) + g.shape[axis + idx.ndim:]), axis, 0)
    np.add.at(moved, idx.reshape(-1), gm)
    return out


CASES = [  # (g shape before the index, index shape, g shape after it, axis, size)
    ((), (64, 64), (16,), 0, 10000),   # an embedding's gradient, bincount
    ((), (64, 64), (16,), 0, 40),      # a small vocabulary, one-hot matmul
    ((), (64, 64), (16,), 0, 1000),    # fewer rows than ids: float32 sorts and segments
    ((3,), (40, 5), (4,), 1, 100),
    ((), (7,), (), 0, 100),            # a vector table
    ((3,), (5, 2), (4,), 1, 90),       # x[:, t] with t: [5, 2]
    ((3,), (5, 2), (4,), 1, 6),
    ((2, 3), (), (), 2, 80),           # a scalar index
    ((), (0,), (8,), 0, 70),           # no ids
    ((), (0,), (8,), 0, 7),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pre, ids, post, axis, size", CASES,
                         ids=[f"{c[1]}x{c[4]}@{c[3]}" for c in CASES])
def test_take_grad_equals_add_at(pre, ids, post, axis, size, dtype) -> None:
    rng = rng_for("take_grad", ids, size, axis)
    idx = rng.integers(0, size, ids)
    g = rng.standard_normal(pre + ids + post).astype(dtype)
    got = shape_ops._take_grad_fwd(np, g, idx, axis=axis, size=size)
    want = _add_at(g, idx, axis, size)
    assert got.dtype == g.dtype and got.shape == want.shape
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_every_take_grad_path_is_exercised() -> None:
    one_hot = [c for c in CASES if c[4] <= ONE_HOT_MAX_SIZE]
    segments = [c for c in CASES if ONE_HOT_MAX_SIZE < c[4] < np.prod(c[1])]
    bincount = [c for c in CASES if c[4] > max(ONE_HOT_MAX_SIZE, np.prod(c[1]))]
    assert one_hot and segments and bincount  # (float64 takes bincount for `segments`)


def test_take_and_its_gradients_never_scatter_with_ufunc_at(monkeypatch) -> None:
    """First and second order gradients of a gather on a NumPy whose add.at raises, for a
    small table (one-hot matmul) and a larger one (float32: segment sums; float64:
    bincount)."""
    assert not re.search(r"\.\s*at\s*\(", inspect.getsource(shape_ops))
    monkeypatch.setattr(np, "add", _NoAtUfunc(np.add))
    done = []
    for size, dt in [(ONE_HOT_MAX_SIZE // 2, "f64"), (ONE_HOT_MAX_SIZE * 3, "f64"),
                     (ONE_HOT_MAX_SIZE * 3, "f32")]:
        _, b = new_graph()
        x = add_input(b, "x", dt, (size, 3))
        i = add_input(b, "i", "i64", (16, 16))
        out = b.emit("take", x, i)
        y = b.emit("sum", out * out)
        (gx,) = gradients(b, y.id, [x.id])
        (hx,) = gradients(b, b.emit("sum", gx * gx).id, [x.id])
        b.graph.outputs.update(g=gx.id, h=hx.id)
        rng = rng_for("no_at", size)
        feeds = {"x": rng.standard_normal((size, 3)).astype("float32" if dt == "f32" else
                                                           "float64"),
                 "i": rng.integers(0, size, (16, 16))}
        g, h = Plan(b.graph, {}, GUARDED, {}, outputs=["g", "h"]).run(feeds)
        assert np.all(np.isfinite(h))
        done.append((g, feeds, size))
    monkeypatch.undo()
    for g, feeds, size in done:
        want = _add_at(2 * feeds["x"][feeds["i"]], feeds["i"], 0, size)
        np.testing.assert_allclose(g, want, rtol=1e-5 if g.dtype == np.float32 else 1e-12)


# --------------------------------------------------------------------------- ids out of range


def _take_runner() -> Runner:
    _, b = new_graph()
    x = add_input(b, "x", "f64", (10, 3))
    i = add_input(b, "i", "i64", (2, 2))
    b.graph.outputs["out"] = b.emit("take", x, i).id
    return Runner(b.graph, ["out"])


@pytest.mark.parametrize("bad, says", [(10, "index 10 is out of range"),
                                       (-1, "index -1 is out of range")])
def test_take_out_of_range_is_a_user_error_not_an_index_error(bad: int, says: str) -> None:
    run = _take_runner()
    ids = np.array([[0, 3], [bad, 9]])
    with pytest.raises(IndexRangeError, match=says) as e:
        run({"x": np.zeros((10, 3)), "i": ids})
    assert isinstance(e.value, UserError) and not isinstance(e.value, IndexError)
    assert "axis 0 of size 10" in str(e.value) and "valid: 0 to 9" in str(e.value)
    np.testing.assert_array_equal(run({"x": np.eye(10, 3), "i": np.array([[0, 1], [2, 9]])})
                                  ["out"][:, :, 0], [[1, 0], [0, 0]])


def test_out_of_range_error_names_the_spec_line() -> None:
    text = "model g\ninput tbl: f32[5, 3]\ninput t: i64[B]\noutput y = tbl[t]\n"
    m = dsl.compile(text, file="g.dl")
    np.testing.assert_array_equal(m(tbl=np.eye(5, 3), t=np.array([2, 0]))["y"][:, 0], [0, 1])
    with pytest.raises(IndexRangeError, match=r"index 7 is out of range .* at g\.dl:4:\d+$"):
        m(tbl=np.eye(5, 3), t=np.array([2, 7]))


LM = """
model tiny_lm
input ids: i64[B, 6]
input y: i64[B, 6]
const V = 11
const D = 8
h = embedding(ids, V, D)
a = masked_softmax(h @ swapaxes(h) * D ** -0.5, causal_mask(6)) @ h
logits = dense(gelu(a), V)
objective loss = cross_entropy(logits, y)
output emb = h
optimizer adam(lr = 0.01) minimize loss
train { steps = 3 }
procedure pick(z: f32[N, 5], k = 1, temperature = 1.0) {
    return categorical(z, top_k = k, temperature = temperature)
}
"""


def _lm_data(seed: int = 0) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    return {"ids": r.integers(0, 11, (20, 6)), "y": r.integers(0, 11, (20, 6))}


def test_embedding_trains_and_keeps_the_ids_shape() -> None:
    m = dsl.compile(LM, data=_lm_data())
    assert m.params["embedding1.weight"].shape == (11, 8)
    losses = m.fit(steps=3).losses["loss"]
    assert len(losses) == 3 and all(np.isfinite(losses))
    ids = np.arange(12).reshape(2, 6) % 11
    out = m(ids=ids, y=ids)
    np.testing.assert_array_equal(out["emb"], m.params["embedding1.weight"][ids])


def test_ids_out_of_range_in_the_data_are_found_when_compiling() -> None:
    data = _lm_data()
    data["ids"][3, 2] = 11
    with pytest.raises(DataErr) as e:
        dsl.compile(LM, file="lm.dl", data=data)
    msg = e.value.format()
    assert msg.startswith("lm.dl:3:1: error: the indices 'ids' of the data given go from 0 "
                          "to 11"), msg
    assert "'embedding1.weight' f32[11,8]: 11 entries, indices 0 to 10" in msg


def test_ids_out_of_range_at_run_time_are_a_clear_error() -> None:
    m = dsl.compile(LM, data=_lm_data())
    ids = _lm_data(1)["ids"]
    ids[0, 0] = -3
    with pytest.raises(IndexRangeError, match=r"take: index -3 is out of range for axis 0 of "
                       r"size 11 \(the indices go from -3 to \d+; valid: 0 to 10\)"):
        m(ids=ids, y=ids % 11)


# --------------------------------------------------------------------------- masked softmax


def _masked_graph(mask_dtype: str, shape=(3, 4)):
    _, b = new_graph()
    x = add_input(b, "x", "f64", shape)
    m = add_input(b, "m", mask_dtype, shape)
    p = b.emit("masked_softmax", x, m)
    u = add_input(b, "u", "f64", shape)
    y = b.emit("sum", u * p)
    wrt = [x.id] + ([m.id] if mask_dtype != "bool" else [])
    grads = gradients(b, y.id, wrt)
    (hx,) = gradients(b, b.emit("sum", grads[0] * grads[0]).id, [x.id])
    b.graph.outputs.update(p=p.id, gx=grads[0].id, hx=hx.id)
    if len(grads) > 1:
        b.graph.outputs["gm"] = grads[1].id
    return Runner(b.graph, list(b.graph.outputs))


KEEP = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0]], dtype=bool)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_masked_softmax_row_with_nothing_kept_is_zero_with_zero_gradient(kind: str) -> None:
    rng = rng_for("masked", kind)
    x = rng.standard_normal((3, 4)) * 3
    mask = KEEP if kind == "bool" else np.where(KEEP, rng.standard_normal((3, 4)), -np.inf)
    run = _masked_graph("bool" if kind == "bool" else "f64")
    with np.errstate(all="raise"):  # no 0/0, no inf - inf, no overflow anywhere
        res = run({"x": x, "m": mask, "u": rng.standard_normal((3, 4))})
    for name, v in res.items():
        assert np.all(np.isfinite(v)), f"{name} is not finite: {v}"
    p = res["p"]
    np.testing.assert_array_equal(p[1], 0.0)
    np.testing.assert_array_equal(p[~KEEP], 0.0)
    np.testing.assert_allclose(p.sum(-1), [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(p[2], [0, 0, 1, 0])
    z = x + (0 if kind == "bool" else np.where(KEEP, mask, 0))
    e = np.exp(z[0] - z[0][KEEP[0]].max()) * KEEP[0]
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-12)
    for name in [n for n in ("gx", "hx", "gm") if n in res]:
        np.testing.assert_array_equal(res[name][1], 0.0, err_msg=name)
        np.testing.assert_array_equal(res[name][~KEEP], 0.0, err_msg=name)


def test_masked_softmax_with_everything_kept_is_softmax() -> None:
    x = rng_for("all_kept").standard_normal((3, 4))
    p = _masked_graph("bool")({"x": x, "m": np.ones((3, 4), bool), "u": x})["p"]
    e = np.exp(x)
    np.testing.assert_allclose(p, e / e.sum(-1, keepdims=True), rtol=1e-12)


def test_causal_mask_hides_later_keys() -> None:
    text = ("model causal\ninput s: f32[B, 5, 5]\noutput p = masked_softmax(s, causal_mask(5))\n"
            "output m = cast(causal_mask(5), \"f32\")\n")
    m = dsl.compile(text, dtype="float64")
    s = rng_for("causal").standard_normal((2, 5, 5))
    out = m(s=s)
    np.testing.assert_array_equal(out["m"], np.tril(np.ones((5, 5))))  # [t, s]: s <= t kept
    p = out["p"]
    assert np.all(p[:, np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] == 0)
    np.testing.assert_allclose(p.sum(-1), 1.0)
    np.testing.assert_allclose(p[:, 0, 0], 1.0)


def test_lm_with_masks_gelu_and_embedding_has_finite_gradients() -> None:
    m = dsl.compile(LM, dtype="float64", data=_lm_data())
    start = m.params["embedding1.weight"].copy()
    m.fit(steps=2)
    moved = m.params["embedding1.weight"] - start
    assert np.all(np.isfinite(moved)) and np.abs(moved).max() > 0


# --------------------------------------------------------------------------- categorical


def _categorical(logits: np.ndarray, seed: int = 0, **attrs) -> np.ndarray:
    _, b = new_graph()
    z = add_input(b, "z", "f64", logits.shape)
    b.graph.outputs["k"] = b.emit("random_categorical", z, **attrs).id
    return Runner(b.graph, ["k"], seed=seed)({"z": logits})["k"]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


LOGITS = np.array([1.0, -0.5, 2.0, 0.3, -2.0])


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.7, 0), (2.5, 0), (1.0, 2),
                                                (0.8, 3), (1.0, 5), (1.0, 9)])
def test_categorical_frequencies_follow_the_softmax(temperature: float, top_k: int) -> None:
    n = 40000
    k = _categorical(np.broadcast_to(LOGITS, (n, 5)).copy(), seed=3, temperature=temperature,
                     top_k=top_k)
    assert k.shape == (n,) and k.dtype == np.int64
    z = LOGITS / temperature
    if 0 < top_k < 5:
        z = np.where(LOGITS >= np.sort(LOGITS)[-top_k], z, -np.inf)
    p = _softmax(z)
    freq = np.bincount(k, minlength=5) / n
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 4.5 * sigma + 1e-12), (freq, p)
    assert np.all(freq[p == 0] == 0)


def test_categorical_top_k_1_and_small_temperature_are_argmax() -> None:
    z = rng_for("argmax").standard_normal((500, 30))
    want = z.argmax(-1)
    for t in (1.0, 5.0):
        np.testing.assert_array_equal(_categorical(z, top_k=1, temperature=t), want)
    gaps = np.sort(z, -1)[:, -1] - np.sort(z, -1)[:, -2]
    clear = gaps > 1e-2  # p(second) / p(first) <= e^-10 at T = 1e-3
    cold = _categorical(z, temperature=1e-3)
    np.testing.assert_array_equal(cold[clear], want[clear])
    warm = _categorical(z, temperature=1.0)
    assert np.mean(warm == want) < 0.5  # at T = 1 a draw is not the argmax


def test_categorical_is_seeded_and_never_draws_impossible_classes() -> None:
    z = np.tile([0.0, -np.inf, 1.0, -np.inf], (3000, 1))
    a, a2, c = _categorical(z, 7), _categorical(z, 7), _categorical(z, 8)
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) == {0, 2}


def test_categorical_in_a_procedure() -> None:
    m = dsl.compile(LM, data=_lm_data())
    z = rng_for("procedure").standard_normal((50, 5)).astype(np.float32)
    np.testing.assert_array_equal(m.run("pick", z=z)["result"], z.argmax(-1))
    drawn = m.run("pick", z=z, k=0, temperature=1.0)["result"]
    assert drawn.shape == (50,) and drawn.min() >= 0 and drawn.max() < 5
    np.testing.assert_array_equal(drawn, m.run("pick", z=z, k=0)["result"])
    assert not np.array_equal(drawn, m.run("pick", z=z, k=0, seed=5)["result"])


@pytest.mark.parametrize("call, says", [
    ("categorical(z, temperature = 0.0)", "temperature must be positive"),
    ("categorical(z, top_k = -1)", "top_k must be 0"),
    ("categorical(z, top_k = 1.5)", "top_k must be an integer"),
])
def test_categorical_options_are_checked(call: str, says: str) -> None:
    text = f"model c\nprocedure pick(z: f32[N, 5]) {{ return {call} }}\n"
    m = dsl.compile(text)
    with pytest.raises(dsl.DslError, match=says):
        m.run("pick", z=np.zeros((2, 5), np.float32))


@pytest.mark.parametrize("bad", [-1, 5])
def test_cross_entropy_gradient_checks_its_labels(bad: int) -> None:
    """The gradient op can be written in a spec too: a label outside [0, classes) is the same
    user error as in the forward (NumPy would wrap -1 to the last class)."""
    text = ("model g\ninput z: f64[B, 5]\ninput y: i64[B]\ninput w: f64[B]\n"
            "output d = softmax_cross_entropy_grad(z, y, w)\n")
    m = dsl.compile(text, file="g.dl")
    z, w = np.zeros((2, 5)), np.ones(2)
    np.testing.assert_allclose(m(z=z, y=np.array([0, 4]), w=w)["d"][0], [-0.8, .2, .2, .2, .2])
    with pytest.raises(IndexRangeError, match=f"a label: index {bad} is out of range"):
        m(z=z, y=np.array([0, bad]), w=w)


@pytest.mark.parametrize("decl, says", [
    ("input y: bool[B]", "labels must be integers"),
    ("input y: i64[B]\nobjective l = mean(softmax_cross_entropy(z1, y, smoothing = 0.1))",
     "smoothing_mode 'm-1' spreads the smoothing over the other classes"),
])
def test_cross_entropy_refuses_labels_it_cannot_read(decl: str, says: str) -> None:
    text = f"model g\ninput z1: f64[B, 1]\n{decl}\noutput l2 = softmax_cross_entropy(z1, y)\n"
    with pytest.raises(dsl.Error, match=says):
        dsl.compile(text, file="g.dl")


def test_cross_entropy_gradient_in_float32_with_temperature() -> None:
    rng = np.random.default_rng(0)
    z, y, g = rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 4, 6), \
        rng.standard_normal(6).astype(np.float32)
    from runtime.ops.nn import _ce_grad_fwd

    got = _ce_grad_fwd(np, z, y, g, smoothing=0.1, smoothing_mode="m", temperature=2.0)
    zz = z.astype(np.float64) / 2.0
    p = np.exp(zz - zz.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    target = (np.arange(4) == y[:, None]) * 0.9 + 0.1 / 4
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, (p - target) * g[:, None] / 2.0, rtol=1e-5, atol=1e-6)
