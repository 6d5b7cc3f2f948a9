"""Elementwise fusion: chains and trees of elementwise ops become one `fused_elementwise` node.

A group is a connected set of non-random elementwise nodes with one result (the group's root)
whose other members are used only inside the group and are not outputs or updates. The group
becomes one node (the root's id, role, name, loc and `of`) whose inputs are the group's
external inputs in order of first use and whose body region holds the members: an `arg` leaf
per input and a copy of each member (op, complete attributes, type, role, name), the root's
copy its one result. Fused members that are themselves fused are inlined, so bodies never nest.

The op (`runtime.ops.fused`) runs the members' own kernels (values are bit-identical): the
plan keeps one slot for the group instead of one per member and runs one instruction instead
of many. The shape rule re-infers through the body, so `verify_graph` checks fused nodes too.
There is no VJP: fusion is a lowering for graphs that are already differentiated (run it
last); the other passes leave fused bodies alone (`regions.map_regions`).
"""

from __future__ import annotations

from runtime.ir import Graph
from runtime.ops import REGISTRY, Val
from runtime.ops.control import new_region, set_results
from runtime.ops.fused import FUSED
from runtime.passes._util import full_attrs


def _fusible(g: Graph, nid: int) -> bool:
    n = g.nodes[nid]
    opdef = REGISTRY.get(n.op)
    return bool(opdef and opdef.elementwise and not opdef.random
                and (opdef.forward is not None or n.op == FUSED))


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
                elif g.n_users(i) <= len(group) and all(u in group for u in g.user_set(i)):
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
    """Replace the members `order` (topologically sorted, ending with `root`) by one node
    whose body region holds them (with a fused member's own body inlined)."""
    group = set(order)
    inputs: list[int] = []  # external inputs in order of first use: the body's args
    for m in order:
        for i in g.nodes[m].inputs:
            if i not in group and i not in inputs:
                inputs.append(i)
    body, builder, args = new_region([g.nodes[i].type for i in inputs])
    env: dict[int, int] = {i: a.id for i, a in zip(inputs, args)}  # graph node -> body node
    for m in order:
        n = g.nodes[m]
        if n.op == FUSED:
            inner = n.regions[0]
            local = {a: env[i] for a, i in zip(inner.args(), n.inputs)}
            for j in inner.topo_order(inner.results()):
                if inner[j].op != "arg":
                    local[j] = _copy(inner, j, body, local)
            env[m] = local[inner.results()[0]]
        else:
            env[m] = _copy(g, m, body, env)
    set_results(body, [Val(builder, env[root])])
    g.replace_node(root, op=FUSED, inputs=tuple(inputs), attrs={}, regions=(body,))
    for m in reversed(order):
        if m != root:
            g.remove(m)


def _copy(src: Graph, nid: int, body: Graph, env: dict[int, int]) -> int:
    """Node `nid` of `src` added to `body`, its inputs mapped by `env`: role, name and loc
    kept, attributes complete; `of` names a node outside the body and is dropped."""
    n = src[nid]
    new = body.add(n.op, [env[i] for i in n.inputs], full_attrs(n.op, n.attrs), n.type,
                   role=n.role, name=n.name, loc=n.loc, regions=n.regions)
    if nid in src.consts:
        body.consts[new] = src.consts[nid]
    return new
