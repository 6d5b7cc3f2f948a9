"""Optimizer rules replayed per parameter type (`dsl.lower.rule_template`): the graph is the
one lowering each parameter from the rule's statements makes, and each parameter keeps its
own state."""

from __future__ import annotations

import numpy as np
import pytest

import dsl
from dsl.lower import optimizers

SPEC = """\
model replayed
input x: f32[B, 4]
input y: f32[B, 4]
param w1: [4, 4] = normal(std = 0.5)
param w2: [4, 4] = normal(std = 0.5)
param w3: [4, 4] = normal(std = 0.5)
param b1: [4] = uniform(low = -1, high = 1)
param b2: [4] = uniform(low = -1, high = 1)
param d: f64[4] = ones
optimizer polyak(lr = 0.1) {
    state avg = param
    state n: [] = zeros
    n = n + 1
    param = param - lr * grad * exp(-0.1 * step)
    avg = avg + (param - avg) / n
}
optimizer late(lr = 0.1) {
    param = param - lr * grad
    state m = zeros_like(param)
    m = 0.5 * m + grad
}
objective loss = mean((x @ w1 @ w2 @ w3 + b1 + b2 - y) ** 2)
objective fit_d = sum((d - 2.0) ** 2)
optimizer polyak(lr = 0.05) minimize loss over params("w*")
optimizer adam(lr = 0.01) minimize loss over params("b*")
optimizer late(lr = 0.1) minimize fit_d over d
train { batch = 4, steps = 3, seed = 0 }
"""


# rules a replay must not take: one that differentiates (its Hessian-vector products read
# the forward graph of its own parameter), and a parameter whose gradient is a constant (the
# seed 1.0 of `a`, which the literal lr = 1.0 of the rule shares through the builder's cache)
SECOND_ORDER = """\
model second_order
input x: f32[B, 3]
input y: f32[B, 3]
param w1: [3, 3] = normal(std = 0.5)
param w2: [3, 3] = normal(std = 0.5)
objective loss = mean((tanh(x @ w1) @ w2 - y) ** 2)
optimizer newton_cg(iters = 3) minimize loss
"""
CONSTANT_GRADIENT = """\
model constant_gradient
input x: f32[B]
param a: [] = ones
param b: [] = ones
objective loss = a + b * b + mean(x)
optimizer gd(lr = 1.0) minimize loss
"""


def _texts(spec: str, monkeypatch: pytest.MonkeyPatch | None) -> dict[str, str]:
    if monkeypatch is not None:  # every parameter lowered from the rule's statements
        monkeypatch.setattr(optimizers, "stated", lambda body: None)
    model = dsl.compile(spec)
    return {s: model.graph_text(s) for s in ("grad", "step", "optimized")}


@pytest.mark.parametrize("spec", [SPEC, SECOND_ORDER, CONSTANT_GRADIENT],
                         ids=["rules", "second_order", "constant_gradient"])
def test_replayed_rules_make_the_graph_the_statements_make(
        spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    replayed = _texts(spec, None)
    direct = _texts(spec, monkeypatch)
    for stage, text in replayed.items():
        assert text == direct[stage], stage


def test_rules_of_one_parameter_type_are_replayed(monkeypatch: pytest.MonkeyPatch) -> None:
    from dsl.lower import rule_template

    made: list[object] = []
    real = rule_template.record
    monkeypatch.setattr(optimizers, "record", lambda *a: made.append(real(*a)) or made[-1])
    model = dsl.compile(SPEC)
    # one recording per type and optimizer: w* [4, 4] (polyak), b* [4] (adam), d (late: its
    # state is declared after an assignment, so it is lowered from the statements)
    assert len(made) == 2 and all(t is not None for t in made)
    assert model.graph_text("step").count("name='opt.w3.avg'") == 1


def test_each_parameter_keeps_its_own_state_and_updates() -> None:
    program = dsl.compile(SPEC).program
    for w in ("w1", "w2", "w3"):  # `state avg = param`: each its own initial value
        np.testing.assert_array_equal(program.variables[f"opt.{w}.avg"].value,
                                      program.variables[w].value)
    assert not np.array_equal(program.variables["w1"].value, program.variables["w2"].value)
    updated = {u for ph in program.phases for u in ph.graph.updates}
    assert updated >= {f"opt.{w}.{s}" for w in ("w1", "w2", "w3") for s in ("avg", "n")}
    assert updated >= {"opt.b1.m", "opt.b2.v", "opt.d.m", "w1", "w2", "w3", "b1", "b2", "d"}
