"""A plan: one graph compiled for one binding of symbolic dims on one backend, and run.

`Plan` binds symbolic dims to sizes, orders the needed nodes once, resolves attributes and
binds each kernel to its backend and attributes (`PlanContext`, which also compiles a loop's
body into a `RegionPlan`), and allocates slots. A step is then one loop over `(kernel, input
slots, output slot)` triples: no graph walking, no shape inference, no dict lookups.
Parameters and state live in persistent buffers that updates overwrite in place. The
buffer-reusing step that replaces the plain one on NumPy is built by `runtime.plan.buffers`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.backends import Backend
from runtime.dtypes import NP_TO_DTYPE
from runtime.errors import UserError
from runtime.ir import LEAF_OPS, Graph, IRError, Loc, concrete_attrs, with_gc_paused
from runtime.ops import REGISTRY
from runtime.plan.buffers import FastStep, build_fast_step, build_region_step
from runtime.plan.codegen import codegen
from runtime.plan.scan import scan_kernel

__all__ = ["NonFiniteError", "Plan", "PlanContext", "RegionPlan"]


class NonFiniteError(UserError):
    """A node produced NaN or Inf (raised by `--nan-check` runs)."""

    def __init__(self, nid: int, op: str, loc: Loc | None, of_op: str | None,
                 of_loc: Loc | None, name: str | None, inputs: tuple[str, ...] = ()) -> None:
        head = f"non-finite value produced by node %{nid} ({op})"
        tail = f" [{name}]" if name else ""
        if of_op is not None:
            tail += f"; it is part of the gradient of {of_op}" + (f" at {of_loc}" if of_loc else "")
        self.what = head + tail  # without the node's own position, for callers that show it
        self.inputs = inputs  # one line per input: its node, type and range (`value_range`)
        lines = "".join(f"\n  {line}" for line in inputs)
        super().__init__(head + (f" at {loc}" if loc else "") + tail
                         + (f"; its inputs:{lines}" if inputs else ""))
        self.nid, self.op, self.loc = nid, op, loc


def value_range(xp: Any, v: Any) -> str:
    """`f32[64,10] min -3.1 max 4.2` (floats also count NaN and Inf), for `--nan-check`."""
    arr = xp.asarray(v)
    kind = arr.dtype.kind
    head = f"{NP_TO_DTYPE.get(arr.dtype, arr.dtype)}{list(arr.shape)}"
    if arr.size == 0 or kind not in "fiub":
        return head
    if kind != "f":
        return f"{head} min {arr.min()} max {arr.max()}"
    finite = xp.isfinite(arr)
    bad = [f"{int(n)} {what}" for n, what in ((xp.isnan(arr).sum(), "NaN"),
                                               ((~finite & ~xp.isnan(arr)).sum(), "Inf"))
           if int(n)]
    ok = arr[finite]
    span = f" min {float(ok.min()):.6g} max {float(ok.max()):.6g}" if ok.size else ""
    return head + span + (f" ({', '.join(bad)})" if bad else "")


@dataclass
class _Instr:
    fn: Any
    ins: tuple[int, ...]
    out: int
    nid: int
    attrs: dict[str, Any]  # concrete attributes (the out= forms of runtime.plan.buffers read them)


class PlanContext:
    """What a kernel may need when its plan is built, handed to an op's `compile` hook: the
    array module, the bound dims, the run's generator (through a proxy, so that a generator
    restored from a checkpoint takes effect) and `compile_region` for a loop's body."""

    def __init__(self, backend: Backend, dims: Mapping[str, int], rng: Any,
                 reuse_buffers: Callable[[], bool] = lambda: False) -> None:
        self.backend = backend
        self.xp = backend.xp
        self.dims = dims
        self.rng = rng
        # whether region bodies reuse buffers, asked at their first run (so that setting
        # `Plan.reuse_buffers` on a plan before its first step takes effect)
        self.reuse_buffers = reuse_buffers
        self._compiling: Any = None  # the node whose compile hook is running

    def kernel(self, node: Any) -> tuple[Any, dict[str, Any]]:
        """The kernel of a node (its op's forward, or what its compile hook makes; the plan's
        own driver for loops of a fixed trip count, `runtime.plan.scan`) and the node's
        attributes with symbolic dims bound."""
        opdef = REGISTRY[node.op]
        attrs = concrete_attrs(node.attrs, self.dims)
        if node.op == "loop":
            fn = scan_kernel(self, node, attrs)
            if fn is not None:
                return fn, attrs
        if opdef.compile is not None:
            outer, self._compiling = self._compiling, node
            try:
                return opdef.compile(self, node, attrs), attrs
            finally:
                self._compiling = outer
        return functools.partial(opdef.forward, self.xp, **attrs), attrs

    def compile_region(self, region: Graph, copied: Any = None) -> RegionPlan:
        """`region` compiled into a `RegionPlan` whose results at positions `copied` are
        copied by the caller before the next run (they may live in reused buffers). By
        default, for the body of the `loop` being compiled: its stacked results (the loop
        copies them into its stacked arrays; its carries, which the next iteration reads,
        get new arrays)."""
        if copied is None:
            node = self._compiling
            copied = range(0)
            if (node is not None and node.op == "loop" and node.regions
                    and node.regions[0] is region):
                copied = range(node.attrs["n_carry"] + node.attrs["until"],
                               len(region.results()))
        return RegionPlan(region, self, copied)


class RegionPlan:
    """A region (a loop's body) compiled once: `run(args)` sets its `arg` slots, runs its
    kernels in order (generated code, no graph walking) and returns its results. (The plan's
    loop driver, `runtime.plan.scan`, writes the slots itself and calls `plain_run` or a
    step from `layouts`.)

    On NumPy (`PlanContext.reuse_buffers`), a run after a plain one with the same argument
    layouts uses a buffer-reusing step (`runtime.plan.buffers.build_region_step`), one per
    layout of the arguments (the first iteration's carries may differ from the later ones'),
    at most `MAX_LAYOUTS` per layout of the values that stay fixed through a loop. Results are
    bit-identical either way. The results at positions `copied` may be such buffers,
    overwritten by the next run; the others are new arrays."""

    MAX_LAYOUTS = 4

    def __init__(self, region: Graph, ctx: PlanContext, copied: Any = ()) -> None:
        order = region.topo_order()
        slot = {nid: k for k, nid in enumerate(order)}
        self.region = region
        self.dims = ctx.dims
        self.kernels = ctx.backend.kernels  # the backend's table of out= forms
        self.vals: list[Any] = [None] * len(order)
        self.arg_slots = [slot[i] for i in region.args()]
        self.result_slots = [slot[i] for i in region.results()]
        self.const_slots = {slot[i] for i in order if region[i].op == "const"}
        self.instrs: list[_Instr] = []
        for nid in order:
            n = region[nid]
            if n.op == "const":
                self.vals[slot[nid]] = ctx.backend.asarray(region.consts[nid],
                                                           dtype=n.type.np_dtype())
            elif n.op not in LEAF_OPS:
                fn, attrs = ctx.kernel(n)
                self.instrs.append(_Instr(fn, tuple(slot[i] for i in n.inputs), slot[nid], nid,
                                          attrs))
        self.steps = [(i.fn, i.ins, i.out) for i in self.instrs]  # the plain step
        copied = set(copied)
        self.escaping = {s for k, s in enumerate(self.result_slots) if k not in copied}
        self._plain = codegen(self.steps, "_region")
        self._ctx: PlanContext | None = ctx
        self._reuse = False
        # fixed layouts -> (argument layouts -> the buffer-reusing step), and its kernels
        self._fast: dict[Any, dict[tuple, Any]] = {}
        self._no_more: dict[tuple, Any] = {}
        self.fast_steps: dict[tuple, list[tuple[Any, tuple[int, ...], int]]] = {}

    def layouts(self, fixed: Any) -> dict[tuple, Any]:
        """The buffer-reusing steps for runs whose fixed arguments have layout `fixed`, by the
        layout of the others (filled by `plain_run`)."""
        got = self._fast.get(fixed)
        if got is None:
            if len(self._fast) >= self.MAX_LAYOUTS:
                return self._no_more  # no more steps are built
            got = self._fast[fixed] = {}
        return got

    def plain_run(self, vals: list[Any], key: tuple, fast: dict[tuple, Any]) -> None:
        """Run the plain step on the argument slots already written; then, on NumPy, build
        the buffer-reusing step for this layout `key` into `fast` (at most `MAX_LAYOUTS`)."""
        self._plain(vals)
        if self._ctx is not None:  # the first run
            self._reuse = bool(self._ctx.reuse_buffers()) and self._ctx.xp is np
            self._ctx = None
        if self._reuse and len(fast) < self.MAX_LAYOUTS and fast is not self._no_more:
            steps = build_region_step(self)
            self.fast_steps[(id(fast), key)] = steps
            fast[key] = codegen(steps, "_region_step")

    def run(self, args: Any) -> list[Any]:
        vals = self.vals
        for s, a in zip(self.arg_slots, args):
            vals[s] = a
        key = tuple([a.strides for a in args])
        fast = self.layouts(None)
        step = fast.get(key)
        if step is None:
            self.plain_run(vals, key, fast)
        else:
            step(vals)
        return [vals[s] for s in self.result_slots]


class Plan:
    """One compiled graph for one binding of symbolic dims on one backend.

    `outputs` are the names in `graph.outputs` to return; when `apply_updates` is true the
    graph's updates are computed and written into the variable buffers after the step.

    On NumPy, after the first step the plan switches to a buffer-reusing step (see
    `runtime.plan.buffers`); `reuse_buffers = False` (on the class or an instance before its first
    step) keeps the plain loop. Results are bit-identical either way.
    """

    reuse_buffers = True

    @with_gc_paused
    def __init__(self, graph: Graph, dims: Mapping[str, int], backend: Backend,
                 variables: dict[str, Any], outputs: list[str] | None = None,
                 apply_updates: bool = True, rng: Any = None) -> None:
        self.graph = graph
        self.dims = dict(dims)
        self.backend = backend
        self.variables = variables  # name -> persistent backend array (updated in place)
        self.output_names = list(graph.outputs) if outputs is None else list(outputs)
        self.rng = rng
        targets = [graph.outputs[n] for n in self.output_names]
        upd = dict(graph.updates) if apply_updates else {}
        targets += list(upd.values())
        order = graph.topo_order(targets) if targets else []
        slot = {nid: k for k, nid in enumerate(order)}
        self.vals: list[Any] = [None] * len(order)
        self.feed_slots: list[tuple[str, int, tuple, Any]] = []
        self.var_slots: list[tuple[str, int]] = []
        self.instrs: list[_Instr] = []
        xp = backend.xp
        ctx = PlanContext(backend, dims, _RngProxy(self), lambda: self.reuse_buffers)
        for nid in order:
            n = graph[nid]
            if n.op == "input":
                self.feed_slots.append((n.name, slot[nid], n.type.concrete(dims),
                                        n.type.np_dtype()))
            elif n.op in ("param", "state"):
                if n.name not in variables:
                    raise IRError(f"no value for variable {n.name!r}")
                self.var_slots.append((n.name, slot[nid]))
            elif n.op == "const":
                self.vals[slot[nid]] = backend.asarray(graph.consts[nid],
                                                       dtype=n.type.np_dtype())
            else:
                fn, attrs = ctx.kernel(n)
                self.instrs.append(_Instr(fn, tuple(slot[i] for i in n.inputs), slot[nid], nid,
                                          attrs))
        self.out_slots = [slot[graph.outputs[n]] for n in self.output_names]
        self.upd_slots = [(name, slot[nid]) for name, nid in upd.items()]
        self.leaf_slots = {slot[i] for i in order if graph[i].op in LEAF_OPS}
        self._upd_alias = {s for _, s in self.upd_slots if s in self.leaf_slots}
        self.steps = [(i.fn, i.ins, i.out) for i in self.instrs]  # the plain step
        self.const_slots = {slot[i] for i in order if graph[i].op == "const"}
        # the buffer-reusing step (runtime.plan.buffers): built after the first plain step
        self.fast: FastStep | None = None
        # training plans only: an evaluation plan keeps no buffers between its (rare) runs
        self._fast_state = ("new" if self.reuse_buffers and xp is np and self.upd_slots
                            else "off")
        self._pending: str | None = None  # how the last `compute` ran (for `commit`)

    def _load(self, feeds: Mapping[str, Any]) -> None:
        vals = self.vals
        for name, s in self.var_slots:
            vals[s] = self.variables[name]
        for name, s, _shape, dtype in self.feed_slots:
            try:
                v = feeds[name]
            except KeyError:
                raise IRError(f"no value fed for input {name!r}") from None
            vals[s] = self.backend.asarray(v, dtype=dtype)

    def run(self, feeds: Mapping[str, Any], check_finite: bool = False) -> list[Any]:
        """Run one step; returns the outputs in `self.output_names` order."""
        results = self.compute(feeds, check_finite)
        if self.upd_slots:
            self.commit()
        return results

    def compute(self, feeds: Mapping[str, Any], check_finite: bool = False) -> list[Any]:
        """The first half of `run`: compute outputs and new values without writing the
        variables. `commit()` then writes the updates; skipping it discards them."""
        self._load(feeds)
        vals = self.vals
        if check_finite:
            self._pending = "plain"
            self._run_checked()
        elif self.fast is not None and self._fast_ok(self.fast):
            self._pending = "fast"
            self.fast.step(vals)
        else:
            self._pending = "plain"
            for fn, ins, out in self.steps:
                vals[out] = fn(*[vals[i] for i in ins])
            if self._fast_state == "new":
                self._fast_state = "built"
                self.fast = build_fast_step(self)
        return [vals[s] for s in self.out_slots]

    def commit(self) -> None:
        """Write the updates computed by the last `compute` into the variable buffers."""
        vals = self.vals
        upd = self.upd_slots
        fast = self.fast
        if self._pending == "fast" and fast is not None:  # commit's kernels write in place
            self._pending = "fast-done"
            variables = self.variables
            if all(variables.get(name) is arr for name, arr in fast.inplace_vars):
                fast.commit(vals)
                upd = fast.copies
            else:  # a variable was replaced since `compute`: its plain kernels, then copies
                self._pending = "plain"
                for fn, ins, out in fast.deferred_plain:
                    vals[out] = fn(*[vals[i] for i in ins])
        elif self._pending == "fast-done" and fast is not None:
            upd = fast.copies
        new = [(name, vals[s].copy() if s in self._upd_alias else vals[s]) for name, s in upd]
        copyto = self.backend.xp.copyto
        for name, v in new:
            copyto(self.variables[name], v)

    def _fast_ok(self, fast: FastStep) -> bool:
        """The fast step fits this call: the fed arrays have the layout it was built for and
        the variables it updates in place are still the same arrays (else it is rebuilt)."""
        if self.feed_sig() != fast.feed_sig:
            return False
        variables = self.variables
        for name, arr in fast.inplace_vars:
            if variables.get(name) is not arr:
                self.fast = None
                self._fast_state = "new"
                return False
        return True

    def feed_sig(self) -> tuple:
        """The memory layout of the fed arrays: the fast step is specialized to it."""
        vals = self.vals
        return tuple([vals[s].strides for _n, s, _sh, _dt in self.feed_slots])

    def _run_checked(self) -> None:
        xp = self.backend.xp
        vals = self.vals
        for ins in self.instrs:
            vals[ins.out] = v = ins.fn(*[vals[i] for i in ins.ins])
            if getattr(v, "dtype", None) is not None and v.dtype.kind == "f" and not bool(
                    xp.all(xp.isfinite(v))):
                n = self.graph[ins.nid]
                of = self.graph.nodes.get(n.of) if n.of is not None else None
                inputs = tuple(f"%{i} ({self.graph[i].op}): {value_range(xp, vals[s])}"
                               for i, s in zip(n.inputs, ins.ins))
                raise NonFiniteError(ins.nid, n.op, n.loc, of.op if of else None,
                                     of.loc if of else None, n.name, inputs)


class _RngProxy:
    """Forwards to the plan's current generator, so a restored generator takes effect."""

    __slots__ = ("plan",)

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self.plan.rng, name)
