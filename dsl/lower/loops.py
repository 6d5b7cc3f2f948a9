"""Run-time loops: `loop t in [reversed] a .. b { ... }` lowers its body once, into a region of
its own, and emits one `loop` node (runtime.ops.control) in the enclosing graph.

- The index `t` is the body's first argument (an i64 scalar).
- Carried values: the names the body assigns that are bound before the loop. Each enters the
  body as an argument and leaves it as a result; after the loop the name holds its final value.
  A carried value must keep its type; a number is lifted to a tensor of the program's float
  dtype first (`mu = 0.0`).
- Captured values: whatever the body reads from outside (inputs, parameters, earlier values)
  becomes an explicit argument when it is first used (`Builder.capture`).
- Sequences: `x[t]`, `x[:, t]` (the index on one axis, x from outside, the loop starting at 0 or
  at a constant) read a slice per iteration: x (that axis first) is a sequence input of the
  loop instead of a captured value indexed by a tensor.
- `emit e [as name]`: e of every iteration, stacked along a new first axis, is bound to `name`
  (e's own name by default) after the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsl import ast as A
from dsl.errors import NameErr, ShapeErr, TypeErr
from dsl.lower.context import Context
from dsl.lower.scope import Scope
from runtime.dtypes import NP_TO_DTYPE
from runtime.ir import Graph, TensorType
from runtime.ops import Builder, Val
from runtime.ops.control import set_results

__all__ = ["LoopFrame", "emit", "lower_loop", "sequence_slice"]

I64 = TensorType("i64", ())


@dataclass
class LoopFrame:
    """The loop being lowered: its body's builder, index, and what the body reads from outside
    (captured values and sequences, in the order they were met)."""

    b: Builder
    t: Val
    start: int
    length: int | str
    reverse: bool
    captured: dict[int, Val] = field(default_factory=dict)  # outer node id -> body arg
    captured_from: list[Val] = field(default_factory=list)  # the outer values, in that order
    seqs: dict[tuple[int, int], Val] = field(default_factory=dict)  # (outer id, axis) -> arg
    seqs_from: list[Val] = field(default_factory=list)
    emitted: list[tuple[str, Val, A.Span]] = field(default_factory=list)

    def capture(self, v: Val) -> Val:
        arg = self.captured.get(v.id)
        if arg is None:
            g = self.b.graph
            arg = Val(self.b, g.add("arg", (), {"index": -1}, v.type, role="arg",
                                    name=v.node.name))
            self.captured[v.id] = arg
            self.captured_from.append(v)
        return arg


def _assigned(body: tuple[A.Stmt, ...]) -> list[str]:
    """The names a body assigns, in order of first assignment (through `if` and nested
    loops)."""
    out: dict[str, None] = {}
    for s in body:
        if isinstance(s, A.Assign):
            out.update((t.name, None) for t in s.targets)
        elif isinstance(s, A.If):
            out.update(dict.fromkeys(_assigned(s.body)))
            out.update(dict.fromkeys(_assigned(s.orelse)))
        elif isinstance(s, (A.For, A.Repeat, A.Loop)):
            out.update(dict.fromkeys(_assigned(s.body)))
    return list(out)


def _bounds(cx: Context, s: A.Loop, scope: Scope) -> tuple[int, int | str]:
    from dsl.lower import expressions

    lo, hi = (expressions.ev(cx, e, scope) for e in (s.start, s.stop))
    for v, e in ((lo, s.start), (hi, s.stop)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer | str):
            raise cx.err(TypeErr, "loop bounds are compile-time integers or a symbolic "
                         f"dimension (0 .. N), got {v!r}", e.span)
    if isinstance(lo, str):
        raise cx.err(TypeErr, "a loop starts at a compile-time integer", s.start.span)
    if isinstance(hi, str):
        if lo != 0:
            raise cx.err(TypeErr, f"a loop up to the symbolic dimension {hi} starts at 0",
                         s.start.span)
        return 0, hi
    if hi < lo:
        raise cx.err(ShapeErr, f"this loop runs {lo} .. {hi}: no iteration (write 'loop t in "
                     f"reversed {hi} .. {lo}' to count down)", s.span)
    return int(lo), int(hi - lo)


def lower_loop(cx: Context, s: A.Loop, scope: Scope) -> None:
    """The `loop` statement: see the module docstring."""
    from dsl.lower import statements
    from dsl.lower.values import to_val

    start, length = _bounds(cx, s, scope)
    carried = []
    for n in _assigned(s.body):
        found, v = scope.lookup(n)
        if found and n != s.var and (isinstance(v, Val | np.ndarray) or (
                isinstance(v, int | float | np.number) and not isinstance(v, bool))):
            carried.append(n)
    init = []
    for n in carried:  # a compile-time value becomes a tensor: the body changes it
        v = scope.lookup(n)[1]
        if isinstance(v, Val):
            init.append(cx.b.bring(v))
        elif isinstance(v, np.ndarray) and v.dtype.kind not in "fc":
            init.append(cx.b.const(v, NP_TO_DTYPE[v.dtype]))
        else:
            init.append(cx.b.const(np.asarray(v, dtype=float), cx.float_dtype))
    body = Graph()
    rb = Builder(body, role=cx.b.role, parent=cx.b)
    t = Val(rb, body.add("arg", (), {"index": 0}, I64, role="arg", name=s.var))
    frame = LoopFrame(rb, t, start, length, s.reverse)
    rb.capture = frame.capture
    carry_args = [Val(rb, body.add("arg", (), {"index": -1}, v.type, role="arg", name=n))
                  for n, v in zip(carried, init)]
    inner = Scope(scope, scope.prefix, scope.sites)
    inner.vars[s.var] = frame.t
    for n, a in zip(carried, carry_args):
        inner.vars[n] = a
    bcx = cx.in_body(rb, frame)
    statements.exec_body(bcx, s.body, inner)
    results = []
    for n, a in zip(carried, carry_args):
        v = rb.bring(to_val(bcx, inner.vars[n], s.span, like=a))
        if v.type != a.type:
            if v.type.shape == a.type.shape and v.type.is_float and a.type.is_float:
                v = rb.emit("cast", v, dtype=a.type.dtype)
            else:
                raise cx.err(ShapeErr, f"'{n}' is carried by this loop and must keep its type: "
                             f"it enters as {a.type} and the body makes it {v.type}", s.span)
        results.append(v)
    results += [rb.bring(v) for _, v, _ in frame.emitted]
    set_results(body, results)
    order = [frame.t, *carry_args, *frame.seqs.values(), *frame.captured.values()]
    for k, a in enumerate(order):
        body.replace_node(a.id, attrs={"index": k})
    with cx.guard(s.span):
        node = cx.b.emit("loop", *init, *frame.seqs_from, *frame.captured_from,
                         regions=(body,), length=length, n_carry=len(init),
                         n_seq=len(frame.seqs_from), reverse=s.reverse, start=start)
        items = [cx.b.emit("item", node, index=k) for k in range(len(results))]
    for n, v in zip(carried, items):
        scope.rebind(n, v)
    for (n, _, _), v in zip(frame.emitted, items[len(carried):]):
        scope.rebind(n, v)


def emit(cx: Context, s: A.Emit, scope: Scope) -> None:
    """`emit e [as name]` inside a run-time loop."""
    from dsl.lower import expressions
    from dsl.lower.values import to_val

    frame = cx.loop
    if frame is None:
        raise cx.err(TypeErr, "'emit' belongs in the body of a run-time 'loop'", s.span)
    name = s.name or (s.value.id if isinstance(s.value, A.Name) else None)
    if name is None:
        raise cx.err(NameErr, "name what 'emit' stacks: emit EXPR as NAME", s.span)
    v = to_val(cx, expressions.ev(cx, s.value, scope), s.span)
    frame.emitted.append((name, v, s.span))


def sequence_slice(cx: Context, base: Val, items: list[Any]) -> tuple[Val, list[Any]] | None:
    """`x[:, t]` in a loop body, x from outside and t the loop's index: (the slice of this
    iteration, the other index items to apply to it), x becoming a sequence input of the loop.
    None when the index is not of that form."""
    frame = cx.loop
    if frame is None or base.b is frame.b:
        return None
    hits = [k for k, it in enumerate(items) if isinstance(it, Val) and it.id == frame.t.id]
    if len(hits) != 1 or any(isinstance(it, Val) for k, it in enumerate(items) if k != hits[0]):
        return None
    axis = hits[0]
    if any(it is Ellipsis or it is None for it in items[:axis]):
        return None
    outer = frame.b.parent.bring(base) if base.b.graph is not frame.b.parent.graph else base
    size = outer.type.shape[axis]
    length = frame.length
    if isinstance(length, str):
        if size != length:
            return None
    elif not isinstance(size, int) or frame.start + length > size:
        return None
    key = (outer.id, axis)
    arg = frame.seqs.get(key)
    if arg is None:
        ob = outer.b
        xs = outer
        if axis:
            perm = (axis, *(k for k in range(outer.type.rank) if k != axis))
            xs = ob.emit("transpose", xs, axes=perm)
        if not isinstance(length, str) and (frame.start or length != size):
            xs = ob.emit("getitem", xs, index=(("s", frame.start, frame.start + length, 1),))
        t = xs.type
        arg = Val(frame.b, frame.b.graph.add("arg", (), {"index": -1},
                                             TensorType(t.dtype, t.shape[1:]), role="arg",
                                             name=outer.node.name))
        frame.seqs[key] = arg
        frame.seqs_from.append(xs)
    rest = items[:axis] + items[axis + 1:]
    if all(isinstance(it, slice) and it == slice(None) for it in rest):
        return arg, []  # x[:, t]: the slice itself
    return arg, rest
