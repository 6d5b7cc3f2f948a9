"""Run-time loops: `loop t in [reversed] a .. b [until c] [, NAME = value]... { ... }` lowers its
body once, into a region of its own, and emits one `loop` node (runtime.ops.control) in the
enclosing graph (two nested ones, and a plain one for a remainder, with `checkpoint`).

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

Clauses after the range (the grammar's `loop_stmt`): `until cond`, then options, each after a
comma, in any order (`loop t in 0 .. n, max = 64, count = steps { }`):

- `max = N`: the stop b is a run-time integer scalar (an `i64[]` input, a value computed
  before the loop) and N, a compile-time integer, the largest it may be. The loop runs
  t = a .. min(b, N) - 1 (none when b <= a); emitted series have N - a rows, those of the
  iterations not run are zeros. The gradient runs over the iterations run only. `max` is
  required when b is a run-time value, and an error when b is known at compile time.
- `until cond`: an early exit. cond, a bool scalar, is evaluated in the body's scope after
  each iteration (it reads this iteration's values) and stops the loop when true; b is the
  most iterations. Rows of emitted series past the last iteration run are zeros; cond carries
  no gradient. An early-exit loop counts up (not `reversed`).
- `count = NAME`: after the loop NAME holds the number of iterations run, an i64 scalar (for
  `until` and `max` loops the interesting one; a fixed loop's trip count otherwise).
- `checkpoint = K`: time for memory. The loop runs as segments of K iterations
  (`runtime.ops.control.checkpointed`): the forward pass keeps only the carries entering each
  segment and the backward pass recomputes one segment at a time, so it holds about T/K + K
  iterations' values instead of T, for one more forward pass. K is a compile-time integer in
  1 .. T for a loop of compile-time length T. When K does not divide T, the T mod K iterations
  left run as a plain loop after the segments (before them when reversed) and emitted series
  are joined by one copy: T is often a size the data sets, so every K that fits is accepted.
  Not combined with `max` or `until`.
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
from runtime.ops.control import loop, set_results

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
            if isinstance(s, A.Loop):  # `count = NAME` binds NAME
                out.update((o.value.id, None) for o in s.options if o.name == "count")
    return list(out)


def _bounds(cx: Context, s: A.Loop, scope: Scope, options: dict[str, A.Setting]
            ) -> tuple[int, int | str, Val | None]:
    """(start, length, run-time trip count or None); length is the most iterations when the
    count is known only at run time."""
    from dsl.lower import expressions

    lo, hi = (expressions.ev(cx, e, scope) for e in (s.start, s.stop))
    top = options.get("max")
    if isinstance(hi, Val):
        return _run_time_bounds(cx, s, scope, lo, hi, top)
    for v, e in ((lo, s.start), (hi, s.stop)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer | str):
            raise cx.err(TypeErr, "loop bounds are compile-time integers or a symbolic "
                         f"dimension (0 .. N), got {v!r}", e.span)
    if top is not None:
        raise cx.err(TypeErr, f"'max' bounds a stop known only at run time; this loop stops at "
                     f"{hi!r}", top.span)
    if isinstance(lo, str):
        raise cx.err(TypeErr, "a loop starts at a compile-time integer", s.start.span)
    if isinstance(hi, str):
        if lo != 0:
            raise cx.err(TypeErr, f"a loop up to the symbolic dimension {hi} starts at 0",
                         s.start.span)
        return 0, hi, None
    if hi < lo:
        raise cx.err(ShapeErr, f"this loop runs {lo} .. {hi}: no iteration (write 'loop t in "
                     f"reversed {hi} .. {lo}' to count down)", s.span)
    return int(lo), int(hi - lo), None


def _run_time_bounds(cx: Context, s: A.Loop, scope: Scope, lo: Any, hi: Val,
                     top: A.Setting | None) -> tuple[int, int, Val]:
    """`loop t in a .. n, max = N`: n a run-time integer scalar, N its largest value."""
    from dsl.lower import expressions
    from dsl.lower.values import describe

    if hi.type.rank != 0 or hi.type.is_float or hi.type.dtype == "bool":
        raise cx.err(TypeErr, f"a loop's run-time stop is an integer scalar (i64[]), got "
                     f"{hi.type}", s.stop.span)
    if top is None:
        raise cx.err(TypeErr, f"this loop's stop is a run-time value ({hi.type}): give the "
                     f"largest it may be, 'max = N' (emitted series get N rows)", s.stop.span)
    if isinstance(lo, bool) or not isinstance(lo, int | np.integer):
        raise cx.err(TypeErr, f"a loop starts at a compile-time integer, got {describe(lo)}",
                     s.start.span)
    n = expressions.ev(cx, top.value, scope)
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise cx.err(TypeErr, f"'max = N' takes a compile-time integer, got {describe(n)}",
                     top.value.span)
    if n < lo:
        raise cx.err(ShapeErr, f"'max = {n}' is below the loop's start {lo}: no iteration",
                     top.value.span)
    with cx.guard(s.stop.span):
        count = cx.b.bring(hi)
        if count.type.dtype != "i64":
            count = cx.b.emit("cast", count, dtype="i64")
        if lo:
            count = count - int(lo)
    return int(lo), int(n - lo), count


def _checkpoint(cx: Context, s: A.Loop, scope: Scope, option: A.Setting | None,
                length: int | str, count: Val | None) -> int | None:
    """K of `checkpoint = K`, checked against the loop (None without the clause)."""
    from dsl.lower import expressions
    from dsl.lower.values import describe

    if option is None:
        return None
    k = expressions.ev(cx, option.value, scope)
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise cx.err(TypeErr, f"'checkpoint = K' takes a compile-time integer, got "
                     f"{describe(k)}", option.value.span)
    if count is not None or s.until is not None:
        raise cx.err(TypeErr, "'checkpoint' needs a fixed trip count; this loop's is known "
                     "only at run time ('max' or 'until')", option.span)
    if isinstance(length, str):
        raise cx.err(TypeErr, f"'checkpoint' needs a compile-time trip count; this loop runs "
                     f"{length} times", option.span)
    if not 1 <= k <= length:
        raise cx.err(ShapeErr, f"'checkpoint = {k}': a segment is 1 .. {length} iterations "
                     f"(the loop's trip count)", option.value.span)
    return int(k)


def _check_count_name(cx: Context, s: A.Loop, option: A.Setting, carried: list[str],
                      emitted: list[str]) -> None:
    """`count = NAME` must not name what the loop already binds."""
    name = option.value.id
    what = ("the loop's index" if name == s.var else "carried by this loop" if name in carried
            else "emitted by this loop" if name in emitted else None)
    if what is not None:
        raise cx.err(NameErr, f"'count = {name}': '{name}' is {what}; name the count "
                     "otherwise", option.value.span)


def lower_loop(cx: Context, s: A.Loop, scope: Scope) -> None:
    """The `loop` statement: see the module docstring."""
    from dsl.lower import expressions, statements
    from dsl.lower.values import to_val

    options = {o.name: o for o in s.options}
    start, length, count = _bounds(cx, s, scope, options)
    every = _checkpoint(cx, s, scope, options.get("checkpoint"), length, count)
    if s.until is not None and s.reverse:
        raise cx.err(TypeErr, "an early-exit loop counts up: 'until' cannot be used with "
                     "'reversed'", s.until.span)
    if "count" in options and count is None and s.until is None and isinstance(length, str):
        raise cx.err(TypeErr, f"'count' of a loop that always runs {length} times: use "
                     f"{length} itself", options["count"].span)
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
    if s.until is not None:  # the stop flag, after the carries
        stop = rb.bring(to_val(bcx, expressions.ev(bcx, s.until, inner), s.until.span))
        if stop.type != TensorType("bool", ()):
            raise cx.err(TypeErr, f"'until' takes a bool scalar; this condition is {stop.type}",
                         s.until.span)
        results.append(stop)
    results += [rb.bring(v) for _, v, _ in frame.emitted]
    set_results(body, results)
    order = [frame.t, *carry_args, *frame.seqs.values(), *frame.captured.values()]
    for k, a in enumerate(order):
        body.replace_node(a.id, attrs={"index": k})
    if "count" in options:
        _check_count_name(cx, s, options["count"], carried, [n for n, _, _ in frame.emitted])
    with cx.guard(s.span):
        out = loop(cx.b, body, init, frame.seqs_from, frame.captured_from, length, s.reverse,
                   start, n=count, until=s.until is not None, checkpoint=every)
        if "count" in options:
            ran = out.count
            if ran is None and count is not None:  # min(max(n, 0), N)
                ran = cx.b.emit("minimum", cx.b.emit("maximum", count, cx.b.const(0, "i64")),
                                cx.b.const(length, "i64"))
            elif ran is None:
                ran = cx.b.const(length, "i64")
            scope.rebind(options["count"].value.id, ran)
    for n, v in zip(carried, out.carries):
        scope.rebind(n, v)
    for (n, _, _), v in zip(frame.emitted, out.stacked):
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
