"""kernel_perceptron: dual updates written as an `update` rule reach zero training mistakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dsl
from dsl.errors import TypeErr

SPEC = Path(__file__).resolve().parents[1] / "specs" / "kernel_perceptron.dl"


def test_kernel_perceptron_separates_circles():
    m = dsl.load(SPEC)
    assert not m.program.param_count()  # no parameters: α is state, updated by the rule
    r = m.fit(steps=2500)
    assert m.evaluate("train")["acc"] >= 0.95
    alpha = m.trainer.get_variables()["alpha"]
    assert np.all(alpha >= 0) and np.all(alpha == np.round(alpha))  # mistake counts
    assert alpha.sum() == pytest.approx(sum(r.losses["mistakes"]))  # one count per mistake


def test_a_split_expression_is_an_error_not_a_silent_statement():
    spec = "model s\ninput a: f32[] = 1.0\nb = a\n    + a\noutput o = b\n"
    with pytest.raises(TypeErr, match="has no effect"):
        dsl.compile(spec)
