"""Graphviz DOT of graphs (`to_dot`, `to_dot_many`): a box per node, labelled with its op
and type and coloured by its role, and each region drawn as a cluster of its own."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from runtime.ir import Graph, OutputKind, Role


def to_dot(g: Graph) -> str:
    """Graphviz DOT: one box per node labelled with op and type, edges labelled by position.
    A node with regions (a loop, a fused kernel) is followed by each region drawn as a cluster
    of its own nodes, with a dashed edge from the node to the cluster's results."""
    return to_dot_many([("", g)])


def to_dot_many(graphs: Iterable[tuple[str, Graph]]) -> str:
    """One DOT digraph of several named graphs (a stage's phases, a spec's procedures), each
    drawn as `to_dot` draws a graph inside a cluster labelled with its name; a single graph
    is drawn without a cluster."""
    graphs = list(graphs)
    out = ["digraph dslgraph {", "  rankdir=TB;", "  compound=true;",
           "  node [shape=box, fontname=monospace];"]
    counter = iter(range(1 << 62))
    if len(graphs) == 1:
        _dot_body(graphs[0][1], out, counter, "  ")
    else:
        for name, g in graphs:
            out.append(f"  subgraph cluster_{next(counter)} {{")
            out.append(f'    label="{name}"; fontsize=20; style=bold; color=black;')
            _dot_body(g, out, counter, "    ")
            out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


_DOT_COLORS = {Role.INPUT: "lightblue", Role.PARAM: "khaki", Role.STATE: "plum",
               Role.CONST: "lightgrey", Role.GRAD: "salmon", Role.UPDATE: "palegreen",
               Role.ARG: "lightcyan"}


def _dot_body(g: Graph, out: list[str], counter: Iterator[int], pad: str) -> str | None:
    """Append `g`'s nodes, edges and outputs (its regions as nested clusters); the DOT id of
    its first output."""
    order = g.topo_order()
    ids = {i: f"n{next(counter)}" for i in order}
    for k, i in enumerate(order):
        n = g.nodes[i]
        label = f"%{k} {n.op}\\n{n.type}"
        if n.name:
            label += f"\\n{n.name}"
        color = _DOT_COLORS.get(n.role, "white")
        out.append(f'{pad}{ids[i]} [label="{label}", style=filled, fillcolor={color}];')
        for r, region in enumerate(n.regions):
            cluster = f"cluster_{next(counter)}"
            out.append(f"{pad}subgraph {cluster} {{")
            out.append(f'{pad}  label="{n.op} %{k} region {r}"; style=rounded; color=grey50;')
            first = _dot_body(region, out, counter, pad + "  ")
            out.append(f"{pad}}}")
            if first:
                out.append(f"{pad}{first} -> {ids[i]} [style=dashed, ltail={cluster}];")
    for i in order:
        for pos, j in enumerate(g.nodes[i].inputs):
            out.append(f'{pad}{ids[j]} -> {ids[i]} [label="{pos}"];')
    first = None
    for name, nid in sorted(g.outputs.items(), key=lambda kv: _dot_sort_key(g, kv[0])):
        oid = f"out_{next(counter)}_{_dot_id(name)}"
        kind = g.output_kinds.get(name)
        label = f"result {name}" if kind == OutputKind.RESULT else name
        out.append(f'{pad}{oid} [label="{label}", shape=ellipse];')
        out.append(f"{pad}{ids[nid]} -> {oid};")
        first = first or oid
    return first


def _dot_sort_key(g: Graph, name: str) -> tuple[int, str]:
    """Region results in their numeric order, other outputs by name."""
    if g.output_kinds.get(name) == OutputKind.RESULT and name.isdigit():
        return (0, f"{int(name):09d}")
    return (1, name)


def _dot_id(name: str) -> str:
    return re.sub(r"\W", "_", name)
