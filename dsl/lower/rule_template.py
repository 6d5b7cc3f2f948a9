"""An optimizer rule lowered once per parameter type and replayed for the other parameters.

Lowering a rule's body (`dsl.lower.optimizers`) walks its statements, scopes and coercions
for every parameter: half the compile time of a deep network. The nodes it emits for one
parameter depend on that parameter only through its node, its gradient's node and its state
variables' nodes, and on its type (shapes and dtypes are compile-time values a body may
branch on). So the first parameter of each type is lowered from the statements while the
emitted nodes are recorded (`Template`), and every later parameter of that type gets the
same nodes added again with those inputs substituted (`Template.replay`): the same ops,
attributes, types, roles and locations in the same order, so the graph is the one direct
lowering makes (the golden files check it).

The state declarations run from their statements for every parameter (an initial value may
read the parameter's own: `state s = param`), so a rule takes part when its `state`
statements come first in its body and nowhere else (`stated`); a recording that saw anything
a replay could not repeat exactly (a node with a region, a named node, a new variable)
is not kept, and that type is lowered from the statements every time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsl import ast as A
from runtime.ir import Graph, Role

VARIABLE_OPS = frozenset({"param", "state"})  # a body that makes one is not replayed


def stated(body: tuple[A.Stmt, ...]) -> tuple[tuple[A.StateDecl, ...], tuple[A.Stmt, ...]] | None:
    """(the leading `state` statements, the rest) of a rule body whose other statements
    declare no state, else None (such a rule is lowered from its statements each time)."""
    k = 0
    while k < len(body) and isinstance(body[k], A.StateDecl):
        k += 1
    if A.contains(body[k:], lambda n: isinstance(n, A.StateDecl)):
        return None
    return tuple(body[:k]), tuple(body[k:])


@dataclass
class Template:
    """The nodes a rule emitted for one parameter: `sources` maps that parameter's own nodes
    (itself, its gradient, its state variables by name suffix) to roles a replay fills in;
    `nodes` are the emitted node ids in order; `updates` the variables' new values."""

    sources: dict[int, str]  # node id -> "param", "grad" or "state:<suffix>"
    nodes: list[int]
    updates: dict[str, int]  # "param" or "state:<suffix>" -> node id

    def replay(self, graph: Graph, b: Any, inputs: dict[str, int]) -> dict[str, int]:
        """Emit the recorded nodes again with `inputs` ("param", "grad", "state:<suffix>" ->
        node id, of the recorded ones' types: the callers key templates by them, so every
        node's type is the recorded one and no shape rule runs again) in place of the
        recorded parameter's; returns the updates by the same keys."""
        m: dict[int, int] = {nid: inputs[role] for nid, role in self.sources.items()}
        nodes = graph.nodes
        for nid in self.nodes:
            n = nodes[nid]
            if n.op == "const":  # (the builder's cache shares small ones, as before)
                with b.context(loc=n.loc):
                    m[nid] = b.const(graph.consts[nid], n.type.dtype).id
            else:
                m[nid] = graph.add(n.op, [m.get(i, i) for i in n.inputs], n.attrs, n.type,
                                   role=n.role, loc=n.loc, of=m.get(n.of, n.of))
        return {k: m.get(nid, nid) for k, nid in self.updates.items()}


def record(graph: Graph, param: str, prefix: str, start: int, inputs: dict[str, int],
           updates: dict[str, int], variables_before: int, variables_after: int
           ) -> Template | None:
    """The template of a rule lowered for `param` (nodes from id `start` on; `inputs`: its
    "param", "grad" and "state:<suffix>" nodes; `updates` by variable name), or None when a
    replay could not repeat it exactly: the body declared a variable; its own nodes are not
    told apart from everything else (a gradient that is a constant shares the builder's
    cached constants; a node that is two of them); a node has a region or a name; or the
    body differentiated (`hessian`, `hvp`, `grad`: those nodes read the forward graph of this
    parameter, which a replay would not substitute)."""
    if variables_after != variables_before:
        return None
    ids = list(inputs.values())
    if len(set(ids)) != len(ids) or any(graph[i].op == "const" for i in ids):
        return None
    nodes = []
    for nid in range(start, graph.next_id):
        n = graph.nodes.get(nid)
        if n is None or (n.op == "input" and not n.inputs):
            continue  # removed, or a counter made on first use: later uses look it up
        if n.regions or n.name is not None or n.op in VARIABLE_OPS or n.role == Role.GRAD:
            return None
        nodes.append(nid)
    keyed = {}
    for var, nid in updates.items():
        if var == param:
            keyed["param"] = nid
        elif var.startswith(prefix):
            keyed["state:" + var[len(prefix):]] = nid
        else:
            return None
    return Template({nid: k for k, nid in inputs.items()}, nodes, keyed)
