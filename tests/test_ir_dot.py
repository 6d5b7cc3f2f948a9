"""DOT drawing of graphs: a loop's body (any region) is a cluster of its own nodes."""

from __future__ import annotations

import re

import dsl
from runtime.ir import to_dot

SPEC = """
model dot_loop
input x: f32[4, 6, 3]
param w: f32[3, 3] = 0.1
net rnn(x) {
    h = zeros([4, 3])
    loop t in 0 .. 6 { h = tanh(x[:, t] @ w + h) }
    return h
}
objective loss = mean(rnn(x) ** 2)
"""


def test_a_loop_body_is_drawn_as_a_cluster_with_its_own_nodes() -> None:
    (_, g), = dsl.compile(SPEC).compiled.stages["forward"]
    dot = to_dot(g)
    clusters = re.findall(r'subgraph (cluster_\d+) \{\n\s+label="loop %\d+ region 0"', dot)
    assert len(clusters) == 1
    body = dot.split(f"subgraph {clusters[0]} {{", 1)[1].split("\n  }", 1)[0]
    assert "tanh" in body and 'arg\\ni64[]\\nt"' in body  # the body's ops and its index
    assert f"ltail={clusters[0]}" in dot  # the cluster points at its loop node
    assert "tanh" not in dot.split(f"subgraph {clusters[0]}", 1)[0]  # nothing leaks out
    ids = re.findall(r"^\s*(n\d+) \[", dot, flags=re.M)
    assert len(ids) == len(set(ids))  # node ids are unique across graph and bodies
