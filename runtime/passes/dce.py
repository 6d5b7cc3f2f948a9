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
    written = [i for i in g.variables() if g[i].name in g.updates]
    live = set(g.topo_order(g.roots() + written))
    for nid in reversed(g.topo_order()):  # users before their inputs
        if nid not in live:
            g.remove(nid)
    return g
