"""Dead code elimination: keep what outputs and updates need.

Kept: every ancestor of `graph.outputs` and `graph.updates` (declared inputs only when some
kept node uses them), plus the param/state node of every variable that has an update, so the
graph still declares the variables it writes. Everything else is removed.
"""

from __future__ import annotations

from runtime.ir import Graph


def eliminate_dead_code(graph: Graph) -> Graph:
    """A copy of `graph` without the nodes that no output or update depends on."""
    g = graph.copy()
    live: set[int] = set()
    work = list(g.outputs.values()) + list(g.updates.values())
    work += [nid for nid, n in g.nodes.items()
             if n.op in ("param", "state") and n.name in g.updates]
    while work:
        nid = work.pop()
        if nid in live:
            continue
        live.add(nid)
        work.extend(g.nodes[nid].inputs)
    for nid in reversed(g.topo_order()):  # users before their inputs
        if nid not in live:
            g.remove(nid)
    return g
