"""Symbolic reverse mode: gradients are more graph.

`gradients(b, y, wrt)` walks the nodes between `wrt` and `y` in reverse topological order,
calls each op's VJP (which emits nodes), sums contributions and un-broadcasts them in one
place. Symbolic zeros are `None` and never materialized; integer-valued inputs get no
gradient. Because VJPs are built from registered ops, gradients of gradients work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from runtime.ir import LEAF_OPS, Role, TupleType
from runtime.ops import REGISTRY, Builder, Val
from runtime.ops.shapes import broadcast_shapes


class GradError(Exception):
    """A gradient cannot be formed (non-scalar target, missing VJP)."""


def _fit(c: Val, shape: tuple) -> Val:
    """Sum or broadcast a contribution to the shape of the input it belongs to."""
    if tuple(c.shape) == tuple(shape):
        return c
    if broadcast_shapes("grad", c.shape, shape) == tuple(shape):
        return c.b.emit("broadcast_to", c, shape=shape)
    return c.b.emit("sum_to", c, shape=shape)


def gradients(b: Builder, y: int, wrt: Sequence[int], seed: Val | None = None,
              role: Role = Role.GRAD) -> list[Val | None]:
    """d y / d w for each w in `wrt` as new nodes in `b.graph` (None where y does not depend
    on w). `y` must be a scalar unless a `seed` cotangent of y's shape is given."""
    yt = b.graph[y].type
    if seed is None:
        if yt.rank != 0:
            raise GradError(f"grad: the differentiated value must be a scalar, got {yt}")
        if not yt.is_float:
            raise GradError(f"grad: the differentiated value must be a float, got {yt}")
        with b.context(role=role, loc=b.graph[y].loc, of=y):
            seed = b.const(1.0, yt.dtype)
    return vjp(b, {y: seed}, wrt, role)


def vjp(b: Builder, seeds: Mapping[int, Val], wrt: Sequence[int],
        role: Role = Role.GRAD) -> list[Val | None]:
    """The vector-Jacobian product: Σ_y seeds[y] · d y / d w for each w in `wrt` (None where
    no y depends on w). Nodes with several results (a loop) get one cotangent per result,
    gathered from the `item` nodes that read them."""
    g = b.graph
    order = g.topo_order(list(seeds))  # the ys and what they depend on
    wanted = set(wrt)
    reach: set[int] = set()  # the nodes on a path from some w to some y
    for nid in order:
        if nid in wanted or any(i in reach for i in g[nid].inputs):
            reach.add(nid)
    if not reach.intersection(seeds):
        return [None] * len(wrt)
    adj: dict[int, Val] = dict(seeds)
    parts: dict[int, list[Val | None]] = {}  # several results: one cotangent each
    b.differentiate = vjp
    for nid in reversed(order):
        node = g[nid]
        if node.op in LEAF_OPS or (nid not in adj and nid not in parts):
            continue
        if node.op == "item":  # the cotangent of one result of a multi-result node
            src = node.inputs[0]
            if src in reach:
                slots = parts.setdefault(src, [None] * len(g[src].type.items))
                k = node.attrs["index"]
                slots[k] = adj[nid] if slots[k] is None else slots[k] + adj[nid]
            continue
        opdef = REGISTRY[node.op]
        if opdef.vjp is None:
            if opdef.nondiff:
                continue
            raise GradError(f"{node.op}: no gradient rule (needed for input of node %{nid})")
        cot = parts[nid] if isinstance(node.type, TupleType) else adj[nid]
        with b.context(role=role, loc=node.loc, of=nid):
            contribs = opdef.vjp(cot, Val(b, nid), *(Val(b, i) for i in node.inputs),
                                 **node.attrs)
            if len(contribs) != len(node.inputs):
                raise GradError(f"{node.op}: VJP returned {len(contribs)} values for "
                                f"{len(node.inputs)} inputs")
            for inp, c in zip(node.inputs, contribs):
                if c is None or inp not in reach or not g[inp].type.is_float:
                    continue
                c = _fit(c, g[inp].type.shape)
                if c.type.dtype != g[inp].type.dtype:
                    c = b.emit("cast", c, dtype=g[inp].type.dtype)
                adj[inp] = adj[inp] + c if inp in adj else c
    return [adj.get(w) for w in wrt]


def or_zeros(b: Builder, grad: Val | None, w: int) -> Val:
    """`grad`, or zeros of w's type where y does not depend on w (`gradients` gave None)."""
    if grad is not None:
        return grad
    t = b.graph[w].type
    return b.emit("full", shape=t.shape, value=0.0, dtype=t.dtype)


def hessian(b: Builder, y: int, w: int) -> Val:
    """The full Hessian d²y/dw² with shape w.shape + w.shape (one reverse pass per entry of
    the gradient, so meant for small parameter vectors: Newton's method, tests)."""
    shape = b.graph[w].type.shape
    if not all(isinstance(d, int) for d in shape):
        raise GradError(f"hessian: the parameter needs a static shape, got {b.graph[w].type}")
    n = math.prod(shape)
    (gw,) = gradients(b, y, [w])
    if gw is None:
        return b.emit("full", shape=shape + shape, value=0.0, dtype=b.graph[w].type.dtype)
    flat = b.emit("reshape", gw, shape=(n,))
    rows = []
    for i in range(n):
        gi = b.emit("getitem", flat, index=(("i", i),))
        hi = or_zeros(b, gradients(b, gi.id, [w])[0], w)
        rows.append(b.emit("reshape", hi, shape=(1, n)))
    h = b.emit("concat", *rows, axis=0) if n > 1 else rows[0]
    return b.emit("reshape", h, shape=shape + shape)
