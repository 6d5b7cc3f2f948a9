"""Convolution and pooling shape errors are compile-time errors at the spec's line and column;
parameter selections pick weights, biases and normalization scales by kind, net and pattern."""

from __future__ import annotations

import pytest

import dsl
from dsl.errors import ShapeErr

BASE = """model c
input x: f32[B, 3, 8, 8]
input y: i64[B]
h = {layer}
objective loss = mean(h)
"""


@pytest.mark.parametrize(("layer", "message"), [
    ("conv2d(x, 4, kernel = 11)", "larger than"),
    ("conv2d(x, 4, kernel = 3, groups = 2)", "groups"),
    ("max_pool2d(x, kernel = 12)", "max_pool2d"),
])
def test_conv_shape_errors_point_at_the_call(layer, message):
    text = BASE.format(layer=layer)
    with pytest.raises(ShapeErr) as e:
        dsl.compile(text, file="c.dl")
    err = e.value
    assert message in err.message
    line = text.splitlines()[err.span.line - 1]
    assert "h = " in line or "conv2d" in line
    assert str(err).startswith(f"c.dl:{err.span.line}:{err.span.col}: error:")


def test_selections_by_kind_net_and_pattern():
    m = dsl.compile("""model s
input x: f32[B, 4]
net enc(x) { return layer_norm(dense(x, 3)) }
net head(x) { return dense(x, 2) }
objective loss = mean(head(enc(x)))
output w = l2(weights)
output n = count(weights(enc)) + 100 * count(biases) + 10000 * count(scales)
output p = count(params("head.*"))
""")
    # (selections see the parameters declared above them)
    # weights(enc): enc.dense1.W (12); biases: 3 + 3 + 2 (beta is a bias); scales: gamma (3)
    out = m(x=[[0.0, 0, 0, 0]])
    assert int(out["n"]) == 12 + 100 * 8 + 10000 * 3
    assert int(out["p"]) == 6 + 2
