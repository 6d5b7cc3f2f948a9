"""The graph IR's data model: types, source positions, nodes with ordered inputs, graphs.

A `Graph` owns `Node`s (id, op, ordered inputs, attributes, result type, `Role`, name, span,
`of` = the forward node a gradient node differentiates) and names its outputs, each with an
`OutputKind`. A users index (node -> the nodes that
read it) serves traversal; `to_networkx` gives users and tools a networkx DiGraph. networkx is
imported only there: importing it costs more than parsing and lowering a spec together, and
`dslrun check` must start fast. Nothing here depends on which other modules were imported.

The text form (`to_text`, `parse_text`, `text_numbering`) is in `runtime.ir_text`, which
`str(graph)` uses; Graphviz DOT (`to_dot`, `to_dot_many`) is in `runtime.ir_dot`.
"""

from __future__ import annotations

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
        from runtime.ir_text import to_text  # the text module reads and builds Graphs

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
