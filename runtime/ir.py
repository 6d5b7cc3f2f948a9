"""The graph IR: typed nodes with ordered inputs, their networkx view, and their text form.

A `Graph` owns `Node`s (id, op, ordered inputs, attributes, result type, `Role`, name, span,
`of` = the forward node a gradient node differentiates) and names its outputs, each with an
`OutputKind`. A users index (node -> the nodes that
read it) serves traversal; `to_networkx` gives users and tools a networkx DiGraph. networkx is
imported only there: importing it costs more than parsing and lowering a spec together, and
`dslrun check` must start fast. `to_text` prints the text form (deterministic ids and order,
a type on every value, attribute defaults filled in from the `defaults` it is given: the
canonical text is `runtime.ops.to_text`, which passes the op registry's) and `parse_text`
reads it back. Nothing here depends on which other modules were imported.
"""

from __future__ import annotations

import ast as pyast
import functools
import gc
import hashlib
import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime import dtypes
from runtime.dtypes import DTYPES

if TYPE_CHECKING:
    import networkx as nx

Dim = int | str
LEAF_OPS = ("input", "param", "state", "const", "arg")  # "arg": a region's inputs


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for the block (nested uses are no-ops).
    Compiling and planning a large graph create hundreds of thousands of long-lived objects
    (nodes, attribute dicts, kernels) and few cycles; each full collection walks all of them,
    which made compiling the step of a 1,024-layer MLP 1.7 times slower."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def with_gc_paused(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run under `gc_paused()`."""

    @functools.wraps(fn)
    def run(*args: Any, **kw: Any) -> Any:
        with gc_paused():
            return fn(*args, **kw)
    return run


class IRError(Exception):
    """A malformed graph or graph text (a bug or a bad golden file, not a user mistake)."""


class Role(StrEnum):
    """What a node is for: a computing node is part of the forward computation, of a gradient
    or of an update (a variable's new value); a leaf's role is its op. Members are the strings
    the text prints (`Role.GRAD == "grad"`)."""

    FORWARD = "forward"
    GRAD = "grad"
    UPDATE = "update"
    INPUT = "input"
    PARAM = "param"
    STATE = "state"
    CONST = "const"
    ARG = "arg"


class OutputKind(StrEnum):
    """What a named output of a graph is: an objective, a metric, a user output, a gradient,
    an optimizer's learning rate, or (in a region) a result. Members are the strings the text
    prints."""

    OBJECTIVE = "objective"
    METRIC = "metric"
    OUTPUT = "output"
    GRAD = "grad"
    LR = "lr"
    RESULT = "result"


@dataclass(frozen=True)
class TensorType:
    """dtype (a name of `runtime.dtypes`: 'f32', 'i64', ...) and shape; a dim is an int or a
    symbol such as 'B'."""

    dtype: str
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return dtypes.is_float(self.dtype)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    def np_dtype(self) -> np.dtype:
        return dtypes.np_dtype(self.dtype)

    def concrete(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with symbols replaced from `dims`."""
        return concrete_dims(self.shape, dims)


def concrete_dims(shape: Iterable[Any], dims: Mapping[str, int]) -> tuple[int, ...]:
    """`shape` with its symbolic dims replaced from `dims`."""
    try:
        return tuple(dims[d] if isinstance(d, str) else d for d in shape)
    except KeyError as e:
        raise IRError(f"no value for symbolic dimension {e.args[0]!r}") from None


# Node attributes that may hold symbolic dims (a shape tuple, or one dim as in `size`).
SHAPE_ATTRS = ("shape", "size", "length")


def attr_symbols(attrs: Mapping[str, Any]) -> set[str]:
    """The symbolic dims in a node's shape attributes."""
    out: set[str] = set()
    for k in SHAPE_ATTRS:
        v = attrs.get(k)
        if isinstance(v, str):
            out.add(v)
        elif isinstance(v, tuple | list):
            out.update(d for d in v if isinstance(d, str))
    return out


def concrete_attrs(attrs: Mapping[str, Any], dims: Mapping[str, int]) -> dict[str, Any]:
    """`attrs` with the symbolic dims of its shape attributes replaced from `dims`."""
    out = dict(attrs)
    for k in SHAPE_ATTRS:
        v = out.get(k)
        if isinstance(v, str):
            out[k] = concrete_dims((v,), dims)[0]
        elif isinstance(v, tuple):
            out[k] = concrete_dims(v, dims)
    return out


@dataclass(frozen=True)
class TupleType:
    """The type of a node with several results (a loop): one TensorType per result, read
    with `item {index=k}`."""

    items: tuple[TensorType, ...]

    def __str__(self) -> str:
        return "(" + ", ".join(str(t) for t in self.items) + ")"


Type = TensorType | TupleType


def parse_type(text: str) -> Type:
    text = text.strip()
    if text.startswith("("):
        inner = text[1:-1].strip()
        return TupleType(tuple(parse_type(p) for p in re.findall(r"\w+\[[^\]]*\]", inner)))
    m = re.fullmatch(r"(\w+)\[(.*)\]", text)
    if not m or m.group(1) not in DTYPES:
        raise IRError(f"bad type {text!r}")
    dims = tuple(int(d) if re.fullmatch(r"-?\d+", d) else d
                 for d in (p.strip() for p in m.group(2).split(",")) if d)
    return TensorType(m.group(1), dims)


@dataclass(frozen=True)
class Loc:
    """A source position carried by nodes (kept independent of the language's Span)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    @property
    def user_facing(self) -> bool:
        """A position in the user's own source (not the prelude's, not a made-up one)."""
        return self.line > 0 and self.file != "<prelude>"


def at_loc(loc: Loc | None) -> str:
    """` at FILE:LINE:COL` for a position in the user's source, else nothing."""
    return f" at {loc}" if loc is not None and loc.user_facing else ""


@dataclass(frozen=True)
class Node:
    id: int
    op: str
    inputs: tuple[int, ...]
    attrs: dict[str, Any]
    type: TensorType
    role: Role = Role.FORWARD
    name: str | None = None
    loc: Loc | None = field(default=None, compare=False)
    of: int | None = None  # gradient nodes: the forward node whose adjoint this is
    # nested graphs the node runs (a loop's body); each has `arg` leaves {index=k} for its
    # inputs and outputs named "0", "1", ... for its results, in order
    regions: tuple[Graph, ...] = field(default=(), compare=False)


MAX_ORDERS = 4  # topological orders a graph keeps (by targets) until it changes


class Graph:
    """A computational graph: nodes by id, ordered inputs, named outputs and updates.

    - `outputs`: name -> node id (objectives, metrics, user outputs, gradients).
    - `updates`: variable name (param/state) -> node id of its new value after a step.
    - `consts`: node id -> array for `const` nodes (small ones are also inline in attrs).
    """

    def __init__(self) -> None:
        self._users: dict[int, set[int]] = {}
        self.nodes: dict[int, Node] = {}
        self.outputs: dict[str, int] = {}
        self.output_kinds: dict[str, OutputKind] = {}
        self.updates: dict[str, int] = {}
        self.consts: dict[int, np.ndarray] = {}
        self.meta: dict[str, Any] = {}
        self._next = 0
        # topological orders by targets, valid while the nodes are as they were (every change
        # of `nodes` goes through add, replace_node and remove, which clear it)
        self._orders: dict[tuple[int, ...] | None, list[int]] = {}

    # -- construction
    @property
    def next_id(self) -> int:
        """The id the next node added gets: the nodes added from now on have ids from it."""
        return self._next

    def add(self, op: str, inputs: Iterable[int], attrs: dict[str, Any] | None, type: Type,
            role: Role | str = Role.FORWARD, name: str | None = None, loc: Loc | None = None,
            of: int | None = None, regions: tuple[Graph, ...] = ()) -> int:
        """Add a node; returns its id. `role` may be given by its string."""
        nid = self._next
        self._next += 1
        self._orders.clear()
        ins = tuple(inputs)
        nodes, users = self.nodes, self._users
        for i in ins:
            if i not in nodes:
                raise IRError(f"node {nid} ({op}) uses unknown node {i}")
        nodes[nid] = Node(nid, op, ins, dict(attrs) if attrs else {}, type,
                          role if isinstance(role, Role) else Role(role), name, loc, of,
                          tuple(regions))
        users[nid] = set()
        for i in ins:
            users[i].add(nid)
        return nid

    def add_const(self, value: np.ndarray, type: TensorType, loc: Loc | None = None) -> int:
        arr = np.asarray(value)
        nid = self.add("const", (), {"value": const_attr(arr)}, type, role=Role.CONST, loc=loc)
        self.consts[nid] = arr
        return nid

    def replace_node(self, nid: int, **changes: Any) -> None:
        if "role" in changes:
            changes["role"] = Role(changes["role"])
        old = self.nodes[nid]
        new = replace(old, **changes)
        if new.inputs != old.inputs:
            for i in old.inputs:
                self._users[i].discard(nid)
            for i in new.inputs:
                self._users[i].add(nid)
        self.nodes[nid] = new
        self._orders.clear()

    def redirect(self, old: int, new: int) -> None:
        """Make every user of `old` (and every output/update naming it) use `new`."""
        self.redirect_many({old: new})

    def redirect_many(self, mapping: Mapping[int, int]) -> None:
        """`redirect` of each old -> new pair (no new node is itself an old one), scanning the
        output and update tables once for all of them."""
        for old, new in mapping.items():
            for user in sorted(self._users[old]):
                n = self.nodes[user]
                self.replace_node(user, inputs=tuple(new if i == old else i for i in n.inputs))
        for table in (self.outputs, self.updates):
            for k, v in table.items():
                if v in mapping:
                    table[k] = mapping[v]

    def remove(self, nid: int) -> None:
        if self._users[nid]:
            raise IRError(f"cannot remove node {nid}: it still has users")
        for i in self.nodes[nid].inputs:
            self._users[i].discard(nid)
        del self._users[nid]
        del self.nodes[nid]
        self._orders.clear()
        self.consts.pop(nid, None)

    # -- queries
    def __getitem__(self, nid: int) -> Node:
        return self.nodes[nid]

    def users(self, nid: int) -> list[int]:
        return sorted(self._users[nid])

    def user_set(self, nid: int) -> AbstractSet[int]:
        """The users of `nid` unordered, without a copy (for membership tests and counts;
        `users` sorts, which costs n log n for a value read by thousands of nodes)."""
        return self._users[nid]

    def n_users(self, nid: int) -> int:
        return len(self._users[nid])

    def ancestors(self, nid: int) -> set[int]:
        """The nodes `nid` depends on (not `nid` itself)."""
        return self._closure([nid], lambda i: self.nodes[i].inputs)

    def descendants(self, nid: int) -> set[int]:
        """The nodes that depend on `nid` (not `nid` itself)."""
        return self._closure([nid], lambda i: self._users[i])

    @staticmethod
    def _closure(start: Iterable[int], step: Callable[[int], Iterable[int]]) -> set[int]:
        seen: set[int] = set()
        stack = list(start)
        while stack:
            for j in step(stack.pop()):
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        return seen

    def roots(self) -> list[int]:
        """Node ids that outputs and updates need."""
        return sorted(set(self.outputs.values()) | set(self.updates.values()))

    def topo_order(self, targets: Iterable[int] | None = None) -> list[int]:
        """Deterministic topological order (ties broken by id), restricted to the ancestors of
        `targets` when given."""
        key = None if targets is None else tuple(targets)
        order = self._orders.get(key)
        if order is None:
            if len(self._orders) >= MAX_ORDERS:  # one per output asked for: keep a few
                self._orders.clear()
            order = self._orders[key] = self._topo_order(key)
        return list(order)

    def _topo_order(self, targets: tuple[int, ...] | None) -> list[int]:
        nodes = self.nodes
        if targets is None:
            keep = set(nodes)
        else:
            keep = self._closure(list(targets), lambda i: nodes[i].inputs) | set(targets)
        # ids are mostly made after their inputs: then increasing ids are the order the heap
        # below would give (the least topological order), found by one sort and one check
        order = sorted(keep)
        if all(max(nodes[i].inputs, default=-1) < i for i in order):
            return order
        waiting = {i: len(set(nodes[i].inputs)) for i in keep}
        ready = [i for i, k in waiting.items() if k == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for u in self._users[i]:
                if u in keep:
                    waiting[u] -= 1
                    if waiting[u] == 0:
                        heapq.heappush(ready, u)
        return order

    def find(self, op: str, name: str) -> int | None:
        for i, n in self.nodes.items():
            if n.op == op and n.name == name:
                return i
        return None

    def variables(self) -> list[int]:
        return sorted(i for i, n in self.nodes.items() if n.op in ("param", "state"))

    # -- regions (the body graph of a loop)
    def args(self) -> list[int]:
        """A region's `arg` leaves in index order."""
        return sorted((i for i, n in self.nodes.items() if n.op == "arg"),
                      key=lambda i: self.nodes[i].attrs["index"])

    def results(self) -> list[int]:
        """A region's result nodes in order (its outputs "0", "1", ...)."""
        return [self.outputs[str(k)] for k in range(len(self.outputs))]

    def copy(self) -> Graph:
        g = Graph()
        g._users = {i: set(u) for i, u in self._users.items()}
        g.nodes = dict(self.nodes)
        g.outputs = dict(self.outputs)
        g.output_kinds = dict(self.output_kinds)
        g.updates = dict(self.updates)
        g.consts = dict(self.consts)
        g.meta = dict(self.meta)
        g._next = self._next
        return g

    def to_networkx(self) -> nx.DiGraph:
        """A copy as a plain networkx DiGraph with node attributes, for users and tools."""
        import networkx as nx

        g = nx.DiGraph()
        for i, n in self.nodes.items():
            g.add_node(i, op=n.op, inputs=n.inputs, attrs=dict(n.attrs), type=str(n.type),
                       role=n.role, name=n.name, of=n.of, loc=str(n.loc) if n.loc else None)
        for i, n in self.nodes.items():
            for pos, j in enumerate(n.inputs):
                if g.has_edge(j, i):
                    g.edges[j, i]["positions"].append(pos)
                else:
                    g.add_edge(j, i, positions=[pos])
        return g

    def __str__(self) -> str:
        """The text with the attributes the nodes hold (graphs built by `Builder.emit` hold
        all of them; `runtime.ops.to_text` also fills in the registered defaults)."""
        return to_text(self)


# ----------------------------------------------------------------- constants in text


INLINE_CONST_MAX = 16


def const_attr(arr: np.ndarray) -> Any:
    """The printed form of a constant: the value itself when small, else a content hash."""
    arr = np.asarray(arr)
    if arr.size <= INLINE_CONST_MAX:
        if arr.dtype.kind == "f":  # shortest text that reads back to the same value
            conv = (lambda x: float(str(np.float32(x)))) if arr.dtype != np.float64 else float
            return _nested(arr.tolist(), conv)
        return arr.tolist()
    digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]
    return f"sha256:{digest}"


def _nested(v: Any, conv: Callable[[float], float]) -> Any:
    return [_nested(x, conv) for x in v] if isinstance(v, list) else conv(v)


# ----------------------------------------------------------------- canonical text

AttrDefaults = Callable[[str], Mapping[str, Any]]  # op name -> its default attributes


def _fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_fmt_value(x) for x in v)
        return f"({inner},)" if isinstance(v, tuple) and len(v) == 1 else (
            f"({inner})" if isinstance(v, tuple) else f"[{inner}]")
    return repr(v)


def to_text(g: Graph, stage: str | None = None, passes: Iterable[str] = (),
            locs: bool = False, defaults: AttrDefaults | None = None) -> str:
    """The text of `g`: renumbered ids in deterministic topological order; each node's
    attributes are `defaults(op)` (none when not given) updated with its own.

    Sections: header, then `inputs`, `params`, `state`, `consts`, `body` (computing nodes in
    topological order), `outputs`, `updates`. Each node line is
    `%id:type = op %a, %b {k=v, ...}` plus `; role=grad name="..." of=%k` metadata. A node
    with regions (a loop) is followed by each region, indented, with ids of its own: `region`,
    then `args` (its inputs in order), `consts`, `body` and `yield %a, %b` (its results).
    """
    lines = ["# dslgraph 1"]
    if stage:
        lines.append(f"# stage: {stage}")
    lines.append(f"# passes: {', '.join(passes) if passes else '(none)'}")
    lines += _graph_lines(g, "", locs, defaults or _no_defaults)
    return "\n".join(lines) + "\n"


def _no_defaults(op: str) -> Mapping[str, Any]:
    return {}


_TITLES = {"input": "inputs", "param": "params", "state": "state", "const": "consts",
           "arg": "args"}


def text_numbering(g: Graph) -> dict[int, int]:
    """Node id -> the number `to_text` prints for it (`%7`), for texts that refer to the
    printed nodes (the memory plan of `dslrun graph --stage planned`)."""
    return _text_layout(g)[2]


def _text_layout(g: Graph) -> tuple[dict[str, list[int]], list[int], dict[int, int]]:
    """The leaves by section, the computing nodes in order, and the printed numbering."""
    order = g.topo_order(g.roots()) if g.roots() else g.topo_order()
    used = set(order)
    # leaves that nobody uses still belong to the graph (e.g. a declared but unused input)
    order += [i for i in sorted(g.nodes) if i not in used and g.nodes[i].op in LEAF_OPS]
    sections: dict[str, list[int]] = {k: [] for k in (*LEAF_OPS, "body")}
    for i in order:
        op = g.nodes[i].op
        sections[op if op in LEAF_OPS else "body"].append(i)
    leaf_sorted = {
        k: v if k == "const" else sorted(v, key=lambda i: g.nodes[i].attrs["index"])
        if k == "arg" else sorted(v, key=lambda i: (g.nodes[i].name or "", i))
        for k, v in sections.items() if k != "body"
    }
    leaves = ("arg", "input", "param", "state", "const")
    numbering: dict[int, int] = {}
    for k in leaves:
        for i in leaf_sorted[k]:
            numbering[i] = len(numbering)
    for i in sections["body"]:
        numbering[i] = len(numbering)
    return leaf_sorted, sections["body"], numbering


def _graph_lines(g: Graph, indent: str, locs: bool, defaults: AttrDefaults,
                 region: bool = False) -> list[str]:
    leaf_sorted, body, numbering = _text_layout(g)
    leaves = ("arg", "input", "param", "state", "const")
    lines = []
    for k in leaves:
        if leaf_sorted[k]:
            lines.append(indent + _TITLES[k])
            lines.extend(indent + "  " + _node_line(g, i, numbering, locs, defaults)
                         for i in leaf_sorted[k])
    if body:
        lines.append(indent + "body")
        for i in body:
            lines.append(indent + "  " + _node_line(g, i, numbering, locs, defaults))
            for r in g.nodes[i].regions:
                lines.append(indent + "    region")
                lines += _graph_lines(r, indent + "      ", locs, defaults, region=True)
    if region:
        lines.append(indent + "yield " + ", ".join(f"%{numbering[i]}" for i in g.results()))
        return lines
    if g.outputs:
        lines.append(indent + "outputs")
        for name in sorted(g.outputs):
            kind = g.output_kinds.get(name, OutputKind.OUTPUT)
            lines.append(f"{indent}  {kind} {name} = %{numbering[g.outputs[name]]}")
    if g.updates:
        lines.append(indent + "updates")
        for name in sorted(g.updates):
            lines.append(f"{indent}  {name} <- %{numbering[g.updates[name]]}")
    return lines


_UNPRINTED_ROLES = (Role.FORWARD, Role.INPUT, Role.PARAM, Role.STATE, Role.CONST, Role.ARG)


def _node_line(g: Graph, i: int, num: dict[int, int], locs: bool,
               defaults: AttrDefaults) -> str:
    n = g.nodes[i]
    attrs = {**defaults(n.op), **n.attrs}
    s = f"%{num[i]}:{n.type} = {n.op}"
    if n.inputs:
        s += " " + ", ".join(f"%{num[j]}" for j in n.inputs)
    if attrs:
        s += " {" + ", ".join(f"{k}={_fmt_value(attrs[k])}" for k in sorted(attrs)) + "}"
    meta = []
    if n.role not in _UNPRINTED_ROLES:
        meta.append(f"role={n.role}")
    if n.name is not None:
        meta.append(f"name={n.name!r}")
    if n.of is not None and n.of in num:
        meta.append(f"of=%{num[n.of]}")
    if locs and n.loc is not None:
        meta.append(f"loc={str(n.loc)!r}")
    if meta:
        s += " ; " + " ".join(meta)
    return s


_LINE = re.compile(
    r"%(?P<id>\d+):(?P<type>\w+\[[^\]]*\]|\([^)]*\)) = (?P<op>[\w.]+)"
    r"(?P<args>(?: %\d+(?:, %\d+)*)?)"
    r"(?: \{(?P<attrs>.*?)\})?(?: ; (?P<meta>.*))?$"
)


def _split_top(s: str) -> list[str]:
    parts, depth, cur, quote = [], 0, "", None
    for ch in s:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def parse_text(text: str) -> Graph:
    """Read canonical text back into a Graph (constants given by hash stay unresolved)."""
    lines = [ln.rstrip() for ln in text.splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    g, pos = _parse_block(lines, 0, 0)
    if pos != len(lines):
        raise IRError(f"cannot parse graph line: {lines[pos].strip()!r}")
    return g


def _depth(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _parse_block(lines: list[str], pos: int, indent: int) -> tuple[Graph, int]:
    """Parse the graph whose section titles are indented by `indent` spaces, from line `pos`;
    returns it and the index of the first line that is not part of it."""
    g = Graph()
    ids: dict[int, int] = {}
    pending_of: list[tuple[int, int]] = []
    section = None
    last: int | None = None  # the node a following `region` belongs to
    while pos < len(lines):
        line = lines[pos]
        depth, body = _depth(line), line.strip()
        if depth < indent:
            break
        if depth == indent:
            if body.startswith("yield"):
                refs = [r.strip() for r in body[len("yield"):].split(",") if r.strip()]
                for k, r in enumerate(refs):
                    g.outputs[str(k)] = ids[int(r[1:])]
                    g.output_kinds[str(k)] = OutputKind.RESULT
                pos += 1
                break
            section = body
            pos += 1
            continue
        if depth == indent + 4 and body == "region":
            if last is None:
                raise IRError("a region follows no node")
            region, pos = _parse_block(lines, pos + 1, indent + 6)
            n = g.nodes[last]
            g.replace_node(last, regions=(*n.regions, region))
            continue
        if depth != indent + 2:
            raise IRError(f"cannot parse graph line: {body!r}")
        pos += 1
        if section == "outputs":
            kind, rest = body.split(" ", 1)
            name, ref = (p.strip() for p in rest.split("="))
            g.outputs[name] = ids[int(ref[1:])]
            g.output_kinds[name] = _enum(OutputKind, kind, body)
            continue
        if section == "updates":
            name, ref = (p.strip() for p in body.split("<-"))
            g.updates[name] = ids[int(ref[1:])]
            continue
        m = _LINE.match(body)
        if not m:
            raise IRError(f"cannot parse graph line: {body!r}")
        attrs: dict[str, Any] = {}
        if m.group("attrs"):
            for part in _split_top(m.group("attrs")):
                k, v = part.split("=", 1)
                attrs[k.strip()] = pyast.literal_eval(v.strip())
        meta: dict[str, str] = {}
        if m.group("meta"):
            for tok in re.findall(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|%\d+|\w+)",
                                  m.group("meta")):
                meta[tok[0]] = tok[1]
        op = m.group("op")
        role = _enum(Role, meta.get("role") or (op if op in LEAF_OPS else "forward"), body)
        args = [ids[int(a.strip()[1:])] for a in m.group("args").split(",") if a.strip()]
        name = pyast.literal_eval(meta["name"]) if "name" in meta else None
        nid = g.add(op, args, attrs, parse_type(m.group("type")), role=role, name=name)
        ids[int(m.group("id"))] = nid
        last = nid
        if "of" in meta:
            pending_of.append((nid, int(meta["of"][1:])))
        if op == "const" and not (isinstance(attrs.get("value"), str)):
            g.consts[nid] = np.asarray(attrs.get("value"), dtype=g.nodes[nid].type.np_dtype())
    for nid, of in pending_of:
        g.replace_node(nid, of=ids[of])
    return g, pos


def _enum(kind: type[StrEnum], value: str, line: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise IRError(f"unknown {kind.__name__} {value!r} in graph line: {line!r}") from None


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
