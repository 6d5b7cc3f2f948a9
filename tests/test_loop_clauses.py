"""The clauses of a run-time loop in the language (`dsl/lower/loops.py`): `, checkpoint = K`
gives the gradients of the plain loop to 1e-12 in float64 (K dividing T or not, forward and
reversed); a run-time stop with `, max = N` and an early exit with `until` give the loss and
gradients of the loop of the same constant count, and `, count = NAME` reads the iterations
run. The clauses print and parse back.
"""

from __future__ import annotations

import numpy as np
import pytest

import dsl
from dsl.parser import parse
from dsl.printer import format_program
from runtime.backends import get_backend
from runtime.plan import Plan

RNN = """
model m
input x: f32[4, 12, 3]
input n: i64[]
param w: f32[3, 3] = normal(std = 0.6)
param u: f32[3] = normal(std = 0.3)
const THR = 0.5
net rnn(x) {{
    h = zeros([4, 3]) + u
    loop t in {range}{clauses} {{
        h = tanh(x[:, t] @ w + h)
        emit h * h + 0.01 * t * h as hs
    }}
    return h, hs{ran}
}}
h, hs{ran} = rnn(x)
output last = h
output series = hs
{count_output}
objective loss = mean(h ** 2) + sum(hs)
optimizer sgd(lr = 0.1) minimize loss
"""

X = np.random.default_rng(0).standard_normal((4, 12, 3))


def step(range_: str = "0 .. 12", clauses: str = "", n: int = 0, count: bool = False,
         thr: float = 0.5) -> dict[str, np.ndarray]:
    """Loss, gradients and forward outputs of `RNN` with this loop head, in float64."""
    src = RNN.format(range=range_, clauses=clauses, ran=", steps" if count else "",
                     count_output="output ran = steps" if count else "")
    m = dsl.compile(src, dtype="float64", seed=3, overrides={"THR": repr(thr)})
    values = {k: v.value.astype(np.float64) for k, v in m.program.variables.items()}
    feeds = {"x": X, "n": np.int64(n)}
    out = {}
    for stage, names in (("grad", ["loss", "u.grad", "w.grad"]),
                         ("forward", ["last", "series"] + ["ran"] * count)):
        g = m.compiled.stages[stage][0][1]
        plan = Plan(g, {}, get_backend("numpy"), values, names, apply_updates=False)
        out.update(zip(names, (np.asarray(v) for v in plan.run(feeds))))
    return out


def assert_same(got: dict, want: dict, rows: int | None = None) -> None:
    for k in want:
        a, b = got[k], want[k]
        if k == "series" and rows is not None:  # the rows no iteration wrote are zeros
            np.testing.assert_array_equal(a[rows:], 0.0)
            a, b = a[:rows], b[:rows]
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=k)


def test_clauses_print_and_parse_back() -> None:
    src = RNN.format(range="reversed 0 .. n", clauses=", max = 12, checkpoint = 4, count = steps",
                     ran=", steps", count_output="")
    src += "net g(y) {\n  loop t in 0 .. 8 until sum(y) > 1 or t == 3, count = k { y = y * 2 }" \
           "\n"           "  return y, k\n}\n"
    ast = parse(src)
    assert parse(format_program(ast)) == ast
    assert "until sum(y) > 1 or t == 3, count = k {" in format_program(ast)


@pytest.mark.parametrize("reversed_", [False, True])
@pytest.mark.parametrize("every", [1, 3, 5, 12])
def test_checkpoint_gives_the_gradients_of_the_plain_loop(reversed_: bool, every: int) -> None:
    """T = 12 in segments of 1, 3 or 12 iterations, or two of 5 and a tail of 2."""
    range_ = "reversed 0 .. 12" if reversed_ else "0 .. 12"
    assert_same(step(range_, f", checkpoint = {every}"), step(range_))


@pytest.mark.parametrize("reversed_", [False, True])
@pytest.mark.parametrize("n", [-1, 0, 5, 12, 20])
def test_run_time_stop_gives_the_loop_of_that_count(reversed_: bool, n: int) -> None:
    """`loop t in 0 .. n, max = 12` with n fed at run time: the loss, gradients and final
    state of `loop t in 0 .. m` for m = n clipped to [0, 12]; `count` reads m."""
    rev = "reversed " if reversed_ else ""
    m = min(max(n, 0), 12)
    got = step(f"{rev}0 .. n", ", max = 12, count = steps", n=n, count=True)
    assert got["series"].shape == (12, 4, 3) and int(got["ran"]) == m
    if m:
        assert_same(got, step(f"{rev}0 .. {m}"), rows=m)
    else:
        assert float(np.sum(got["series"] ** 2)) == 0.0
        np.testing.assert_array_equal(got["w.grad"], 0.0)


def test_run_time_stop_after_a_start() -> None:
    got = step("2 .. n", ", max = 12, count = steps", n=7, count=True)
    assert int(got["ran"]) == 5 and got["series"].shape == (10, 4, 3)
    assert_same(got, step("2 .. 7"), rows=5)


@pytest.mark.parametrize("thr", [10.0, -1.0, -10.0])
def test_early_exit_gives_the_loop_of_that_count(thr: float) -> None:
    """`until sum(h) < THR`: the loop stops after the first such iteration (the first, a
    later one, none); the loss and gradients are those of the loop of that constant count."""
    got = step("0 .. 12", " until sum(h) < THR, count = steps", count=True, thr=thr)
    ran = int(got["ran"])
    sums = [float(np.sum(step(f"0 .. {k}")["last"])) for k in range(1, 13)]  # after each
    want = next((k + 1 for k, s in enumerate(sums) if s < thr), 12)
    assert ran == want
    if thr == -1.0:
        assert 1 < ran < 12
    assert_same(got, step(f"0 .. {ran}"), rows=ran)


NESTED = """
model m
input x: f32[4, 12, 3]
param w: f32[3, 3] = normal(std = 0.6)
const RUNTIME = true
net rnn(x) {
    h = zeros([4, 3])
    if RUNTIME {
        loop s in 0 .. 3 {
            loop k in 0 .. 4, count = inner { h = tanh(x[:, 4 * s + k] @ w + h) }
            h = h * (0.2 * inner)
        }
    } else {
        for s in 0 .. 3 {
            for k in 0 .. 4 { h = tanh(x[:, 4 * s + k] @ w + h) }
            h = h * 0.8
        }
    }
    return h
}
objective loss = mean(rnn(x) ** 2)
optimizer sgd(lr = 0.1) minimize loss
"""


def test_a_loop_in_a_loop_differentiates_like_the_unrolled_loops() -> None:
    """The inner loop is a node of the outer body; the outer loop's backward body recomputes
    it (a node with several results is not saved). Against nested `for` loops."""
    m = dsl.compile(NESTED, dtype="float64")
    outer = [n for n in m.compiled.stages["grad"][0][1].nodes.values() if n.op == "loop"]
    assert outer and all(any(i.op == "loop" for i in n.regions[0].nodes.values())
                         for n in outer)
    got, want = _grads(NESTED, {"RUNTIME": "true"}), _grads(NESTED, {"RUNTIME": "false"})
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12, err_msg=k)


def _grads(src: str, overrides: dict[str, str]) -> dict[str, np.ndarray]:
    m = dsl.compile(src, dtype="float64", seed=1, overrides=overrides)
    values = {k: v.value.astype(np.float64) for k, v in m.program.variables.items()}
    g = m.compiled.stages["grad"][0][1]
    plan = Plan(g, {}, get_backend("numpy"), values, ["loss", "w.grad"], apply_updates=False)
    return dict(zip(["loss", "w.grad"], (np.asarray(v) for v in plan.run({"x": X}))))


def test_count_of_a_fixed_loop_is_its_length() -> None:
    assert int(step("3 .. 12", ", count = steps", count=True)["ran"]) == 9
