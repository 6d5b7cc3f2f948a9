"""Dead code elimination: keep what outputs and updates need.

Kept: every ancestor of `graph.outputs` and `graph.updates` (declared inputs only when some
kept node uses them), plus the param/state node of every variable that has an update, so the
graph still declares the variables it writes, and a region's args. Everything else is removed.
"""

from __future__ import annotations

from runtime.ir import Graph
from runtime.passes.regions import prune_loop


def eliminate_dead_code(graph: Graph) -> Graph:
    """A copy of `graph` without the nodes that no output or update depends on; loops lose
    the results, carried values and captured values nobody needs (`prune_loop`)."""
    g = graph.copy()
    _sweep(g)
    loops = [i for i in g.topo_order() if g[i].op == "loop"]
    for nid in reversed(loops):
        prune_loop(g, nid)
    if loops:
        _sweep(g)
    return g


def _sweep(g: Graph) -> None:
    written = [i for i in g.variables() if g[i].name in g.updates]
    live = set(g.topo_order(g.roots() + written)) | set(g.args())  # a region keeps its args
    for nid in reversed(g.topo_order()):  # users before their inputs
        if nid not in live:
            g.remove(nid)
