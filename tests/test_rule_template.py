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


def _texts(monkeypatch: pytest.MonkeyPatch | None) -> dict[str, str]:
    if monkeypatch is not None:  # every parameter lowered from the rule's statements
        monkeypatch.setattr(optimizers, "stated", lambda body: None)
    model = dsl.compile(SPEC)
    return {s: model.graph_text(s) for s in ("grad", "step", "optimized")}


def test_replayed_rules_make_the_graph_the_statements_make(
        monkeypatch: pytest.MonkeyPatch) -> None:
    replayed = _texts(None)
    direct = _texts(monkeypatch)
    for stage, text in replayed.items():
        assert text == direct[stage], stage
    assert replayed["step"].count("name='opt.w3.avg'") == 1


def test_each_parameter_keeps_its_own_state_and_updates() -> None:
    program = dsl.compile(SPEC).program
    for w in ("w1", "w2", "w3"):  # `state avg = param`: each its own initial value
        np.testing.assert_array_equal(program.variables[f"opt.{w}.avg"].value,
                                      program.variables[w].value)
    assert not np.array_equal(program.variables["w1"].value, program.variables["w2"].value)
    updated = {u for ph in program.phases for u in ph.graph.updates}
    assert updated >= {f"opt.{w}.{s}" for w in ("w1", "w2", "w3") for s in ("avg", "n")}
    assert updated >= {"opt.b1.m", "opt.b2.v", "opt.d.m", "w1", "w2", "w3", "b1", "b2", "d"}
