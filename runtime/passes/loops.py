"""`restructure_loops`: work that a run-time loop does once per iteration but that needs no
carried value runs once over whole sequences instead, before or after the loop.

- Stacked invariants: a stacked result that is a captured value (the same at every iteration;
  a forward loop keeps the weights its backward loop reads) becomes a broadcast of that value,
  a view; a sequence input that is such a broadcast becomes a captured value again, and
  `hoist_loop_invariants` then moves what the body computes from it out of the loop.
- Sequence maps: matrix products that read only sequence slices, captured values and
  constants (the input projection x_t W of a recurrent cell), with what they read, run once
  over the whole sequences before the loop (matmul, elementwise ops, transpose, reshape, with a
  leading time axis), and the body reads slices of the result.
- Sums of invariants: a sum of per-iteration terms and several captured values or constants
  (h U + x_t W + b_ih + b_hh) adds the latter first, and their sum moves out of the loop.
- Sums after the loop: a carried value that only accumulates, c' = c + v (the gradients of a
  cell's weights in a backward loop), is computed after the loop from stacked terms:
  Σ_t a_t b_t (matrices) as one `tensordot` over the stacked operands, Σ_t sum_to(u_t) as one
  `sum_to` of the stacked u, through transposes and sums of such terms.

Loops with a run-time trip count or an early exit keep their sums and stacked values (rows
they do not run are zeros). The new products and transposes are tidied by the simplification
rules (`runtime.passes.rules`) and merged with equal nodes. Sums change order, so values agree
to rounding.
"""

from __future__ import annotations

from typing import Any

from runtime.ir import Graph, OutputKind, Role, TensorType
from runtime.ops import REGISTRY, ShapeError
from runtime.ops.control import loop_type
from runtime.ops.fused import FUSED
from runtime.passes._util import infer_type
from runtime.passes.cse import merge_common_subexpressions
from runtime.passes.regions import hoist_loop_invariants
from runtime.passes.rewrite import rewrite
from runtime.passes.rules import SIMPLIFY_RULES

__all__ = ["restructure_loops"]


def restructure_loops(graph: Graph) -> Graph:
    """A copy of `graph` with its loops' sequence-wise work moved out (see the module)."""
    if not any(n.op == "loop" for n in graph.nodes.values()):
        return graph.copy()
    g = graph.copy()
    loops = lambda: [i for i in g.topo_order() if g[i].op == "loop"]  # noqa: E731
    changed = False
    for nid in loops():
        changed |= _unstack_invariants(g, nid)
    captured = False
    for nid in loops():
        captured |= _capture_broadcasts(g, nid)
    regrouped = False
    for nid in loops():
        regrouped |= _regroup_sums(g, nid)
    if captured or regrouped:
        g = hoist_loop_invariants(g)
    changed |= regrouped
    for nid in loops():
        changed |= _hoist_sequence_maps(g, nid)
    for nid in loops():
        changed |= _sum_after_loop(g, nid)
    if changed or captured:
        g = merge_common_subexpressions(rewrite(g, SIMPLIFY_RULES)[0])
    return g


class _Loop:
    """A loop node's layout: inputs, body args and results by kind."""

    def __init__(self, g: Graph, nid: int) -> None:
        self.g, self.nid = g, nid
        node = g[nid]
        self.node = node
        self.body = node.regions[0]
        a = node.attrs
        self.nc, self.ns = a["n_carry"], a["n_seq"]
        self.until, self.dynamic = int(a["until"]), int(a["dynamic"])
        self.length = a["length"]
        self.fixed = not (self.until or self.dynamic)  # every row of a stacked value written
        self.args = self.body.args()
        self.results = self.body.results()
        self.first_y = self.nc + self.until
        self.n_in = len(node.inputs) - self.dynamic
        self.carry_args = self.args[1:1 + self.nc]
        self.seq_args = self.args[1 + self.nc:1 + self.nc + self.ns]
        self.cap_args = self.args[1 + self.nc + self.ns:]

    def outer(self, arg: int) -> int:
        """The loop input an arg of the body reads (the sequence itself for a slice)."""
        return self.node.inputs[self.body[arg].attrs["index"] - 1]

    def items(self, k: int) -> list[int]:
        return [u for u in self.g.users(self.nid)
                if self.g[u].op == "item" and self.g[u].attrs["index"] == k]

    def rebuild(self, body: Graph, inputs: list[int], n_seq: int, args: list[int]) -> None:
        """Replace the loop node: `args` are the body's args in their new order."""
        for k, a in enumerate(args):
            body.replace_node(a, attrs={"index": k})
        attrs = {**self.node.attrs, "n_seq": n_seq}
        types = [self.g[i].type for i in inputs]
        self.g.replace_node(self.nid, inputs=tuple(inputs), regions=(body,), attrs=attrs,
                            type=loop_type(attrs, types, body))


def _add(g: Graph, like: int, op: str, inputs: list[int], attrs: dict[str, Any]) -> int:
    """A node after loop `like` (its role and `of`), typed by the op's shape rule."""
    n = g[like]
    t = infer_type(op, attrs, [g[i].type for i in inputs])
    return g.add(op, inputs, attrs, t, role=n.role if n.role != Role.CONST else Role.FORWARD,
                 loc=n.loc, of=n.of)


def _stacked_type(t: TensorType, length: Any) -> TensorType:
    return TensorType(t.dtype, (length, *t.shape))


# ---------------------------------------------------------------- stacked invariants
def _unstack_invariants(g: Graph, nid: int) -> bool:
    lp = _Loop(g, nid)
    if not lp.fixed:
        return False
    caps = set(lp.cap_args)
    done = False
    for k in range(lp.first_y, len(lp.results)):
        r = lp.results[k]
        users = lp.items(k)
        if r not in caps or not users:
            continue
        v = lp.outer(r)
        shape = g[v].type.shape
        one = _add(g, users[0], "reshape", [v], {"shape": (1, *shape)})
        rows = _add(g, users[0], "broadcast_to", [one], {"shape": (lp.length, *shape)})
        g.redirect_many({u: rows for u in users})
        done = True
    return done


def _capture_broadcasts(g: Graph, nid: int) -> bool:
    """Sequence inputs that are one value broadcast along the time axis become captured."""
    lp = _Loop(g, nid)
    moved: list[tuple[int, int]] = []  # (seq position, captured value)
    for j in range(lp.ns):
        s = g[lp.node.inputs[lp.nc + j]]
        if s.op != "broadcast_to":
            continue
        x = g[s.inputs[0]]
        rest = s.type.shape[1:]
        if x.type.shape != (1, *rest):
            continue
        if x.op == "reshape" and g[x.inputs[0]].type.shape == rest:
            v = x.inputs[0]
        else:
            v = _add(g, s.id, "reshape", [x.id], {"shape": rest})
        moved.append((j, v))
    if not moved:
        return False
    body = lp.body.copy()
    gone = {j for j, _ in moved}
    ins = list(lp.node.inputs)
    seqs = [ins[lp.nc + j] for j in range(lp.ns) if j not in gone]
    inputs = (ins[:lp.nc] + seqs + ins[lp.nc + lp.ns:lp.n_in] + [v for _, v in moved]
              + ins[lp.n_in:])
    args = ([lp.args[0], *lp.carry_args] + [a for j, a in enumerate(lp.seq_args) if j not in gone]
            + lp.cap_args + [lp.seq_args[j] for j, _ in moved])
    lp.rebuild(body, inputs, lp.ns - len(moved), args)
    return True


# ---------------------------------------------------------------- sequence maps
_SHIFTED = ("matmul", "transpose", "reshape")


def _batched_attrs(n: Any, length: Any) -> dict[str, Any] | None:
    """The attributes of node `n` applied to its operands stacked along a new first axis."""
    if n.op == "transpose":
        r = n.type.rank
        axes = n.attrs.get("axes")
        perm = tuple(range(r))[::-1] if axes is None else tuple(a % r for a in axes)
        return {**n.attrs, "axes": (0, *(p + 1 for p in perm))}
    if n.op == "reshape":
        return {**n.attrs, "shape": (length, *n.attrs["shape"])}
    return dict(n.attrs)


def _batchable(body: Graph, n: Any, seq: set[int]) -> bool:
    """Whether node `n` applied to stacked sequence operands (a new first axis) and the same
    invariant operands computes every iteration's value at once."""
    opdef = REGISTRY.get(n.op)
    if opdef is None or opdef.random or n.regions or opdef.forward is None or n.op == FUSED:
        return False
    ranks = [(body[i].type.rank, i in seq) for i in n.inputs]
    r = n.type.rank
    if n.op == "matmul":  # stacked matrices against matrices (no 1-D operands)
        return all(k >= 2 for k, _ in ranks) and all(
            k == r if s else k == 2 for k, s in ranks)
    if n.op in ("transpose", "reshape"):
        return True
    # elementwise: a stacked operand must have the result's rank (its time axis leads)
    return opdef.elementwise and all(k == r for k, s in ranks if s)


def _sequence_values(body: Graph, lp: _Loop, inv: set[int]) -> set[int]:
    """The body's sequence slices and the nodes computed from them (and invariants) alone
    that can run over whole sequences."""
    seq = set(lp.seq_args)
    for i in body.topo_order():
        n = body[i]
        if n.op in ("arg", "const") or not n.inputs:
            continue
        if not all(j in seq or j in inv for j in n.inputs) or not any(j in seq for j in n.inputs):
            continue
        if _batchable(body, n, seq):
            seq.add(i)
    return seq


def _regroup_sums(g: Graph, nid: int) -> bool:
    """Sums in the body mixing per-iteration terms with two or more invariant ones (captured
    values, constants: h U + x_t W + b_ih + b_hh) add the invariant ones first, so that
    `hoist_loop_invariants` computes their sum before the loop: h U + x_t W + (b_ih + b_hh).
    The terms are reassociated (rounding may differ)."""
    lp = _Loop(g, nid)
    body = lp.body.copy()
    inv = set(lp.cap_args) | {i for i, n in body.nodes.items() if n.op == "const"}
    results = set(body.results())

    def inner(i: int) -> bool:  # an add only its one add user reads
        users = body.users(i)
        return (body[i].op == "add" and len(users) == 1 and i not in results
                and body[users[0]].op == "add")

    changed = False
    for r in body.topo_order():
        n = body.nodes.get(r)
        if n is None or n.op != "add" or inner(r) or not n.type.is_float:
            continue
        leaves: list[int] = []
        stack = [r]
        while stack:  # left to right
            i = stack.pop()
            if i == r or inner(i):
                stack.extend(reversed(body[i].inputs))
            else:
                leaves.append(i)
        fixed = [i for i in leaves if i in inv]
        rest = [i for i in leaves if i not in inv]
        if len(fixed) < 2 or not rest:
            continue
        part = _sum(body, fixed, n)
        other = _sum(body, rest, n)
        if part is None or other is None:
            continue
        if infer_type("add", {}, [body[other].type, body[part].type]) != n.type:
            continue
        body.replace_node(r, inputs=(other, part))
        changed = True
    if changed:
        _drop_dead(body)
        lp.rebuild(body, list(lp.node.inputs), lp.ns, list(lp.args))
    return changed


def _sum(body: Graph, terms: list[int], like: Any) -> int | None:
    """The sum of `terms` from left to right, as new add nodes of `body` (one term: itself)."""
    acc = terms[0]
    for i in terms[1:]:
        try:
            t = infer_type("add", {}, [body[acc].type, body[i].type])
        except ShapeError:
            return None
        acc = body.add("add", [acc, i], {}, t, role=like.role, loc=like.loc)
    return acc


def _hoist_sequence_maps(g: Graph, nid: int) -> bool:
    lp = _Loop(g, nid)
    if not lp.seq_args:
        return False
    body = lp.body.copy()
    inv = set(lp.cap_args) | {i for i, n in body.nodes.items() if n.op == "const"}
    seq = _sequence_values(body, lp, inv)
    # only matrix products and what they read move: one large product is faster than many
    # small ones, but an elementwise op over whole sequences streams them through memory
    # where the loop finds each slice in cache
    products = [i for i in seq if body[i].op == "matmul"]
    seq = {i for i in seq if i in lp.seq_args} | set(products).union(
        *(body.ancestors(i) & seq for i in products))
    env: dict[int, int] = {}  # body node -> outer node (stacked for sequence values)
    for a in lp.seq_args + lp.cap_args:
        env[a] = lp.outer(a)
    order = body.topo_order()
    results = set(lp.results)
    frontier = [i for i in order if i in seq and body[i].op != "arg"
                and (i in results or any(u not in seq for u in body.users(i)))]
    if not frontier:
        return False
    # the stacked values, built outside in body order (a const operand is copied out)
    made: dict[int, int] = {}
    need = set()
    stack = list(frontier)
    while stack:
        i = stack.pop()
        if i in need or body[i].op == "arg":
            continue
        need.add(i)
        stack.extend(body[i].inputs)
    try:
        for i in order:
            if i not in need:
                continue
            n = body[i]
            if n.op == "const":
                c = g.add("const", (), dict(n.attrs), n.type, role=Role.CONST, loc=n.loc)
                if i in body.consts:
                    g.consts[c] = body.consts[i]
                env[i] = c
                continue
            attrs = _batched_attrs(n, lp.length)
            ins = [env[j] for j in n.inputs]
            t = infer_type(n.op, attrs, [g[j].type for j in ins])
            if t != _stacked_type(n.type, lp.length):
                raise ShapeError(f"{n.op}: stacked type {t}")
            env[i] = made[i] = g.add(n.op, ins, attrs, t, role=lp.node.role, name=n.name,
                                     loc=n.loc, of=lp.node.of)
    except ShapeError:  # an op whose stacked form this pass got wrong: leave the loop alone
        for i in sorted(made.values(), reverse=True):
            if not g.users(i):
                g.remove(i)
        return False
    new_args = []
    for i in frontier:
        a = body.add("arg", (), {"index": -1}, body[i].type, role=Role.ARG, name=body[i].name)
        body.redirect(i, a)
        new_args.append(a)
    _drop_dead(body)
    ins = list(lp.node.inputs)
    inputs = (ins[:lp.nc + lp.ns] + [env[i] for i in frontier] + ins[lp.nc + lp.ns:])
    args = [lp.args[0], *lp.carry_args, *lp.seq_args, *new_args, *lp.cap_args]
    lp.rebuild(body, inputs, lp.ns + len(frontier), args)
    if lp.fixed:  # a stacked slice of a sequence is the sequence
        lp = _Loop(g, nid)
        for k in range(lp.first_y, len(lp.results)):
            r = lp.results[k]
            if r in lp.seq_args:
                g.redirect_many({u: lp.outer(r) for u in lp.items(k)})
    return True


def _drop_dead(body: Graph) -> None:
    live = set(body.topo_order(body.roots())) | set(body.args())
    for i in reversed(body.topo_order()):
        if i not in live:
            body.remove(i)


# ---------------------------------------------------------------- sums after the loop
def _sum_after_loop(g: Graph, nid: int) -> bool:
    lp = _Loop(g, nid)
    if not lp.fixed or not lp.nc:
        return False
    body = lp.body
    results = lp.results
    sums: list[tuple[int, Any]] = []  # (carry index, recipe of Σ_t v_t)
    for j in range(lp.nc):
        c, r = lp.carry_args[j], results[j]
        n = body[r]
        if (n.op != "add" or body.users(c) != [r] or results.count(r) != 1 or body.users(r)
                or not n.type.is_float or not lp.items(j)):
            continue
        a, b = n.inputs
        v = b if a == c else a if b == c else None
        if v is None or v == c or body[v].type != n.type:
            continue
        recipe = _total(body, v, set(lp.seq_args), set(lp.carry_args))
        if recipe is not None:
            sums.append((j, recipe))
    if not sums:
        return False
    # the values to stack: new results of the body (sequence slices are the sequences)
    body = body.copy()
    wanted: list[int] = []
    for _, recipe in sums:
        _stacks(recipe, wanted)
    new = [i for i in dict.fromkeys(wanted) if i not in lp.seq_args]
    res = list(results)
    for j, _ in sums:  # the carry passes through; the accumulating add is dropped
        res[j] = lp.carry_args[j]
    body.outputs = {str(k): i for k, i in enumerate(res + new)}
    body.output_kinds = dict.fromkeys(body.outputs, OutputKind.RESULT)
    _drop_dead(body)
    args = list(lp.args)
    lp.rebuild(body, list(lp.node.inputs), lp.ns, args)
    node = g[nid]
    outer: dict[int, int] = {a: lp.outer(a) for a in lp.seq_args}
    for k, i in enumerate(new):
        outer[i] = g.add("item", [nid], {"index": len(res) + k}, node.type.items[len(res) + k],
                         role=node.role, loc=node.loc, of=node.of)
    for j, recipe in sums:
        total = _build(g, nid, recipe, outer)
        init = lp.node.inputs[j]
        if not _is_zeros(g, init):
            total = _add(g, nid, "add", [init, total], {})
        g.redirect_many({u: total for u in lp.items(j)})
    return True


def _total(body: Graph, v: int, seqs: set[int], carries: set[int]) -> Any:
    """A recipe for Σ_t v_t from stacked values (`_stacked`), or None: ("transpose", axes,
    r), ("sum_to", shape, stacked u, leading axes of u it sums), ("product", stacked a,
    stacked b) (Σ_t a_t b_t of matrices), ("add", r1, r2)."""
    n = body[v]
    if n.op == "transpose":
        inner = _total(body, n.inputs[0], seqs, carries)
        return None if inner is None else ("transpose", n.attrs.get("axes"), inner)
    if n.op == "add" and all(body[i].type == n.type for i in n.inputs):
        parts = [_total(body, i, seqs, carries) for i in n.inputs]
        return None if None in parts else ("add", *parts)
    if n.op == "sum_to":
        u = _stacked(body, n.inputs[0], seqs, carries)
        lead = body[n.inputs[0]].type.rank - len(n.attrs["shape"])
        return None if u is None else ("sum_to", n.attrs["shape"], u, lead)
    if n.op == "matmul" and all(body[i].type.rank == 2 for i in n.inputs):
        a, b = (_stacked(body, i, seqs, carries) for i in n.inputs)
        return None if a is None or b is None else ("product", a, b)
    return None


def _stacked(body: Graph, x: int, seqs: set[int], carries: set[int]) -> Any:
    """A recipe for the values of `x` at every iteration, stacked, or None: ("stack", x) for
    a value that differs per iteration (a sequence slice, a carry or a computed node; not the
    index, a captured value or a constant), ("transposed", axes, r) for a transpose of one
    (done once, outside)."""
    n = body[x]
    if n.op == "transpose":
        inner = _stacked(body, n.inputs[0], seqs, carries)
        if inner is not None:
            r = n.type.rank
            axes = n.attrs.get("axes")
            perm = tuple(range(r))[::-1] if axes is None else tuple(a % r for a in axes)
            return ("transposed", (0, *(p + 1 for p in perm)), inner)
    if x in seqs or x in carries or n.op not in ("arg", "const"):
        return ("stack", x)
    return None


_RECIPES = ("stack", "transposed", "transpose", "sum_to", "product", "add")


def _stacks(recipe: Any, out: list[int]) -> None:
    if recipe[0] == "stack":
        out.append(recipe[1])
    else:
        for part in recipe[1:]:
            if isinstance(part, tuple) and part and part[0] in _RECIPES:
                _stacks(part, out)


def _build(g: Graph, nid: int, recipe: Any, outer: dict[int, int]) -> int:
    kind = recipe[0]
    if kind == "stack":
        return outer[recipe[1]]
    if kind in ("transpose", "transposed"):
        return _add(g, nid, "transpose", [_build(g, nid, recipe[2], outer)], {"axes": recipe[1]})
    if kind == "sum_to":  # each iteration's own sum first, then over the iterations
        u = _build(g, nid, recipe[2], outer)
        if recipe[3]:
            u = _add(g, nid, "sum", [u], {"axis": tuple(range(1, 1 + recipe[3])),
                                          "keepdims": False})
        return _add(g, nid, "sum_to", [u], {"shape": recipe[1]})
    if kind == "add":
        return _add(g, nid, "add", [_build(g, nid, r, outer) for r in recipe[1:]], {})
    # Σ_t a_t b_t, a_t [K, M], b_t [M, N]: contract the time axis and M at once
    a = _add(g, nid, "transpose", [_build(g, nid, recipe[1], outer)], {"axes": (1, 0, 2)})
    return _add(g, nid, "tensordot", [a, _build(g, nid, recipe[2], outer)], {"axes": 2})


def _is_zeros(g: Graph, nid: int) -> bool:
    """A `full` of +0.0 (adding it changes nothing)."""
    n = g[nid]
    return n.op == "full" and repr(n.attrs.get("value")) in ("0.0", "0")
