"""What compiling (`dslrun check`, `dsl.compile`) finds before anything trains: data against the
declared inputs, labels against the class count, typed overrides, warnings for specs that
would train nothing, and that compiling allocates no weights or optimizer state.

The command-line forms of these mistakes (message, position, exit status) are cases in
`tests/test_errors.py`; here they are checked through the Python API, in process.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import spec

import dsl
from dsl.compiler import compile_file, compile_spec
from dsl.errors import DataErr, DslWarning, TypeErr
from runtime.errors import UserError

CLASSIFIER = """model c
data digits(test_fraction = 0.2, seed = 0)
input x: f32[B, 64]
input y: i64[B]
const K = 10
objective loss = cross_entropy(dense(x, K), y)
optimizer adam() minimize loss
train { steps = 1 }
"""


def test_every_user_error_has_one_base_class() -> None:
    from runtime.backends import BackendError
    from runtime.plan import NonFiniteError
    from runtime.train.checkpoint import CheckpointError
    from runtime.train.data import DataError
    from runtime.train.loop import TrainError

    assert dsl.Error is UserError
    for cls in (dsl.DslError, TrainError, CheckpointError, DataError, BackendError,
                NonFiniteError):
        assert issubclass(cls, dsl.Error), cls


def test_check_allocates_no_weights_or_optimizer_state() -> None:
    """7.5 billion parameters (and Adam's two moments each) compile without allocating."""
    c = compile_file(spec("mlp_digits"), overrides={"H": "100000000", "DEPTH": "1"},
                     optimize=False)
    assert c.program.param_count() == 7_500_000_010
    assert all(callable(v.initial) for v in c.program.variables.values())
    assert any(n.startswith("opt.") for n in c.program.variables)


def test_labels_beyond_the_class_count_are_found_when_compiling() -> None:
    with pytest.raises(DataErr) as e:
        compile_spec(CLASSIFIER.replace("K = 10", "K = 9"), "c.dl")
    msg = e.value.format()
    assert msg.startswith("c.dl:4:1: error: the labels 'y' of digits go from 0 to 9")
    assert "f32[B,9]: 9 classes, labels 0 to 8" in msg
    assert "note: the data set is declared at c.dl:2:1" in msg
    compile_spec(CLASSIFIER, "c.dl")  # ten classes fit


def test_data_shapes_against_inputs() -> None:
    text = CLASSIFIER.replace("input x: f32[B, 64]", "input x: f32[B, 63]")
    with pytest.raises(DataErr, match=r"input 'x' is f32\[B,63\], but axis 1 of its field has "
                       r"size 64, not 63 in the train split of digits \(x \(1438, 64\)"):
        compile_spec(text, "c.dl")
    text = "model r\ndata diabetes()\ninput x: f32[B, 10]\ninput y: f32[B, 1]\n" \
        "objective loss = mse(dense(x, 1), y)\noptimizer sgd() minimize loss\n"
    with pytest.raises(DataErr, match=r"input 'y' is f32\[B,1\], but its field has shape "
                       r"\(354,\) \(1 axes, not 2\) in the train split of diabetes"):
        compile_spec(text, "r.dl")


def test_data_given_through_the_api_is_checked() -> None:
    x = np.zeros((5, 64), np.float32)
    with pytest.raises(DataErr, match="the labels 'y' of the data given go from 8 to 12"):
        dsl.compile(CLASSIFIER, data={"x": x, "y": np.arange(5) + 8})
    with pytest.raises(DataErr, match="the data given"):
        dsl.compile(CLASSIFIER, data={"x": x[:, :3], "y": np.arange(5)})
    dsl.compile(CLASSIFIER, data={"x": x, "y": np.arange(5)})


@pytest.mark.parametrize("overrides, says", [
    ({"K": True}, "const 'K' is an integer (declared 10), so the value must be an integer"),
    ({"K": "ten"}, "--set K=ten"),
    ({"K": 2.5}, "must be an integer"),
])
def test_python_overrides_are_typed_too(overrides: dict, says: str) -> None:
    with pytest.raises(TypeErr, match=r".*".join(map(_escape, says.split("(")))):
        dsl.compile(CLASSIFIER, overrides=overrides)


def _escape(s: str) -> str:
    import re

    return re.escape(s)


def test_overrides_of_the_right_type() -> None:
    assert dsl.compile(CLASSIFIER, overrides={"K": "10"}).program.param_count() == 650
    assert dsl.compile(CLASSIFIER, overrides={"K": 10}).program.param_count() == 650
    text = "model q\ninput s: f32[2] = [1, 2]\nconst R = 0.5\nconst N = \"a\"\n" \
        "param w: [2] = zeros\nobjective loss = sum((w - s) ** 2) * R\n" \
        "optimizer gd() minimize loss\n"
    m = dsl.compile(text, overrides={"R": 1, "N": "b", "s": "[3, 4]"})
    assert m.program.input_defaults["s"].tolist() == [3.0, 4.0]
    with pytest.raises(TypeErr, match=r"input 's' is f32\[2\], but the value has shape \[3\]"):
        dsl.compile(text, overrides={"s": [1, 2, 3]})


def test_objective_without_optimizer_warns() -> None:
    text = "model q\nparam w: [2] = zeros\nobjective loss = sum((w - 1) ** 2)\n"
    with pytest.warns(DslWarning, match="objective 'loss' is minimized by no optimizer"):
        dsl.compile(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dsl.compile(text + "optimizer sgd() minimize loss\n")
        dsl.load("one_neuron")  # objectives computed for their gradients, as outputs


def test_user_errors_are_not_bugs() -> None:
    with pytest.raises(UserError):
        dsl.compile(CLASSIFIER, dtype="float16")


def test_a_model_too_large_for_memory_is_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before any weight is drawn (NumPy's allocation error otherwise)."""
    from runtime.train import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)
    m = dsl.load(spec("mlp_digits"), overrides={"H": "4096", "DEPTH": "1"})
    with pytest.raises(memory.ResourceError, match=r"training mlp_digits \(307,210 parameters\) "
                       r"needs about \d+ MiB \(parameters 1 MiB \+ optimizer and other state "
                       r"2 MiB \+ step values at batch 64 \d+ MiB \+ data 463 KiB = \d+ MiB\), "
                       r"more than the 1 MiB"):
        m.fit(steps=1)
    assert all(callable(v.initial) for v in m.program.variables.values())


def test_a_gather_along_a_symbolic_axis_is_not_checked_against_the_data() -> None:
    """`take` of the first rows of a batch (the rnn spec's carried state) indexes an axis of
    no static size: nothing to check, and no crash while looking."""
    text = CLASSIFIER.replace("dense(x, K)", "dense(take(x, arange(0, 4), axis = 0), K)") \
        .replace("), y)", "), take(y, arange(0, 4), axis = 0))")
    compile_spec(text, "c.dl")


@pytest.mark.parametrize("expr", ["full([3], sqrt(2.0))", "full_like(x, exp(1.0))"])
def test_a_fill_value_is_a_number_known_at_compile_time(expr: str) -> None:
    text = f"model f\ninput x: f32[B, 3]\noutput o = {expr}\n"
    with pytest.raises(TypeErr, match=r"the value must be a number known at compile time, "
                       r"not a tensor f32\[\]"):
        compile_spec(text, "f.dl")
