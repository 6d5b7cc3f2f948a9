"""Passes and regions: one walker that lets every pass see into loop bodies, and the two
rewrites that only loops have.

- `everywhere(pass)`: the pass applied to every region (innermost first), then to the graph.
  A region is a graph whose `arg` leaves and results (`outputs` "0", "1", ...) are its
  interface, so the ordinary passes apply to it unchanged. The body of a `fused_elementwise`
  node is the exception: it is the fusion pass's result, a kernel rather than a program, and
  passes leave it alone (fusing it again would nest it).
- `hoist_loop_invariants`: body nodes that depend only on captured values and constants are
  computed once, before the loop, and passed in as new captured values.
- `prune_loop`: a loop's unused stacked results, carried values nobody reads after the loop
  (and that the body needs only for themselves) and captured values the body no longer reads
  are dropped (part of `eliminate_dead_code`). An early-exit loop keeps its stop flag (and
  what it reads), a loop with a run-time trip count its count input.
"""

from __future__ import annotations

from collections.abc import Callable

from runtime.ir import Graph, OutputKind, Role
from runtime.ops import REGISTRY
from runtime.ops.control import loop_type
from runtime.ops.fused import FUSED

Pass = Callable[[Graph], Graph]


def everywhere(fn: Pass) -> Pass:
    """`fn` applied inside every region of a graph (innermost first) and then to the graph."""

    def run(graph: Graph) -> Graph:
        return fn(map_regions(graph, run))

    run.__name__ = getattr(fn, "__name__", "pass")
    return run


def map_regions(graph: Graph, fn: Pass) -> Graph:
    """A copy of `graph` whose nodes' regions (fused bodies excepted) are replaced by
    `fn(region)`."""
    if not any(n.regions and n.op != FUSED for n in graph.nodes.values()):
        return graph
    g = graph.copy()
    for nid, n in list(g.nodes.items()):
        if n.regions and n.op != FUSED:
            g.replace_node(nid, regions=tuple(fn(r) for r in n.regions))
    return g


# ---------------------------------------------------------------- loop-invariant code motion
def hoist_loop_invariants(graph: Graph) -> Graph:
    """A copy of `graph` in which each loop body's invariant nodes (reading only captured
    values and constants, and drawing no random numbers) run once, before the loop."""
    g = graph.copy()
    for nid in g.topo_order():
        if g[nid].op == "loop":
            _hoist(g, nid)
    return g


def _hoist(g: Graph, nid: int) -> None:
    node = g[nid]
    body = node.regions[0].copy()
    first_cap = 1 + node.attrs["n_carry"] + node.attrs["n_seq"]
    outer = {a: node.inputs[k - 1] for k, a in enumerate(body.args()) if k >= first_cap}
    invariant: list[int] = []
    inv = set(outer)
    for i in body.topo_order():
        n = body[i]
        opdef = REGISTRY.get(n.op)
        if n.op == "const":
            inv.add(i)
        elif (n.op != "arg" and opdef is not None and not opdef.random
              and all(j in inv for j in n.inputs)):
            inv.add(i)
            invariant.append(i)
    results = set(body.results())
    frontier = [i for i in invariant
                if i in results or any(u not in inv for u in body.users(i))]
    if not frontier:
        return
    env = dict(outer)
    for i in sorted(inv - set(outer) - set(invariant)):  # constants the hoisted nodes read
        n = body[i]
        env[i] = g.add("const", (), dict(n.attrs), n.type, role=Role.CONST, loc=n.loc)
        if i in body.consts:
            g.consts[env[i]] = body.consts[i]
    for i in invariant:
        n = body[i]
        env[i] = g.add(n.op, [env[j] for j in n.inputs], dict(n.attrs), n.type,
                       role=n.role, name=n.name, loc=n.loc, of=None, regions=n.regions)
    n_args = len(body.args())
    new_inputs = list(node.inputs)
    at = len(new_inputs) - node.attrs["dynamic"]  # after the captured values, before a count
    for k, i in enumerate(frontier):
        arg = body.add("arg", (), {"index": n_args + k}, body[i].type, role=Role.ARG,
                       name=body[i].name)
        body.redirect(i, arg)
        new_inputs.insert(at + k, env[i])
    _drop_dead(body)
    g.replace_node(nid, inputs=tuple(new_inputs), regions=(body,))


def _drop_dead(body: Graph) -> None:
    live = set(body.topo_order(body.roots())) | set(body.args())
    for i in reversed(body.topo_order()):
        if i not in live:
            body.remove(i)


# ---------------------------------------------------------------- pruning
def prune_loop(g: Graph, nid: int) -> None:
    """Drop what loop `nid` computes for nobody (see the module docstring); items are
    renumbered. Carried values are kept while the body reads them for another result."""
    node = g[nid]
    body = node.regions[0].copy()
    nc, ns = node.attrs["n_carry"], node.attrs["n_seq"]
    until, dynamic = int(node.attrs["until"]), int(node.attrs["dynamic"])
    n_in = len(node.inputs) - dynamic  # the inputs the body has args for
    items: dict[int, list[int]] = {}
    for u in g.users(nid):
        if g[u].op == "item":
            items.setdefault(g[u].attrs["index"], []).append(u)
    res = body.results()
    args = body.args()
    n_res = len(res)
    keep_res = {k for k in range(nc + until, n_res) if k in items} | set(range(nc, nc + until))
    keep_carry = {k for k in range(nc) if k in items}
    while True:  # a carry the kept results read must stay, with its own result
        need = _with_ancestors(body, [res[k] for k in keep_res | keep_carry])
        more = {k for k in range(nc) if args[1 + k] in need} - keep_carry
        if not more:
            break
        keep_carry |= more
    kept_res = sorted(keep_carry) + sorted(keep_res)
    need = _with_ancestors(body, [res[k] for k in kept_res])
    keep_in = sorted(keep_carry) + [nc + k for k in range(ns) if args[1 + nc + k] in need] + [
        k for k in range(nc + ns, n_in) if args[1 + k] in need] + list(range(n_in, n_in + dynamic))
    if len(kept_res) == n_res and len(keep_in) == len(node.inputs):
        return
    body.outputs = {str(j): res[k] for j, k in enumerate(kept_res)}
    body.output_kinds = dict.fromkeys(body.outputs, OutputKind.RESULT)
    _drop_dead(body)
    kept_args = [args[0]] + [args[1 + k] for k in keep_in if k < n_in]
    for a in args:
        if a not in kept_args:
            body.remove(a)
    for k, a in enumerate(kept_args):
        body.replace_node(a, attrs={"index": k})
    new_nc = len(keep_carry)
    new_ns = sum(1 for k in keep_in if nc <= k < nc + ns)
    attrs = {**node.attrs, "n_carry": new_nc, "n_seq": new_ns}
    types = [g[node.inputs[k]].type for k in keep_in]
    g.replace_node(nid, inputs=tuple(node.inputs[k] for k in keep_in), regions=(body,),
                   attrs=attrs, type=loop_type(attrs, types, body))
    for j, k in enumerate(kept_res):
        for u in items.get(k, ()):
            g.replace_node(u, attrs={**g[u].attrs, "index": j})


def _with_ancestors(g: Graph, roots: list[int]) -> set[int]:
    return set(roots).union(*(g.ancestors(r) for r in roots)) if roots else set()
