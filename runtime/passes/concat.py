"""`concat_padded_slices`: a sum of zero-padded slices that tile one axis is their concatenation.

The gradient of `split` (and of any set of slices that tile an axis: the gates of an LSTM
cell, q, k and v of attention) arrives as one `index_put` per slice, each a full-size array of
zeros with the slice's gradient written in, added up. When the slices are disjoint and cover
the axis, that sum is `concat` of the slice gradients along the axis: one copy instead of a
zero fill, a write and an add per slice. Values are the same (x + 0 = x; a -0.0 comes out as
-0.0 instead of +0.0).
"""

from __future__ import annotations

from typing import Any

from runtime.ir import Graph

__all__ = ["concat_padded_slices"]


def concat_padded_slices(graph: Graph) -> Graph:
    """A copy of `graph` with each sum of `index_put`s that tile one axis replaced by a
    `concat` of the written values."""
    g = graph.copy()
    roots = set(g.roots())
    for nid in reversed(g.topo_order()):  # outermost adds first: a tree is replaced whole
        n = g.nodes.get(nid)
        if n is None or n.op != "add":
            continue
        leaves: list[int] = []
        if not _tree(g, nid, n.type, leaves, roots, root=True):
            continue
        pieces = _tiling(g, leaves, n.type)
        if pieces is None:
            continue
        axis, values = pieces
        g.replace_node(nid, op="concat", inputs=tuple(values), attrs={"axis": axis})
        _drop_unused(g, leaves + list(n.inputs), roots)
    return g


def _tree(g: Graph, nid: int, t: Any, leaves: list[int], roots: set[int],
          root: bool = False) -> bool:
    """Collect the `index_put` leaves of the add tree at `nid` (inner adds used only by it)."""
    n = g[nid]
    if n.op == "index_put" and n.type == t:
        leaves.append(nid)
        return True
    if n.op != "add" or n.type != t or (not root and (g.n_users(nid) != 1 or nid in roots)):
        return False
    return all(_tree(g, i, t, leaves, roots) for i in n.inputs)


def _tiling(g: Graph, leaves: list[int], t: Any) -> tuple[int, list[int]] | None:
    """(axis, values in order) when the leaves write disjoint slices covering one axis."""
    if len(leaves) < 2 or len(set(leaves)) != len(leaves):
        return None
    shape = tuple(t.shape)
    spans: list[tuple[int, int, int]] = []
    axis = None
    for i in leaves:
        n = g[i]
        index = n.attrs.get("index", ())
        if tuple(n.attrs.get("shape", ())) != shape or len(index) > len(shape):
            return None
        cut = None
        for k, item in enumerate(index):
            if item[0] != "s" or item[3] not in (None, 1):
                return None
            if item[1] in (None, 0) and (item[2] is None or item[2] == shape[k]):
                continue  # the whole axis
            if cut is not None or not isinstance(shape[k], int):
                return None
            lo, hi, _ = slice(item[1], item[2]).indices(shape[k])
            cut = (k, lo, hi)
        if cut is None:
            return None
        if axis is None:
            axis = cut[0]
        elif cut[0] != axis:
            return None
        spans.append((cut[1], cut[2], n.inputs[0]))
    spans.sort()
    end = 0
    for lo, hi, _ in spans:
        if lo != end or hi <= lo:
            return None
        end = hi
    if axis is None or end != shape[axis]:
        return None
    return axis, [v for _, _, v in spans]


def _drop_unused(g: Graph, nids: list[int], roots: set[int]) -> None:
    work = list(nids)
    while work:
        i = work.pop()
        n = g.nodes.get(i)
        if n is None or i in roots or g.n_users(i) or n.op in ("input", "param", "state", "arg"):
            continue
        g.remove(i)
        work.extend(n.inputs)
