"""Graph invariants checked between passes.

`verify_graph` collects every violation and raises one `VerifyError` listing them:
inputs exist, the edge index agrees with each node's inputs, the graph is acyclic, each
op is registered with the right arity, each non-leaf type equals the type its shape rule
re-infers from its inputs, const nodes carry a value of their type, outputs and updates name
live nodes, an update has the type of the variable it writes, and every region (a loop's
body) is itself a sound graph.
"""

from __future__ import annotations

import numpy as np

from runtime.ir import LEAF_OPS, Graph, IRError
from runtime.ops import REGISTRY
from runtime.passes._util import infer_type


class VerifyError(IRError):
    """A graph breaks an IR invariant (after a pass: a bug in that pass)."""


def verify_graph(graph: Graph) -> None:
    """Raise `VerifyError` listing every broken invariant of `graph`; return None if sound."""
    problems: list[str] = []
    nodes = graph.nodes
    for nid, n in nodes.items():
        if n.id != nid:
            problems.append(f"node %{nid} records id %{n.id}")
        for i in n.inputs:
            if i not in nodes:
                problems.append(f"node %{nid} ({n.op}) uses missing node %{i}")
            elif nid not in graph.users(i):
                problems.append(f"edge index lacks %{i} -> %{nid}")
        for u in graph.users(nid):
            if u not in nodes or nid not in nodes[u].inputs:
                problems.append(f"edge index has stale edge %{nid} -> %{u}")
    if not problems:
        cycle = _find_cycle(graph)
        if cycle:
            problems.append("cycle through " + " -> ".join(f"%{i}" for i in cycle))
    if problems:  # type checks need a sound structure
        raise VerifyError("graph invariants violated:\n  " + "\n  ".join(problems))

    for nid, n in nodes.items():
        if n.op in LEAF_OPS:
            if n.inputs:
                problems.append(f"leaf %{nid} ({n.op}) has inputs")
            if n.op == "const":
                problems.extend(_check_const(graph, nid))
            continue
        opdef = REGISTRY.get(n.op)
        if opdef is None:
            problems.append(f"node %{nid} has unknown op {n.op!r}")
            continue
        if opdef.arity is not None and len(n.inputs) != opdef.arity:
            problems.append(f"node %{nid} ({n.op}) has {len(n.inputs)} inputs, "
                            f"expected {opdef.arity}")
            continue
        try:
            t = infer_type(n.op, n.attrs, (nodes[i].type for i in n.inputs), n.regions)
        except Exception as e:  # any shape-rule failure is a violation
            problems.append(f"node %{nid} ({n.op}): shape rule fails: {e}")
            continue
        if t != n.type:
            problems.append(f"node %{nid} ({n.op}) stores type {n.type} but its inputs give {t}")

    for table, what in ((graph.outputs, "output"), (graph.updates, "update")):
        for name, nid in table.items():
            if nid not in nodes:
                problems.append(f"{what} {name!r} names missing node %{nid}")
    variables = {graph[i].name: graph[i] for i in graph.variables()}
    for name, nid in graph.updates.items():
        var = variables.get(name)
        if nid in nodes and var is not None and var.type != nodes[nid].type:
            problems.append(f"update {name!r} has type {nodes[nid].type}, "
                            f"variable has {var.type}")
    for nid, n in nodes.items():  # a region (a loop's body) is a graph of its own
        for k, region in enumerate(n.regions):
            try:
                verify_graph(region)
            except VerifyError as e:
                problems.append(f"in region {k} of node %{nid} ({n.op}): {e}")
    if problems:
        raise VerifyError("graph invariants violated:\n  " + "\n  ".join(problems))


def _check_const(graph: Graph, nid: int) -> list[str]:
    n = graph.nodes[nid]
    if nid in graph.consts:
        arr = np.asarray(graph.consts[nid])
        if tuple(arr.shape) != tuple(n.type.shape):
            return [f"const %{nid} has type {n.type} but a value of shape {arr.shape}"]
        return []
    v = n.attrs.get("value")
    if isinstance(v, str) and v.startswith("sha256:"):
        return []  # parsed from text: only the content hash is known
    return [f"const %{nid} has no value"]


def _find_cycle(graph: Graph) -> list[int]:
    """A cycle over node inputs (iterative DFS), or [] when the graph is acyclic."""
    state: dict[int, int] = {}  # 1: on the stack, 2: done
    for start in graph.nodes:
        if start in state:
            continue
        stack = [(start, iter(graph.nodes[start].inputs))]
        path = [start]
        state[start] = 1
        while stack:
            nid, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[nid] = 2
                continue
            s = state.get(nxt)
            if s == 1:
                return path[path.index(nxt):] + [nxt]
            if s is None:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(graph.nodes[nxt].inputs)))
    return []
