"""Control flow: `loop`, a scan over a body region compiled once, and `item`, one result of a
node with several.

`loop` follows JAX's `scan` (carry, xs) -> (carry, ys). Its inputs are the initial carried
values (`n_carry`), the sequences it slices along their first axis (`n_seq`), the outer values
its body reads (captured), and last, when `dynamic`, the run-time trip count (an i64 scalar).
Its body region has `arg` leaves (the iteration index `t`, an i64 scalar, then one per input
but the count: carries, one slice of each sequence, captured values) and results (the next
carries; when `until`, a bool scalar, true to stop after this iteration; then the values of
this iteration to stack). The loop's results (read with `item {index=k}`) line up with the
body's: the final carries; when `until`, the number of iterations run (an i64 scalar); then
the stacked values, whose first axis is `length` (an int or a symbolic dim). Iteration k sees
`t = start + k'`, slice k' and stores its stacked values at k', where k' = k, or n-1-k when
`reverse`, n being the trip count:

- `length`, by default;
- with `dynamic`, the count input clipped to [0, length]: `length` is the most it may be;
- with `until`, the loop also stops after the first iteration whose flag is true (such a
  loop runs forward).

When the trip count is known only at run time, the rows of the stacked values that no
iteration wrote are zeros.

The VJP of a loop is another loop, running the other way over residuals (as JAX's scan
transpose): the backward body applies the forward body's own VJP, and the forward values that
VJP reads (and the carry entering each iteration) are stacked by the forward loop, extended in
place, instead of being recomputed. A loop that ran a run-time number of iterations has a
backward loop with that count (`dynamic`): it runs over the executed iterations only. The stop
flag carries no gradient. Gradients of gradients work, since the backward loop is a loop of
registered ops again.

Residuals are single values: a body node with several results (an inner loop) is recomputed
in the backward body, where its own VJP stacks what it needs for one outer iteration only.
`loop(..., checkpoint=K)` builds on that (`checkpointed`): the loop becomes an outer loop over
segments of K iterations running an inner loop over one segment, so the forward pass keeps
only the carries entering each segment and the backward pass recomputes one segment at a
time (memory O(length/K + K) iterations' values instead of O(length), for one more forward
pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from runtime.ir import Graph, OutputKind, Role, TensorType, TupleType
from runtime.ops.builder import Builder, Val
from runtime.ops.registry import OpDef, ShapeError, register

__all__ = ["LoopResults", "checkpointed", "inline", "loop", "loop_type", "new_region",
           "set_results"]

LOOP_ATTRS = {"length": 1, "n_carry": 0, "n_seq": 0, "reverse": False, "start": 0,
              "dynamic": False, "until": False}
I64 = TensorType("i64", ())


# ---------------------------------------------------------------- building regions
def new_region(arg_types: Sequence[TensorType], names: Sequence[str | None] = ()
               ) -> tuple[Graph, Builder, list[Val]]:
    """An empty region with `arg` leaves of these types: (graph, builder, arg values). Set
    its results with `set_results`."""
    g = Graph()
    b = Builder(g)
    names = list(names) + [None] * (len(arg_types) - len(names))
    args = [Val(b, g.add("arg", (), {"index": k}, t, role=Role.ARG, name=n))
            for k, (t, n) in enumerate(zip(arg_types, names))]
    return g, b, args


def set_results(region: Graph, results: Sequence[Val]) -> None:
    region.outputs = {str(k): v.id for k, v in enumerate(results)}
    region.output_kinds = dict.fromkeys(region.outputs, OutputKind.RESULT)


def inline(region: Graph, b: Builder, args: Sequence[Val]) -> list[Val]:
    """Copy `region`'s nodes into `b`'s graph with its args bound to `args`; its results."""
    env = inline_env(region, b, args)
    return [Val(b, env[i]) for i in region.results()]


def inline_env(region: Graph, b: Builder, args: Sequence[Val]) -> dict[int, int]:
    """`inline`, returning the map from `region`'s node ids to their copies."""
    g = b.graph
    env: dict[int, int] = {a: v.id for a, v in zip(region.args(), args)}
    for nid in region.topo_order():
        n = region[nid]
        if n.op == "arg":
            continue
        if n.op == "const" and nid in region.consts:
            env[nid] = b.const(region.consts[nid], n.type.dtype).id
            continue
        env[nid] = g.add(n.op, [env[i] for i in n.inputs], dict(n.attrs), n.type,
                         role=b.role if n.op != "const" else Role.CONST, name=n.name,
                         loc=n.loc or b.loc, of=b.of, regions=n.regions)
    return env


# ---------------------------------------------------------------- item
def _item_shape(attrs: dict[str, Any], t: Any) -> TensorType:
    if not isinstance(t, TupleType):
        raise ShapeError(f"item: the input has one result ({t}), not several")
    k = attrs["index"]
    if not 0 <= k < len(t.items):
        raise ShapeError(f"item: index {k} out of range for {t}")
    return t.items[k]


register(OpDef("item", _item_shape, lambda xp, tup, index: tup[index], None,
               attrs={"index": 0}, arity=1,
               doc="result `index` of a node with several (its gradient is gathered by the "
                   "node's VJP)"))


# ---------------------------------------------------------------- loop: types
def _loop_shape(attrs: dict[str, Any], *types: Any, regions: tuple[Graph, ...]) -> TupleType:
    if len(regions) != 1:
        raise ShapeError("loop: needs one body region")
    body = regions[0]
    length, nc, ns = attrs["length"], attrs["n_carry"], attrs["n_seq"]
    until = int(attrs["until"])
    if attrs["dynamic"]:
        if not types or types[-1] != I64:
            got = types[-1] if types else "no input"
            raise ShapeError(f"loop: a loop with a run-time trip count (dynamic) takes the "
                             f"count as its last input, an i64[]; got {got}")
        types = types[:-1]
    if until and attrs["reverse"]:
        raise ShapeError("loop: an early-exit loop (until) runs forward, not in reverse")
    args = [body[i].type for i in body.args()]
    res = [body[i].type for i in body.results()]
    if len(args) != len(types) + 1 or args[:1] != [I64]:
        raise ShapeError(f"loop: the body takes (t: i64[], one value per input): "
                         f"{len(args)} args for {len(types)} inputs")
    if len(res) < nc + until:
        raise ShapeError(f"loop: the body yields {len(res)} results for {nc} carried values"
                         + (" and a stop flag" if until else ""))
    for k in range(nc):
        if not types[k] == args[1 + k] == res[k]:
            raise ShapeError(f"loop: carried value {k} enters as {types[k]}, is read as "
                             f"{args[1 + k]} and leaves the body as {res[k]}")
    if until and res[nc] != TensorType("bool", ()):
        raise ShapeError(f"loop: an early-exit loop (until) yields its stop flag, a bool[], "
                         f"after its {nc} carried values; got {res[nc]}")
    for k in range(nc, nc + ns):
        t, a = types[k], args[1 + k]
        if not isinstance(t, TensorType) or t.rank == 0 or t.shape[0] != length or (
                TensorType(t.dtype, t.shape[1:]) != a):
            raise ShapeError(f"loop: sequence input {k - nc} is {t}; a loop of length "
                             f"{length} over slices {a} needs {a.dtype}[{length},...]")
    for k in range(nc + ns, len(types)):
        if types[k] != args[1 + k]:
            raise ShapeError(f"loop: captured value {k} is {types[k]} but the body reads "
                             f"{args[1 + k]}")
    stacked = tuple(TensorType(r.dtype, (length, *r.shape)) for r in res[nc + until:])
    return TupleType(tuple(res[:nc]) + (I64,) * until + stacked)


def loop_type(attrs: dict[str, Any], types: Sequence[Any], body: Graph) -> TupleType:
    """The result type of a loop with these attributes, input types and body."""
    return _loop_shape(attrs, *types, regions=(body,))


# ---------------------------------------------------------------- loop: kernel
def _loop_compile(ctx: Any, node: Any, attrs: dict[str, Any]) -> Any:
    """The loop's kernel: the body compiled once into a region plan, run once per iteration;
    stacked values are written into arrays allocated once per run."""
    body = ctx.compile_region(node.regions[0])
    xp = ctx.xp
    nc, ns = attrs["n_carry"], attrs["n_seq"]
    length, reverse, start = int(attrs["length"]), attrs["reverse"], attrs["start"]
    dynamic, until = attrs["dynamic"], attrs["until"]
    first_y = nc + until
    stacked = [(t.concrete(ctx.dims), t.np_dtype()) for t in node.type.items[first_y:]]
    alloc = xp.zeros if dynamic or until else xp.empty  # unwritten rows read as zeros
    ts = [xp.asarray(np.int64(start + k)) for k in range(length)]
    n_in = len(node.inputs) - dynamic
    run = body.run

    def kernel(*inputs: Any) -> tuple[Any, ...]:
        n = min(max(int(inputs[-1]), 0), length) if dynamic else length
        carry = list(inputs[:nc])
        seqs = inputs[nc:nc + ns]
        cap = list(inputs[nc + ns:n_in])
        ys = [alloc(shape, dtype) for shape, dtype in stacked]
        ran = n
        for k in range(n - 1, -1, -1) if reverse else range(n):
            res = run([ts[k], *carry, *[s[k] for s in seqs], *cap])
            carry = res[:nc]
            for y, v in zip(ys, res[first_y:]):
                y[k] = v
            if until and bool(res[nc]):
                ran = k + 1
                break
        if until:
            return (*carry, xp.asarray(np.int64(ran)), *ys)
        return (*carry, *ys)

    return kernel


# ---------------------------------------------------------------- loop: VJP
def _loop_vjp(gs: list[Val | None], out: Val, *inputs: Val, length: Any, n_carry: int,
              n_seq: int, reverse: bool, start: int, dynamic: bool, until: bool
              ) -> tuple[Val | None, ...]:
    b = out.b
    body = out.node.regions[0]
    nc, ns, u = n_carry, n_seq, int(until)
    ny = len(body.results()) - nc - u
    carries, seqs = inputs[:nc], inputs[nc:nc + ns]
    caps = inputs[nc + ns:len(inputs) - dynamic]
    floats = [k for k in range(nc) if carries[k].type.is_float]
    fcaps = [k for k in range(len(caps)) if caps[k].type.is_float]
    fseqs = [k for k in range(ns) if seqs[k].type.is_float]
    if not (floats or fcaps or fseqs):
        return (None,) * len(inputs)
    # cotangents of the final carries (zeros where none) and of the stacked values that have
    gc = [gs[k] if gs[k] is not None else _zeros(b, carries[k].type) for k in floats]
    gy = [(j, gs[nc + u + j]) for j in range(ny) if gs[nc + u + j] is not None]
    # the backward body: args t, ct carries, ct capture sums, carry in, x_t, ct_y_t, captured;
    # it recomputes the forward body, takes its VJP, then reads the forward values that VJP
    # needs (the residuals) from slices the forward loop stacks instead of recomputing them
    arg_types = ([TensorType("i64", ())] + [carries[k].type for k in floats]
                 + [caps[k].type for k in fcaps] + [c.type for c in carries]
                 + [_slice(s.type) for s in seqs] + [_slice(g.type) for _, g in gy]
                 + [c.type for c in caps])
    rg, rb, a = new_region(arg_types)
    t, a = a[0], a[1:]
    ct_c, a = a[:len(floats)], a[len(floats):]
    ct_cap, a = a[:len(fcaps)], a[len(fcaps):]
    c_t, a = a[:nc], a[nc:]
    x_t, a = a[:ns], a[ns:]
    ct_y, cap = a[:len(gy)], a[len(gy):]
    with rb.context(role=b.role):
        env = inline_env(body, rb, [t, *c_t, *x_t, *cap])
        res = [Val(rb, env[i]) for i in body.results()]
        boundary = rg.next_id  # nodes from here on belong to the VJP
        seeds: dict[int, Val] = {}
        for k, g in zip(floats, ct_c):
            _seed(seeds, res[k], g)
        for (j, _), g in zip(gy, ct_y):
            _seed(seeds, res[nc + u + j], g)
        wrt = [c_t[k].id for k in floats] + [x_t[k].id for k in fseqs] + \
            [cap[k].id for k in fcaps]
        grads = b.differentiate(rb, seeds, wrt)  # the driver that called this VJP
        g_c = grads[:len(floats)]
        g_x = grads[len(floats):len(floats) + len(fseqs)]
        g_cap = grads[len(floats) + len(fseqs):]
        new_ct_c = [g if g is not None else _zeros(rb, c.type) for g, c in zip(g_c, ct_c)]
        new_ct_cap = [acc + g if g is not None else acc for acc, g in zip(ct_cap, g_cap)]
        ys = [g if g is not None else _zeros(rb, x_t[k].type) for k, g in zip(fseqs, g_x)]
    set_results(rg, [*new_ct_c, *new_ct_cap, *ys])
    residuals = [i for i in body.topo_order() if body[i].op not in ("arg", "const")
                 and not isinstance(body[i].type, TupleType)
                 and any(u >= boundary for u in rg.users(env[i]))]
    res_args = []
    for i in residuals:  # the VJP reads a stacked slice instead of the recomputed value
        r = rg.add("arg", (), {"index": -1}, body[i].type, role=Role.ARG)
        rg.redirect(env[i], r)
        res_args.append(r)
    live = rg.topo_order(rg.roots())
    for i in reversed(rg.topo_order()):
        if i not in live and rg[i].op != "arg":
            rg.remove(i)
    order = ([t.id] + [v.id for v in (*ct_c, *ct_cap, *c_t, *x_t, *ct_y)] + res_args
             + [v.id for v in cap])
    for k, i in enumerate(order):
        rg.replace_node(i, attrs={"index": k})
    stacked = _stack_in_forward(out, [*body.args()[1:1 + nc], *residuals])
    init = [*gc, *(_zeros(b, caps[k].type) for k in fcaps)]
    # the iterations run: the backward loop runs over those only
    count = [b.emit("item", out, index=nc)] if until else list(inputs[-1:]) if dynamic else []
    back = b.emit("loop", *init, *stacked[:nc], *seqs, *(g for _, g in gy), *stacked[nc:],
                  *caps, *count, regions=(rg,), length=length, n_carry=len(init),
                  n_seq=nc + ns + len(gy) + len(residuals), reverse=not reverse, start=start,
                  dynamic=bool(count), until=False)
    outs = [b.emit("item", back, index=k) for k in range(len(init) + len(fseqs))]
    grads_in: list[Val | None] = [None] * len(inputs)
    for pos, k in enumerate(floats):
        grads_in[k] = outs[pos]
    for pos, k in enumerate(fcaps):
        grads_in[nc + ns + k] = outs[len(floats) + pos]
    for pos, k in enumerate(fseqs):
        grads_in[nc + k] = outs[len(init) + pos]
    return tuple(grads_in)


def _seed(seeds: dict[int, Val], v: Val, g: Val) -> None:
    seeds[v.id] = seeds[v.id] + g if v.id in seeds else g


def _slice(t: TensorType) -> TensorType:
    return TensorType(t.dtype, t.shape[1:])


def _zeros(b: Builder, t: TensorType) -> Val:
    return b.emit("full", shape=t.shape, value=0.0, dtype=t.dtype)


def _stack_in_forward(out: Val, nodes: list[int]) -> list[Val]:
    """Extend the forward loop (in place) to also stack the values of these body nodes (carry
    args: the carry entering each iteration); their stacked arrays, as items. Dead-code
    elimination drops the ones the backward loop ends up not reading."""
    b, node = out.b, out.node
    ext = node.regions[0].copy()
    results = ext.results()
    first_y = node.attrs["n_carry"] + node.attrs["until"]
    where = {r: k for k, r in enumerate(results) if k >= first_y}  # already stacked: reuse
    new = [i for i in dict.fromkeys(nodes) if i not in where]
    where.update((i, len(results) + k) for k, i in enumerate(new))
    if new:
        set_results(ext, [Val(Builder(ext), i) for i in (*results, *new)])
        types = [b.graph[i].type for i in node.inputs]
        b.graph.replace_node(node.id, regions=(ext,), type=loop_type(node.attrs, types, ext))
    return [b.emit("item", out, index=where[i]) for i in nodes]


register(OpDef("loop", _loop_shape, None, _loop_vjp, attrs=dict(LOOP_ATTRS), regions=True,
               compile=_loop_compile,
               doc="a scan over a body region: carried values, sliced sequences, stacked "
                   "per-iteration values; the trip count may be a run-time input (dynamic) and "
                   "the body may stop it early (until)"))


class LoopResults(NamedTuple):
    """A loop's results as `loop` reads them: the final carries, the stacked values and, for
    an early-exit loop, the number of iterations run (else None)."""

    carries: list[Val]
    stacked: list[Val]
    count: Val | None = None


def loop(b: Builder, body: Graph, carries: Sequence[Val], seqs: Sequence[Val],
         captured: Sequence[Val], length: Any, reverse: bool = False, start: int = 0, *,
         n: Val | None = None, until: bool = False, checkpoint: int | None = None
         ) -> LoopResults:
    """Emit a loop over `body` and read its results. `n`: a run-time trip count (an i64
    scalar; `length` is then the most iterations); `until`: the body yields a stop flag after
    its carries; `checkpoint = K`: recompute instead of storing (`checkpointed`)."""
    if checkpoint is not None:
        if n is not None or until:
            raise ShapeError("loop: checkpoint = K needs a fixed trip count (no run-time "
                             "count, no until)")
        return checkpointed(b, body, carries, seqs, captured, length, checkpoint, reverse,
                            start)
    node = b.emit("loop", *carries, *seqs, *captured, *([n] if n is not None else []),
                  regions=(body,), length=length, n_carry=len(carries), n_seq=len(seqs),
                  reverse=reverse, start=start, dynamic=n is not None, until=until)
    items = [b.emit("item", node, index=k) for k in range(len(node.type.items))]
    nc = len(carries)
    return LoopResults(items[:nc], items[nc + until:], items[nc] if until else None)


def checkpointed(b: Builder, body: Graph, carries: Sequence[Val], seqs: Sequence[Val],
                 captured: Sequence[Val], length: Any, every: int, reverse: bool = False,
                 start: int = 0) -> LoopResults:
    """The loop of `body` (as `loop` emits it) as segments of `every` iterations: an outer
    loop over the length // every segments whose body runs an inner loop over one segment
    (sequences reshaped to [segments, every, ...], stacked values back; the inner index is
    t = start + segment * every + k), then a plain loop over the length % every iterations
    left (before the segments when `reverse`). The outer loop's VJP stacks the carries
    entering each segment; its backward body recomputes the segment (the inner loop, a node
    with several results, is never a residual) and runs the inner loop's VJP."""
    if not isinstance(length, int):
        raise ShapeError(f"loop: checkpoint = {every} needs a compile-time trip count, not "
                         f"the symbolic {length}")
    if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= length:
        raise ShapeError(f"loop: checkpoint = {every!r} must be an integer in 1 .. {length} "
                         f"(the trip count)")
    segs, rest = divmod(length, every)
    main = segs * every

    def rows(lo: int, hi: int) -> list[Val]:
        if (lo, hi) == (0, length):
            return list(seqs)
        return [b.emit("getitem", x, index=(("s", lo, hi, 1),)) for x in seqs]

    def segments(init: Sequence[Val]) -> tuple[list[Val], list[Val]]:
        xs = [b.emit("reshape", x, shape=(segs, every, *x.type.shape[1:]))
              for x in rows(0, main)]
        outer = loop(b, _segment_body(body, b, init, xs, captured, every, reverse, start),
                     init, xs, captured, segs, reverse)
        return outer.carries, [b.emit("reshape", y, shape=(main, *y.type.shape[2:]))
                               for y in outer.stacked]

    def tail(init: Sequence[Val]) -> tuple[list[Val], list[Val]]:
        r = loop(b, body, init, rows(main, length), captured, rest, reverse, start + main)
        return r.carries, r.stacked

    if not rest:
        return LoopResults(*segments(carries))
    if reverse:
        c, ys_tail = tail(carries)
        c, ys_main = segments(c)
    else:
        c, ys_main = segments(carries)
        c, ys_tail = tail(c)
    return LoopResults(c, [b.emit("concat", m, t, axis=0) for m, t in zip(ys_main, ys_tail)])


def _segment_body(body: Graph, b: Builder, carries: Sequence[Val], xs: Sequence[Val],
                  captured: Sequence[Val], every: int, reverse: bool, start: int) -> Graph:
    """The outer body of `checkpointed`: args (segment s, carries, sequence segments,
    captured), one inner loop of `every` iterations of `body` over the segment."""
    nc, ns = len(carries), len(xs)
    names = [body[i].name for i in body.args()]
    uses_t = bool(body.users(body.args()[0]))
    og, ob, oa = new_region([I64, *(v.type for v in carries), *(_slice(x.type) for x in xs),
                             *(v.type for v in captured)], [None, *names[1:]])
    ig, ib, ia = new_region([I64, *(v.type for v in carries),
                             *(_slice(_slice(x.type)) for x in xs),
                             *(v.type for v in captured), *[I64] * uses_t], names)
    with ob.context(role=b.role), ib.context(role=b.role):
        k, cap = ia[0], ia[1 + nc + ns:1 + nc + ns + len(captured)]
        t = k + ia[-1] if uses_t else k  # t = start + s * every + k
        set_results(ig, inline(body, ib, [t, *ia[1:1 + nc + ns], *cap]))
        s = oa[0]
        base = [s * every + start if start else s * every] if uses_t else []
        inner = loop(ob, ig, oa[1:1 + nc], oa[1 + nc:1 + nc + ns], [*oa[1 + nc + ns:], *base],
                     every, reverse)
    set_results(og, [*inner.carries, *inner.stacked])
    return og
