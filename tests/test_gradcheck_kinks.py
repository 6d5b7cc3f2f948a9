"""`dslrun check-grad` at kinks: the `branch` records of piecewise ops, probes moved off kinks
or reported as kinks (never as failures), and real gradient bugs that still fail."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import spec

from dsl.cli import main as cli_main
from dsl.compiler import compile_spec
from runtime.gradcheck import gradient_report
from runtime.ops import REGISTRY
from runtime.ops.elementwise import where

# the README's example network (relu twice, dropout); at H=8 some examples have every
# first-layer unit off, so the second layer's pre-activations sit exactly on relu's kink
MLP_DEMO = """model mlp_demo
data  digits(test_fraction = 0.2, seed = 0)
input x: f32[B, 64]
input y: i64[B]
const H = 256

net classifier(x) {
  h = relu(dense(x, H, init = xavier_normal))
  h = dropout(relu(dense(h, H)), p = 0.5)
  return dense(h, 10)
}

objective loss = cross_entropy(classifier(x), y) + 5e-4 / 2 * l2(weights)
metric    acc  = accuracy(classifier(x), y)
optimizer adam(lr = 1e-3 * 0.95 ** epoch) minimize loss
train     { batch = 64, epochs = 20, seed = 0 }
"""

# every parameter starts on a kink of abs, the hinge's relu, a max-pool tie, maximum, max and
# a comparison switching a `where`
ON_KINKS = """model on_kinks
param w: [6] = zeros
param v: [6] = zeros
param a: [1, 1, 4, 4] = zeros
l1 = sum(abs(w))
hinged = hinge(v, [1, -1, 1, -1, 1, -1], margin = 0)     # relu(0 - y v)
pooled = sum(max_pool2d(a, kernel = 2))
switched = sum(maximum(w, v)) + max(v) + sum(where(w > 0, w, -2 * w))
objective loss = l1 + hinged + pooled + switched
optimizer sgd(lr = 0.1) minimize loss
"""

# kinks 3e-9 apart: every probe of w crosses some, from any point; s is smooth
DENSE_KINKS = """model dense_kinks
param w: [8] = normal(std = 1.0)
param s: [3] = zeros
objective loss = sum(abs(sin(1e9 * w))) + sum((s - [1, 2, 3]) ** 2)
optimizer sgd(lr = 0.1) minimize loss
"""

RELU_AT_ZERO = """model relu_at_zero
param w: [5] = zeros
objective loss = sum(relu(w) + 0.5 * w)
optimizer sgd(lr = 0.1) minimize loss
"""


def check_grad(tmp_path: Path, monkeypatch, capsys, text: str, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    name = text.split()[1] + ".dl"
    Path(name).write_text(text)
    code = cli_main(["check-grad", name, *args])
    return code, capsys.readouterr().out


# ---- the branch records: (op, inputs on a kink, the input that moves, its direction, attrs)
Z, ONE = np.zeros(2), np.array([1.0, 1.0])
TIE = np.array([[1.0, 1.0, 0.0]])
TIE_DIR = np.array([[1.0, -1.0, 0.0]])
POOL = np.zeros((1, 1, 2, 2))
POOL_DIR = np.arange(4.0).reshape(1, 1, 2, 2)
BRANCHES = [
    ("relu", (Z,), 0, ONE, {}),
    ("leaky_relu", (Z,), 0, ONE, {}),
    ("abs", (Z,), 0, ONE, {}),
    ("sign", (Z,), 0, ONE, {}),
    ("step", (Z,), 0, ONE, {}),
    ("maximum", (Z, Z), 0, ONE, {}),
    ("minimum", (Z, Z), 1, ONE, {}),
    *[(op, (ONE, ONE), 0, ONE, {}) for op in (
        "greater", "less", "greater_equal", "less_equal", "equal", "not_equal")],
    ("max", (TIE,), 0, TIE_DIR, {"axis": -1}),
    ("min", (-TIE,), 0, TIE_DIR, {"axis": -1}),
    ("argmax", (TIE,), 0, TIE_DIR, {}),
    ("norm", (Z,), 0, ONE, {"ord": 1}),
    ("cast", (ONE,), 0, ONE, {"dtype": "i64"}),
    ("max_pool2d", (POOL,), 0, POOL_DIR, {}),
    ("max_pool2d_grad", (np.ones((1, 1, 1, 1)), POOL), 1, POOL_DIR, {}),
    ("max_pool2d_pick", (POOL, POOL), 1, POOL_DIR, {}),
]


def test_every_op_with_a_branch_has_a_row() -> None:
    with_branch = {name for name, op in REGISTRY.items() if op.branch is not None}
    assert with_branch == {row[0] for row in BRANCHES}


@pytest.mark.parametrize("op, inputs, k, d, attrs", BRANCHES, ids=[r[0] for r in BRANCHES])
def test_branch_changes_across_a_kink_only(op, inputs, k, d, attrs) -> None:
    opdef = REGISTRY[op]
    attrs = {**opdef.attrs, **attrs}

    def pieces(at: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
        ins = list(inputs)
        res = []
        for s in (h, -h):
            ins[k] = at + s * d
            res.append(opdef.branch(np, *ins, **attrs))
        return res[0], res[1]

    plus, minus = pieces(inputs[k], 1e-6)  # on the kink: the two sides differ
    assert not np.array_equal(plus, minus)
    plus, minus = pieces(inputs[k] + 0.25 * d, 1e-6)  # off it: one piece
    assert np.array_equal(plus, minus)


# ---- check-grad at kinks


def test_a_probe_across_a_kink_is_reported_not_failed() -> None:
    """Without nudges every probe at w = 0 crosses relu's kink: skipped and named, no error.
    With them the probes move off the kink and match."""
    c = compile_spec(RELU_AT_ZERO, "relu_at_zero.dl", dtype="f64")
    values = {n: v.value.astype(np.float64) for n, v in c.program.variables.items()}
    graph = c.stages["step"][0][1]
    args = (graph, "loss", ["w"], values, {}, {})
    (stuck,) = gradient_report(*args, retries=0)
    assert (stuck.error, stuck.probes, stuck.skipped) == (None, 3, 3)
    assert stuck.kinks == ("relu at relu_at_zero.dl:3:22",)
    (moved,) = gradient_report(*args)
    assert moved.error < 1e-8 and (moved.moved, moved.skipped) == (3, 0)
    assert np.all(values["w"] == 0), "the caller's values are left alone"


@pytest.mark.parametrize("order", ["1", "2"])
def test_mlp_with_relu_at_h8_passes(tmp_path, monkeypatch, capsys, order) -> None:
    code, out = check_grad(tmp_path, monkeypatch, capsys, MLP_DEMO, "--set", "H=8",
                           "--order", order)
    assert code == 0, out
    assert ": pass (" in out and "moved off kinks: relu at mlp_demo.dl:9:15" in out
    assert "FAIL" not in out


@pytest.mark.parametrize("args", [["mlp_digits", "--set", "H=2"],
                                  ["mlp_digits", "--set", "H=8"], ["perceptron"]])
def test_shipped_specs_on_kinks_pass(capsys, args) -> None:
    code = cli_main(["check-grad", spec(args[0]), *args[1:]])
    out = capsys.readouterr().out
    assert code == 0, out
    assert ": pass" in out


@pytest.mark.parametrize("order", ["1", "2"])
def test_abs_hinge_max_pool_maximum_where_on_kinks_pass(tmp_path, monkeypatch, capsys,
                                                         order) -> None:
    code, out = check_grad(tmp_path, monkeypatch, capsys, ON_KINKS, "--order", order)
    assert code == 0, out
    assert ": pass (" in out and "probes moved off kinks: " in out
    assert "skipped" not in out and "FAIL" not in out


def test_only_kinks_skipped_exits_0(tmp_path, monkeypatch, capsys) -> None:
    code, out = check_grad(tmp_path, monkeypatch, capsys, DENSE_KINKS)
    assert code == 0, out
    rows = {line.split()[1]: line.split()[2:] for line in out.splitlines()
            if line.startswith("loss ")}
    assert rows["w"] == ["-", "kink"]
    assert rows["s"][1] == "ok"
    assert out.rstrip().endswith(": pass (3 probes skipped at kinks: abs at dense_kinks.dl:4:22)")


WRONG_VJPS = [  # (op, a wrong VJP, spec, extra args)
    ("relu", lambda g, out, x: (where(x > 0.0, g, 0.0) * 0.9,), MLP_DEMO, ["--set", "H=8"]),
    ("abs", lambda g, out, x: (-g * x.b.emit("sign", x),), ON_KINKS, []),
    ("maximum", lambda g, out, a, b: (where(a >= b, 0.0, g), where(a >= b, g, 0.0)),
     ON_KINKS, []),
    ("max_pool2d", lambda g, out, x, **a: (g.b.emit("max_pool2d_grad", g * 2.0, x, **a),),
     ON_KINKS, []),
]


@pytest.mark.parametrize("op, vjp, text, args", WRONG_VJPS, ids=[r[0] for r in WRONG_VJPS])
def test_a_wrong_vjp_still_fails(tmp_path, monkeypatch, capsys, op, vjp, text, args) -> None:
    """Moving off kinks must not hide a bug, even in the op whose kink the probes avoid."""
    monkeypatch.setitem(REGISTRY, op, replace(REGISTRY[op], vjp=vjp))
    code, out = check_grad(tmp_path, monkeypatch, capsys, text, *args)
    assert code == 1, out
    assert "FAIL" in out.splitlines()[-1]
