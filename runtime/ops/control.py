"""Control flow: `loop`, a scan over a body region compiled once, and `item`, one result of a
node with several.

`loop` follows JAX's `scan` (carry, xs) -> (carry, ys). Its inputs are the initial carried
values (`n_carry`), the sequences it slices along their first axis (`n_seq`) and the outer
values its body reads (the rest). Its body region has `arg` leaves (the iteration index `t`,
an i64 scalar, then one per input: carries, one slice of each sequence, captured values) and
results (the next carries, then the values of this iteration to stack). The loop's results
(read with `item {index=k}`) are the final carries and the stacked values, whose first axis
is the trip count `length` (an int or a symbolic dim). Iteration k sees `t = start + k'`,
slice k' and stores its stacked values at k', where k' = k, or length-1-k when `reverse`.

The VJP of a loop is another loop, running the other way over residuals (as JAX's scan
transpose): the backward body applies the forward body's own VJP, and the forward values that
VJP reads (and the carry entering each iteration) are stacked by the forward loop, extended in
place, instead of being recomputed. Gradients of gradients work, since the backward loop is a
loop of registered ops again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runtime.ir import Graph, OutputKind, Role, TensorType, TupleType
from runtime.ops.builder import Builder, Val
from runtime.ops.registry import OpDef, ShapeError, register

__all__ = ["inline", "loop", "loop_type", "new_region", "set_results"]

LOOP_ATTRS = {"length": 1, "n_carry": 0, "n_seq": 0, "reverse": False, "start": 0}


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
    args = [body[i].type for i in body.args()]
    res = [body[i].type for i in body.results()]
    if len(args) != len(types) + 1 or args[:1] != [TensorType("i64", ())]:
        raise ShapeError(f"loop: the body takes (t: i64[], one value per input): "
                         f"{len(args)} args for {len(types)} inputs")
    if len(res) < nc:
        raise ShapeError(f"loop: the body yields {len(res)} results for {nc} carried values")
    for k in range(nc):
        if not types[k] == args[1 + k] == res[k]:
            raise ShapeError(f"loop: carried value {k} enters as {types[k]}, is read as "
                             f"{args[1 + k]} and leaves the body as {res[k]}")
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
    stacked = tuple(TensorType(r.dtype, (length, *r.shape)) for r in res[nc:])
    return TupleType(tuple(res[:nc]) + stacked)


def loop_type(attrs: dict[str, Any], types: Sequence[Any], body: Graph) -> TupleType:
    """The result type of a loop with these attributes, input types and body."""
    return _loop_shape(attrs, *types, regions=(body,))


# ---------------------------------------------------------------- loop: kernel
def _loop_compile(ctx: Any, node: Any, attrs: dict[str, Any]) -> Any:
    """The loop's kernel: the body compiled once into a region plan, run `length` times;
    stacked values are written into arrays allocated once per run."""
    body = ctx.compile_region(node.regions[0])
    xp = ctx.xp
    nc, ns = attrs["n_carry"], attrs["n_seq"]
    length, reverse, start = int(attrs["length"]), attrs["reverse"], attrs["start"]
    stacked = [(t.concrete(ctx.dims), t.np_dtype()) for t in node.type.items[nc:]]
    ks = range(length - 1, -1, -1) if reverse else range(length)
    ts = [xp.asarray(np.int64(start + k)) for k in range(length)]
    run = body.run

    def kernel(*inputs: Any) -> tuple[Any, ...]:
        carry = list(inputs[:nc])
        seqs = inputs[nc:nc + ns]
        cap = list(inputs[nc + ns:])
        ys = [xp.empty(shape, dtype) for shape, dtype in stacked]
        for k in ks:
            res = run([ts[k], *carry, *[s[k] for s in seqs], *cap])
            carry = res[:nc]
            for y, v in zip(ys, res[nc:]):
                y[k] = v
        return (*carry, *ys)

    return kernel


# ---------------------------------------------------------------- loop: VJP
def _loop_vjp(gs: list[Val | None], out: Val, *inputs: Val, length: Any, n_carry: int,
              n_seq: int, reverse: bool, start: int) -> tuple[Val | None, ...]:
    b = out.b
    body = out.node.regions[0]
    nc, ns = n_carry, n_seq
    ny = len(body.results()) - nc
    carries, seqs, caps = inputs[:nc], inputs[nc:nc + ns], inputs[nc + ns:]
    floats = [k for k in range(nc) if carries[k].type.is_float]
    fcaps = [k for k in range(len(caps)) if caps[k].type.is_float]
    fseqs = [k for k in range(ns) if seqs[k].type.is_float]
    if not (floats or fcaps or fseqs):
        return (None,) * len(inputs)
    # cotangents of the final carries (zeros where none) and of the stacked values that have
    gc = [gs[k] if gs[k] is not None else _zeros(b, carries[k].type) for k in floats]
    gy = [(j, gs[nc + j]) for j in range(ny) if gs[nc + j] is not None]
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
        boundary = rg._next  # nodes from here on belong to the VJP
        seeds: dict[int, Val] = {}
        for k, g in zip(floats, ct_c):
            _seed(seeds, res[k], g)
        for (j, _), g in zip(gy, ct_y):
            _seed(seeds, res[nc + j], g)
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
    back = b.emit("loop", *init, *stacked[:nc], *seqs, *(g for _, g in gy), *stacked[nc:],
                  *caps, regions=(rg,), length=length, n_carry=len(init),
                  n_seq=nc + ns + len(gy) + len(residuals), reverse=not reverse, start=start)
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
    nc = node.attrs["n_carry"]
    where = {r: k for k, r in enumerate(results) if k >= nc}  # already stacked: reuse
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
                   "per-iteration values"))


def loop(b: Builder, body: Graph, carries: Sequence[Val], seqs: Sequence[Val],
         captured: Sequence[Val], length: Any, reverse: bool = False, start: int = 0
         ) -> tuple[list[Val], list[Val]]:
    """Emit a loop over `body` and read its results: (final carries, stacked values)."""
    node = b.emit("loop", *carries, *seqs, *captured, regions=(body,), length=length,
                  n_carry=len(carries), n_seq=len(seqs), reverse=reverse, start=start)
    items = [b.emit("item", node, index=k) for k in range(len(node.type.items))]
    return items[:len(carries)], items[len(carries):]
