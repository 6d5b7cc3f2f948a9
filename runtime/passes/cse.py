"""Common subexpression elimination.

Two nodes are one value when they have the same op, the same (ordered) input values, the same
attributes (compared canonically, defaults filled in) and the same type; two constants are one
when their dtype, shape and bytes agree. Random ops and input/param/state leaves are never
merged. Each class of equal nodes keeps its smallest id; the survivor keeps its own role, and
takes the name of the first named member if it has none.
"""

from __future__ import annotations

from typing import Any

from runtime.ir import Graph
from runtime.passes._util import VARIABLE_OPS, attrs_key, const_key, is_random


def merge_common_subexpressions(graph: Graph) -> Graph:
    """A copy of `graph` in which equal subexpressions are computed once."""
    g = graph.copy()
    label: dict[int, int] = {}  # node -> class label (the first member seen)
    classes: dict[Any, list[int]] = {}
    for nid in g.topo_order():
        n = g.nodes[nid]
        if n.op in VARIABLE_OPS or is_random(n.op):
            label[nid] = nid
            continue
        if n.op == "const":
            key: Any = const_key(g, n)
        else:
            key = (n.op, tuple(label[i] for i in n.inputs), attrs_key(n.op, n.attrs), n.type,
                   tuple(id(r) for r in n.regions))  # two loops are one if one body
        members = classes.setdefault(key, [])
        members.append(nid)
        label[nid] = members[0]

    losers: dict[int, int] = {}
    for members in classes.values():
        if len(members) < 2:
            continue
        survivor = min(members)
        named = [m for m in sorted(members) if g.nodes[m].name is not None]
        if g.nodes[survivor].name is None and named:
            g.replace_node(survivor, name=g.nodes[named[0]].name)
        for m in members:
            if m != survivor:
                losers[m] = survivor
    g.redirect_many(losers)
    for old in losers:
        g.remove(old)
    for nid, n in list(g.nodes.items()):  # gradient nodes keep pointing at a live forward node
        if n.of in losers:
            g.replace_node(nid, of=losers[n.of])
    return g
