"""Constant folding.

A non-random node whose inputs are all `const` nodes with known values is evaluated with NumPy
(`opdef.forward(np, *arrays, **attrs)`) and becomes a `const` in place (same id, name, loc and
`of`; role `const` unless it was a gradient/update node). Skipped: symbolic dims in the type or
in shape attributes, evaluation errors, results whose shape disagrees with the node's type,
results over `max_elements`, and folds that would inflate memory (a result larger than its
inputs together and than an inline constant, e.g. `broadcast_to` of a scalar or a big `full`).
"""

from __future__ import annotations

import math

import numpy as np

from runtime.ir import INLINE_CONST_MAX, LEAF_OPS, Graph, Role, attr_symbols, const_attr
from runtime.ops import REGISTRY
from runtime.passes._util import const_value, drop_orphans, full_attrs

MAX_FOLD_ELEMENTS = 1_000_000


def fold_constants(graph: Graph, max_elements: int = MAX_FOLD_ELEMENTS) -> Graph:
    """A copy of `graph` with constant subexpressions evaluated."""
    g = graph.copy()
    orphans: list[int] = []
    for nid in g.topo_order():
        n = g.nodes[nid]
        if n.op in LEAF_OPS:
            continue
        opdef = REGISTRY.get(n.op)
        if opdef is None or opdef.random or n.regions:  # a loop runs through its plan
            continue
        if any(g.nodes[i].op != "const" for i in n.inputs):
            continue
        if not all(isinstance(d, int) for d in n.type.shape) or attr_symbols(n.attrs):
            continue
        size = math.prod(n.type.shape)
        arrays = [const_value(g, i) for i in n.inputs]
        if any(a is None for a in arrays):
            continue
        if size > max_elements or (size > INLINE_CONST_MAX
                                   and size > sum(a.size for a in arrays)):
            continue
        try:
            with np.errstate(all="ignore"):
                out = opdef.forward(np, *arrays, **full_attrs(n.op, n.attrs))
            arr = np.asarray(out).astype(n.type.np_dtype(), copy=True)
        except Exception:  # the runtime will report it with a location; do not fold
            continue
        if tuple(arr.shape) != tuple(n.type.shape):
            continue
        role = n.role if n.role in (Role.GRAD, Role.UPDATE) else Role.CONST
        g.replace_node(nid, op="const", inputs=(), attrs={"value": const_attr(arr)}, role=role)
        g.consts[nid] = arr
        orphans.extend(n.inputs)
    drop_orphans(g, orphans)
    return g
