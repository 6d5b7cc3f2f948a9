"""Graph building with operators: `Val` wraps a node id, `Builder` emits typed nodes.

`Builder.emit(op, *vals, **attrs)` fills attribute defaults, runs the op's shape rule and adds
the node with the builder's current role/location; `Val` overloads arithmetic so VJP rules
read like the math: `g * out * (1 - out)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from runtime.dtypes import DEFAULT_FLOAT, is_float
from runtime.ir import Graph, Loc, Role, TensorType
from runtime.ops.registry import REGISTRY, ShapeError


class Builder:
    """Emits nodes into `graph` with a current role, source location and `of` link.

    A builder of a region (a loop's body being built) has the builder of the enclosing graph
    as `parent` and a `capture` function that turns a value of an enclosing graph into an
    `arg` of the region (recording it as an input of the loop). An op whose inputs come from
    several nesting levels is emitted by the innermost builder among them, which captures the
    others, so `w @ h` with w outside the loop and h inside it lands in the body."""

    def __init__(self, graph: Graph, role: Role = Role.FORWARD, loc: Loc | None = None,
                 parent: Builder | None = None, capture: Any = None) -> None:
        self.graph = graph
        self.role = role
        self.loc = loc
        self.of: int | None = None
        self.parent = parent
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.capture = capture
        self._const_cache: dict[tuple, int] = {}
        # the reverse-mode driver (`runtime.autodiff.vjp`), set while it runs VJPs: a VJP that
        # differentiates a region of its own (a loop's) calls it without importing autodiff
        self.differentiate: Any = None

    @contextlib.contextmanager
    def context(self, role: Role | None = None, loc: Loc | None = None,
                of: int | None = None) -> Iterator[None]:
        saved = (self.role, self.loc, self.of)
        if role is not None:
            self.role = role
        if loc is not None:
            self.loc = loc
        if of is not None:
            self.of = of
        try:
            yield
        finally:
            self.role, self.loc, self.of = saved

    def val(self, nid: int) -> Val:
        return Val(self, nid)

    def emit(self, op: str, *inputs: Val, name: str | None = None,
             regions: tuple[Graph, ...] = (), **attrs: Any) -> Val:
        inner = max((v.b for v in inputs), key=lambda b: b.depth, default=self)
        if inner.depth > self.depth:
            return inner.emit(op, *inputs, name=name, regions=regions, **attrs)
        if any(v.b.graph is not self.graph for v in inputs):
            inputs = tuple(self.bring(v) for v in inputs)
        opdef = REGISTRY.get(op)
        if opdef is None:
            raise ShapeError(f"unknown op {op!r}")
        if opdef.arity is not None and len(inputs) != opdef.arity:
            raise ShapeError(f"{op}: expects {opdef.arity} inputs, got {len(inputs)}")
        unknown = set(attrs) - set(opdef.attrs)
        if unknown:
            raise ShapeError(f"{op}: unknown attribute {sorted(unknown)[0]!r}")
        full = {**opdef.attrs, **attrs}
        full = {k: _norm_attr(op, k, v, opdef.attrs[k]) for k, v in full.items()}
        types = [self.graph[v.id].type for v in inputs]
        out_type = opdef.infer(full, types, regions)
        nid = self.graph.add(op, [v.id for v in inputs], full, out_type, role=self.role,
                             name=name, loc=self.loc, of=self.of, regions=regions)
        return Val(self, nid)

    def bring(self, v: Val) -> Val:
        """`v` as a value of this builder's graph: itself, or captured from an enclosing
        graph (a value of a sibling or inner region cannot be reached: a bug)."""
        if v.b.graph is self.graph:
            return v
        if self.capture is None or self.parent is None:
            raise ShapeError(f"value %{v.id} belongs to another graph than the one being built")
        return self.capture(self.parent.bring(v))

    def const(self, value: Any, dtype: str = DEFAULT_FLOAT) -> Val:
        arr = np.asarray(value, dtype=TensorType(dtype, ()).np_dtype())
        key = (dtype, arr.shape, arr.tobytes()) if arr.size <= 64 else None
        if key is not None and key in self._const_cache:
            cid = self._const_cache[key]
            if cid in self.graph.nodes:
                return Val(self, cid)
        nid = self.graph.add_const(arr, TensorType(dtype, tuple(arr.shape)), loc=self.loc)
        if key is not None:
            self._const_cache[key] = nid
        return Val(self, nid)

    def lift(self, x: Any, like: Val) -> Val:
        """A Python number as a scalar const of `like`'s dtype (floats for int tensors)."""
        if isinstance(x, Val):
            return x
        dt = like.type.dtype
        if isinstance(x, float) and not is_float(dt):
            dt = DEFAULT_FLOAT
        return self.const(x, dt)


def _norm_attr(op: str, name: str, v: Any, default: Any) -> Any:
    """An attribute as the graph stores it (tuples, Python scalars); a tensor, or a non-bool
    for a flag, is a ShapeError: attributes are compile-time values."""
    if isinstance(v, list | tuple):
        return tuple(_norm_attr(op, name, x, None) for x in v)
    if isinstance(v, Val):
        raise ShapeError(f"{op}: option '{name}' needs a value known at compile time (a "
                         "number, true/false, a string or a list of them), not a tensor")
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(default, bool) and not isinstance(v, bool):
        raise ShapeError(f"{op}: option '{name}' is true or false, got {v!r}")
    return v


class Val:
    """A handle on a graph node with arithmetic that emits nodes."""

    __slots__ = ("b", "id")
    __array_priority__ = 1000

    def __init__(self, b: Builder, nid: int) -> None:
        self.b = b
        self.id = nid

    @property
    def type(self) -> TensorType:
        return self.b.graph[self.id].type

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def node(self):
        return self.b.graph[self.id]

    def __repr__(self) -> str:
        return f"Val(%{self.id}:{self.type})"

    def _bin(self, op: str, other: Any, reverse: bool = False) -> Val:
        o = self.b.lift(other, self)
        return self.b.emit(op, o, self) if reverse else self.b.emit(op, self, o)

    def __add__(self, o: Any) -> Val:
        return self._bin("add", o)

    def __radd__(self, o: Any) -> Val:
        return self._bin("add", o, True)

    def __sub__(self, o: Any) -> Val:
        return self._bin("sub", o)

    def __rsub__(self, o: Any) -> Val:
        return self._bin("sub", o, True)

    def __mul__(self, o: Any) -> Val:
        return self._bin("mul", o)

    def __rmul__(self, o: Any) -> Val:
        return self._bin("mul", o, True)

    def __truediv__(self, o: Any) -> Val:
        return self._bin("div", o)

    def __rtruediv__(self, o: Any) -> Val:
        return self._bin("div", o, True)

    def __pow__(self, o: Any) -> Val:
        return self._bin("pow", o)

    def __rpow__(self, o: Any) -> Val:
        return self._bin("pow", o, True)

    def __matmul__(self, o: Val) -> Val:
        return self.b.emit("matmul", self, o)

    def __neg__(self) -> Val:
        return self.b.emit("neg", self)

    def __gt__(self, o: Any) -> Val:
        return self._bin("greater", o)

    def __lt__(self, o: Any) -> Val:
        return self._bin("less", o)

    def __ge__(self, o: Any) -> Val:
        return self._bin("greater_equal", o)

    def __le__(self, o: Any) -> Val:
        return self._bin("less_equal", o)
