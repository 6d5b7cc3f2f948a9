"""Elementwise fusion: chains and trees of elementwise ops become one `fused_elementwise` node.

A group is a connected set of non-random elementwise nodes with one result (the group's root)
whose other members are used only inside the group and are not outputs or updates. The group
becomes one node (the root's id, role, name, loc and `of`) whose `body` attribute is the
member ops in order:

    body = ((op, (ref, ...), ((attr, value), ...)), ...)

A ref below the number of node inputs names an input; ref `n_inputs + k` names the result of
instruction k; the last instruction is the result. The fused kernel runs the members' own
forward kernels in that order (so values are bit-identical) and drops each intermediate
after its last use: the plan keeps one slot for the group instead of one per member, and
runs one instruction instead of many. The shape rule re-runs each member's shape rule, so
`verify_graph` checks fused nodes too. There is no VJP: fusion is a lowering for graphs that
are already differentiated (run it last). Fused members that are themselves fused are inlined.

The op is registered in the op registry when this module is imported (importing
`runtime.passes` does that), so graph text containing it parses and runs after that import.
"""

from __future__ import annotations

import functools
from typing import Any

from runtime.ir import Graph, TensorType
from runtime.ops import REGISTRY, OpDef, register
from runtime.passes._util import full_attrs

FUSED = "fused_elementwise"
Body = tuple[tuple[str, tuple[int, ...], tuple[tuple[str, Any], ...]], ...]


def _fused_shape(attrs: dict[str, Any], *types: TensorType) -> TensorType:
    vals = list(types)
    for op, refs, pairs in attrs["body"]:
        vals.append(REGISTRY[op].shape(full_attrs(op, dict(pairs)), *(vals[r] for r in refs)))
    if len(vals) == len(types):
        raise ValueError(f"{FUSED}: empty body")
    return vals[-1]


@functools.lru_cache(maxsize=4096)
def _schedule(body: Body) -> tuple[tuple[Any, tuple[int, ...], dict, tuple], ...]:
    """(kernel, refs, attrs, values to drop afterwards) per instruction."""
    last: dict[int, int] = {}
    for k, (_op, refs, _pairs) in enumerate(body):
        for r in refs:
            last[r] = k
    steps = []
    for k, (op, refs, pairs) in enumerate(body):
        drop = tuple(r for r in set(refs) if last[r] == k)
        steps.append((REGISTRY[op].forward, refs, full_attrs(op, dict(pairs)), drop))
    return tuple(steps)


def _fused_forward(xp: Any, *arrays: Any, body: Body) -> Any:
    vals: list[Any] = list(arrays)
    for fn, refs, attrs, drop in _schedule(body):
        vals.append(fn(xp, *[vals[r] for r in refs], **attrs))
        for r in drop:
            vals[r] = None
    return vals[-1]


if FUSED not in REGISTRY:
    register(OpDef(FUSED, _fused_shape, _fused_forward, None, attrs={"body": ()},
                   elementwise=True,
                   doc="several elementwise ops run as one kernel (see runtime.passes.fuse)"))


def _fusible(g: Graph, nid: int) -> bool:
    n = g.nodes[nid]
    opdef = REGISTRY.get(n.op)
    return bool(opdef and opdef.elementwise and not opdef.random and opdef.forward is not None)


def fuse_elementwise(graph: Graph) -> Graph:
    """A copy of `graph` in which each maximal single-result group of elementwise nodes is one
    `fused_elementwise` node."""
    g = graph.copy()
    roots = set(g.roots())
    order = g.topo_order()
    pos = {nid: k for k, nid in enumerate(order)}
    assigned: set[int] = set()
    groups: list[tuple[int, list[int]]] = []
    for nid in reversed(order):
        if nid in assigned or not _fusible(g, nid):
            continue
        group = {nid}
        frontier = set(g.nodes[nid].inputs)
        grew = True
        while grew:  # a rejected input may qualify once more of its users joined the group
            grew = False
            for i in sorted(frontier):
                if i in assigned or i in roots or not _fusible(g, i):
                    frontier.discard(i)
                elif all(u in group for u in g.users(i)):
                    group.add(i)
                    frontier.discard(i)
                    frontier.update(j for j in g.nodes[i].inputs if j not in group)
                    grew = True
        assigned |= group
        if len(group) > 1:
            groups.append((nid, sorted(group, key=pos.__getitem__)))
    owner: dict[int, int] = {}
    for root, group in groups:
        _fuse(g, root, group)
        owner.update((m, root) for m in group)
    for nid, n in list(g.nodes.items()):  # gradient nodes of a fused member: of the group
        if n.of in owner and n.of != owner[n.of]:
            g.replace_node(nid, of=owner[n.of])
    return g


def _fuse(g: Graph, root: int, order: list[int]) -> None:
    """Replace the members `order` (topologically sorted, ending with `root`) by one node."""
    group = set(order)
    inputs: list[int] = []
    ref: dict[int, int] = {}  # graph node -> ref, for external inputs
    body: list[tuple[str, tuple[int, ...], tuple[tuple[str, Any], ...]]] = []
    result: dict[int, int] = {}  # member -> ref of its value

    def ext(i: int) -> int:
        if i not in ref:
            ref[i] = len(inputs)
            inputs.append(i)
        return ref[i]

    for m in order:  # first pass: number the external inputs in order of first use
        for i in g.nodes[m].inputs:
            if i not in group:
                ext(i)
    n_in = len(inputs)
    for m in order:
        n = g.nodes[m]
        args = [result[i] if i in group else ref[i] for i in n.inputs]
        if n.op == FUSED:  # inline a fused member's body
            inner = n.attrs["body"]
            base = n_in + len(body)
            k_in = len(n.inputs)
            for op, refs, pairs in inner:
                body.append((op, tuple(args[r] if r < k_in else base + r - k_in for r in refs),
                             pairs))
        else:
            attrs = full_attrs(n.op, n.attrs)
            body.append((n.op, tuple(args),
                         tuple((k, _freeze(v)) for k, v in sorted(attrs.items()))))
        result[m] = n_in + len(body) - 1
    g.replace_node(root, op=FUSED, inputs=tuple(inputs), attrs={"body": tuple(body)})
    for m in reversed(order):
        if m != root:
            g.remove(m)


def _freeze(v: Any) -> Any:
    """Lists as tuples, so bodies are hashable (the kernel schedule is cached per body)."""
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v
