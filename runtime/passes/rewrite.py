"""A tiny pattern language for local rewrites and the one engine that applies rule tables.

Patterns are trees written as data:

- `Var("x")` matches any node; a Var used twice must match the same node.
- `Const(1.0)` matches a `const` node (value known) whose every element equals the value, or a
  `full` node with that fill value. In a replacement it emits a scalar const of the rewritten
  node's dtype.
- `(op, child, ..., {attr: spec})` matches a node of `op` whose inputs match the children in
  order. The optional trailing dict constrains attributes (defaults filled in): a literal must
  compare equal (canonically), an `Attr("a")` captures the value under "a" (the same Attr
  twice must see equal values).

A replacement is a tree of the same shape whose attribute specs are literals, `Attr`s
(captured values) or callables `(graph, binding) -> value`. A `Rule(before, after, when)`
may carry a guard `when(graph, binding) -> bool`. Bindings map Var names to node ids and
Attr names to values.

`rewrite` applies a rule table to a fixed point, bottom-up in topological order. A rewrite is
done only when the replacement's type equals the original node's type exactly (shape and
dtype), so `x * 1 -> x` never fires where the `1` broadcasts x to a bigger shape, and
`reshape(x) -> x` fires only for a same-shape reshape. The rewritten node keeps its id, role,
name, loc and `of` (a replacement that is a bare Var redirects the node's users instead); new
interior nodes take the rewritten node's role, loc and `of`, and reuse an identical existing
node when there is one. The engine stops after `max_iterations` sweeps or before creating
more than `max_new_nodes` nodes, and reports which limit stopped it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from runtime.ir import Graph, Role, TensorType, const_attr
from runtime.ops import REGISTRY
from runtime.ops.registry import ShapeError
from runtime.passes._util import attrs_key, canon, const_value, drop_orphans, full_attrs


@dataclass(frozen=True)
class Var:
    """Matches any node (binds its id)."""

    name: str


@dataclass(frozen=True)
class Const:
    """Matches a constant whose every element equals `value`; emits a scalar constant."""

    value: float


@dataclass(frozen=True)
class Attr:
    """Captures an attribute value in a pattern; stands for the captured value in a
    replacement."""

    name: str


Pattern = Any  # Var | Const | tuple[str, *Pattern, dict?]
Binding = dict[str, Any]
Guard = Callable[[Graph, Binding], bool]


class Rule(NamedTuple):
    """One row of a rule table: `before` is rewritten to `after` when `when` allows."""

    before: Pattern
    after: Pattern
    when: Guard | None = None

    def __str__(self) -> str:
        return f"{show(self.before)} -> {show(self.after)}"


@dataclass
class RewriteStats:
    """What one `rewrite` run did: sweeps, rewrites per rule, nodes created and which limit
    (if any) stopped it ("iterations" or "growth")."""

    iterations: int = 0
    rewrites: int = 0
    new_nodes: int = 0
    stopped: str | None = None
    by_rule: dict[str, int] = field(default_factory=dict)


def show(p: Pattern) -> str:
    """A pattern as text, e.g. `log(add(1.0, exp(x)))`."""
    if isinstance(p, Var):
        return p.name
    if isinstance(p, Const):
        return repr(p.value)
    op, children, attrs = _split(p)
    parts = [show(c) for c in children]
    parts += [f"{k}={_show_attr(v)}" for k, v in attrs.items()]
    return f"{op}({', '.join(parts)})"


def _show_attr(v: Any) -> str:
    if isinstance(v, Attr):
        return v.name
    return f"<{getattr(v, '__name__', 'fn')}>" if callable(v) else repr(v)


def _split(p: tuple) -> tuple[str, tuple, dict[str, Any]]:
    if p and isinstance(p[-1], dict):
        return p[0], tuple(p[1:-1]), p[-1]
    return p[0], tuple(p[1:]), {}


def check_rule(rule: Rule) -> None:
    """Reject malformed rules: unknown ops, a bare Var or Const as the pattern root, a
    replacement using a Var or Attr the pattern does not bind."""
    if not isinstance(rule.before, tuple):
        raise ValueError(f"rule {rule}: the pattern root must be an op")
    bound: set[str] = set()
    kinds: dict[str, type] = {}

    def name(n: str, kind: type) -> None:
        if kinds.setdefault(n, kind) is not kind:
            raise ValueError(f"rule {rule}: {n} names both a Var and an Attr")

    def walk(p: Pattern, replacement: bool) -> None:
        if isinstance(p, Var):
            name(p.name, Var)
            if replacement and p.name not in bound:
                raise ValueError(f"rule {rule}: {p.name} is not bound by the pattern")
            bound.add(p.name)
            return
        if isinstance(p, Const):
            return
        if not isinstance(p, tuple) or not p or not isinstance(p[0], str):
            raise ValueError(f"rule {rule}: bad pattern element {p!r}")
        op, children, attrs = _split(p)
        if op not in REGISTRY and op != "const":
            raise ValueError(f"rule {rule}: unknown op {op!r}")
        for v in attrs.values():
            if isinstance(v, Attr):
                name(v.name, Attr)
                if replacement and v.name not in bound:
                    raise ValueError(f"rule {rule}: attribute {v.name} is not bound")
                bound.add(v.name)
        for c in children:
            walk(c, replacement)

    walk(rule.before, False)
    walk(rule.after, True)


# ----------------------------------------------------------------------------- matching


def match(g: Graph, p: Pattern, nid: int, b: Binding, matched: list[int]) -> bool:
    """Match pattern `p` at node `nid`, extending binding `b` and the list of matched
    (non-Var) nodes; on failure `b` may hold partial bindings (callers copy)."""
    n = g.nodes[nid]
    if isinstance(p, Var):
        if p.name in b:
            return b[p.name] == nid
        b[p.name] = nid
        return True
    if isinstance(p, Const):
        if not _is_const(g, nid, p.value):
            return False
        matched.append(nid)
        return True
    op, children, attrs = _split(p)
    if n.op != op or len(n.inputs) != len(children):
        return False
    if attrs:
        have = full_attrs(n.op, n.attrs)
        for k, spec in attrs.items():
            if k not in have:
                return False
            if isinstance(spec, Attr):
                if spec.name in b:
                    if canon(b[spec.name]) != canon(have[k]):
                        return False
                else:
                    b[spec.name] = have[k]
            elif canon(spec) != canon(have[k]):
                return False
    matched.append(nid)
    return all(match(g, c, i, b, matched) for c, i in zip(children, n.inputs))


def _is_const(g: Graph, nid: int, value: float) -> bool:
    n = g.nodes[nid]
    if n.op == "full":
        v = full_attrs("full", n.attrs).get("value")
        return isinstance(v, (int, float)) and v == value
    arr = const_value(g, nid) if n.op == "const" else None
    if arr is None or arr.size == 0:
        return False
    if arr.size == 1:  # most constants: one number
        return bool(arr.reshape(-1)[0] == value)
    return bool(np.all(arr == value))


# ----------------------------------------------------------------------------- building


def _attr_value(spec: Any, g: Graph, b: Binding) -> Any:
    if isinstance(spec, Attr):
        return b[spec.name]
    if callable(spec):
        return spec(g, b)
    return spec


def _plan(g: Graph, p: Pattern, b: Binding, dtype: str) -> Any:
    """Resolve a replacement into a tree of concrete (op, attrs, children, type) items, or
    raise if an op's shape rule rejects it."""
    if isinstance(p, Var):
        return ("var", b[p.name], g.nodes[b[p.name]].type)
    if isinstance(p, Const):
        return ("const", p.value, TensorType(dtype, ()))
    op, children, attrs = _split(p)
    kids = [_plan(g, c, b, dtype) for c in children]
    resolved = full_attrs(op, {k: _attr_value(v, g, b) for k, v in attrs.items()})
    t = REGISTRY[op].shape(resolved, *(k[-1] for k in kids))
    return ("op", op, resolved, kids, t)


def _count_ops(item: Any) -> int:
    if item[0] == "op":
        return 1 + sum(_count_ops(k) for k in item[3])
    return 1 if item[0] == "const" else 0


class _Builder:
    """Emits planned replacement nodes, reusing identical existing nodes."""

    def __init__(self, g: Graph, root: int) -> None:
        self.g = g
        self.root = root
        r = g.nodes[root]
        self.role, self.loc, self.of = r.role, r.loc, r.of
        self.created = 0

    def emit(self, item: Any) -> int:
        g = self.g
        if item[0] == "var":
            return item[1]
        if item[0] == "const":
            arr = np.asarray(item[1], dtype=item[2].np_dtype())
            for nid in g.nodes:  # a scalar constant of that value may already exist
                n = g.nodes[nid]
                if n.op == "const" and n.type == item[2] and nid != self.root:
                    v = const_value(g, nid)
                    if v is not None and v.tobytes() == arr.tobytes():
                        return nid
            self.created += 1
            return g.add_const(arr, item[2], loc=self.loc)
        _, op, attrs, kids, t = item
        ins = tuple(self.emit(k) for k in kids)
        existing = self.find(op, ins, attrs, t)
        if existing is not None:
            return existing
        self.created += 1
        return g.add(op, ins, attrs, t, role=self.role, loc=self.loc, of=self.of)

    def find(self, op: str, ins: tuple[int, ...], attrs: dict, t: TensorType) -> int | None:
        g = self.g
        if REGISTRY[op].random:
            return None
        pool: Iterable[int] = g.user_set(ins[0]) if ins else g.nodes
        key = attrs_key(op, attrs)
        found = [nid for nid in pool if nid != self.root and g.nodes[nid].op == op
                 and g.nodes[nid].inputs == ins and g.nodes[nid].type == t
                 and attrs_key(op, g.nodes[nid].attrs) == key]
        return min(found, default=None)  # the first in id order


# ----------------------------------------------------------------------------- engine


DEFAULT_MAX_ITERATIONS = 32


def rewrite(graph: Graph, rules: Sequence[Rule], max_iterations: int = DEFAULT_MAX_ITERATIONS,
            max_new_nodes: int | None = None) -> tuple[Graph, RewriteStats]:
    """Apply `rules` to a copy of `graph` until nothing changes or a limit is reached.

    `max_new_nodes` defaults to max(64, number of nodes in `graph`)."""
    for r in rules:
        check_rule(r)
    g = graph.copy()
    stats = RewriteStats()
    limit = max(64, len(g.nodes)) if max_new_nodes is None else max_new_nodes
    by_op: dict[str, list[tuple[Rule, int, tuple]]] = {}
    for r in rules:
        by_op.setdefault(r.before[0], []).append((r, *_shallow(r.before)))
    for _ in range(max_iterations):
        stats.iterations += 1
        changed = False
        for nid in g.topo_order():
            n = g.nodes.get(nid)
            if n is None:
                continue
            for rule, arity, kids in by_op.get(n.op, ()):
                if len(n.inputs) != arity or any(
                        g.nodes[n.inputs[k]].op not in ops for k, ops in kids):
                    continue  # cannot match: the root's arity or an input's op differs
                outcome = _try(g, rule, nid, limit - stats.new_nodes)
                if outcome is None:
                    continue
                if outcome[0] < 0:
                    stats.stopped = "growth"
                    return g, stats
                stats.new_nodes += outcome[0]
                stats.rewrites += 1
                key = str(rule)
                stats.by_rule[key] = stats.by_rule.get(key, 0) + 1
                changed = True
                break
        if not changed:
            return g, stats
    stats.stopped = "iterations"
    return g, stats


def _shallow(p: Pattern) -> tuple[int, tuple[tuple[int, tuple[str, ...]], ...]]:
    """What a node must have for pattern `p` to match there, one level deep: its number of
    inputs and, for the inputs the pattern constrains, the ops they may have."""
    _op, children, _attrs = _split(p)
    kids = tuple((k, ("const", "full") if isinstance(c, Const) else (_split(c)[0],))
                 for k, c in enumerate(children) if not isinstance(c, Var))
    return len(children), kids


def rewrite_at(g: Graph, rules: Sequence[Rule], nid: int) -> int:
    """Rewrite the new node `nid` of `g` in place with the first of `rules` that applies, then
    the result again until none does; the id of the result. For builders that replace
    patterns as they emit them: the nodes a rewrite stops using are kept (the caller may
    still hold them; dead-code elimination removes them later)."""
    for _ in range(DEFAULT_MAX_ITERATIONS):
        op = g.nodes[nid].op
        for rule in rules:
            if rule.before[0] == op:
                outcome = _try(g, rule, nid, DEFAULT_MAX_ITERATIONS, keep=True)
                if outcome is not None and outcome[0] >= 0:
                    nid = outcome[1]
                    break
        else:
            return nid
    return nid


def _try(g: Graph, rule: Rule, nid: int, budget: int,
         keep: bool = False) -> tuple[int, int] | None:
    """Rewrite node `nid` with `rule`: None if it does not apply, else (the number of nodes
    created, or -1 if that would exceed `budget`; the node that now stands for `nid`).
    `keep`: leave the nodes the rewrite stops using in the graph."""
    b: Binding = {}
    matched: list[int] = []
    if not match(g, rule.before, nid, b, matched):
        return None
    if rule.when is not None and not rule.when(g, b):
        return None
    node = g.nodes[nid]
    try:
        plan = _plan(g, rule.after, b, node.type.dtype)
    except ShapeError:  # an operand combination the replacement's ops reject
        return None
    if plan[-1] != node.type:
        return None
    if _count_ops(plan) - (plan[0] == "op") > budget:
        return -1, nid
    if plan[0] == "var":
        if plan[1] == nid:
            return None
        g.redirect(nid, plan[1])
        if not keep:
            drop_orphans(g, [nid, *matched])
        return 0, plan[1]
    if plan[0] == "const":
        arr = np.asarray(plan[1], dtype=node.type.np_dtype())
        role = node.role if node.role in (Role.GRAD, Role.UPDATE) else Role.CONST
        g.replace_node(nid, op="const", inputs=(), attrs={"value": const_attr(arr)}, role=role)
        g.consts[nid] = arr
        if not keep:
            drop_orphans(g, [*node.inputs, *matched[1:]])
        return 0, nid
    bld = _Builder(g, nid)
    _, op, attrs, kids, _t = plan
    ins = tuple(bld.emit(k) for k in kids)
    if op == node.op and ins == node.inputs and attrs_key(op, attrs) == attrs_key(
            node.op, node.attrs):
        return None  # the replacement is the node itself
    g.replace_node(nid, op=op, inputs=ins, attrs=attrs)
    if not keep:
        drop_orphans(g, [*node.inputs, *matched[1:]])
    return bld.created, nid
