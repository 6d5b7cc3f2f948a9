"""The buffer-reusing step of a plan on NumPy, built from a plain step that just ran (the
plan's `vals` hold every value it made).

* Kernels: an instruction whose op has an `out=` form (`runtime.plan.out_kernels`) and whose
  plain result was a new array writes into a plan-owned buffer instead of allocating. Each
  such kernel is run once against the plain result (same bytes, same strides) or keeps its
  plain kernel.
* Outputs, and whatever they may be views of, always get new arrays (callers keep them).
* Updates in place (`plan_inplace`): an update value made by such a kernel from nothing an
  output needs is computed by `commit`, straight into the variable's buffer (no copy), when no
  later update kernel still reads the variable's old value; the step runs the rest. Other
  update values keep their buffer to the end of the step and are copied.
* Buffers are shared between values whose lifetimes do not overlap: a linear scan over the
  execution order, where a value that may be a view of a buffer (the result of any kernel
  without an out= form reading it) keeps the buffer alive.
* The steps are generated code (`runtime.plan.codegen`).
* Freed memory stays in the process (`runtime.plan.memory`): the arrays a step still
  allocates come back without page faults.
* A loop's body (`RegionPlan`) gets the same kind of step (`build_region_step`), run once
  per iteration: its carries are new arrays (the next iteration reads them while it writes
  its buffers), its stacked values may be buffers (the loop copies them at once).

Everything here is linear in the number of instructions (times the few variables a value may
be a view of), so that a plan of a deep network builds in time proportional to its size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.backends import KernelTable
from runtime.ir import with_gc_paused
from runtime.plan.assign import buffer_ends, settle_in_place, view_roots
from runtime.plan.codegen import codegen
from runtime.plan.memory import keep_freed_memory
from runtime.plan.out_kernels import (
    OutSpec,
    is_zero,
    layout,
    out_spec,
    spec_key,
    spec_matches,
)

if TYPE_CHECKING:
    from runtime.plan.step import Plan, RegionPlan

__all__ = ["FastStep", "build_fast_step", "build_region_step", "plan_inplace"]


@dataclass
class FastStep:
    """The buffer-reusing step of a plan: `step(vals)` computes everything but the updates
    written in place, which `commit(vals)` writes; `copies` are the (variable, slot) updates
    still copied. It fits while the fed arrays have the layout `feed_sig` and the variables
    written in place are still the arrays in `inplace_vars`."""

    step: Callable[[list[Any]], None]
    commit: Callable[[list[Any]], None]
    copies: list[tuple[str, int]]
    steps: list[tuple[Any, tuple[int, ...], int]]  # every kernel, by instruction (profiling)
    feed_sig: tuple
    inplace_vars: list[tuple[str, Any]]
    deferred_plain: list[tuple[Any, tuple[int, ...], int]]  # commit's plain kernels
    kernels: int  # instructions with an out= form
    inplace: int  # updates written in place


@with_gc_paused
def build_fast_step(plan: Plan) -> FastStep:
    """The buffer-reusing step of `plan` (see the module)."""
    keep_freed_memory()
    xp = plan.backend.xp
    vals = plan.vals
    instrs = plan.instrs
    n = len(instrs)
    zero = {s: is_zero(vals[s]) for s in plan.const_slots}
    specs = _out_specs(xp, plan.backend.kernels, plan.graph, instrs, vals, plan.dims, zero)
    # values that leave the plan (outputs) must be new arrays on every step
    escaping = set(plan.out_slots)
    _drop_escaping(instrs, specs, escaping)
    inplace, deferred = plan_inplace(plan, specs, escaping, zero)
    order = [k for k in range(n) if k not in deferred] + sorted(deferred)
    fixed = {k: (plan.variables[name], spec) for k, (name, spec) in inplace.items()}
    steps = _with_buffers(instrs, plan.steps, vals, order, specs, fixed,
                          [s for _name, s in plan.upd_slots])
    written = {name for name, _spec in inplace.values()}
    return FastStep(
        step=codegen([steps[k] for k in order if k not in deferred], "_step"),
        commit=codegen([steps[k] for k in sorted(deferred)], "_commit"),
        copies=[(name, s) for name, s in plan.upd_slots if name not in written],
        steps=steps,
        feed_sig=plan.feed_sig(),
        inplace_vars=[(name, plan.variables[name]) for name, _spec in inplace.values()],
        deferred_plain=[plan.steps[k] for k in sorted(deferred)],
        kernels=len(specs),
        inplace=len(inplace))


def _out_specs(xp: Any, table: KernelTable, graph: Any, instrs: list[Any], vals: list[Any],
               dims: Mapping[str, int], zero: dict[int, bool]) -> dict[int, OutSpec]:
    """The instructions (by position) whose out= form in `table` computes the bytes their
    plain kernel just made into `vals`. The form of a node is found and checked once per
    `spec_key` (an OutSpec makes a new kernel for each buffer it is given)."""
    specs: dict[int, OutSpec] = {}
    found: dict[tuple, OutSpec | None] = {}
    for k, ins in enumerate(instrs):
        args = [vals[i] for i in ins.ins]
        res = vals[ins.out]
        node = graph[ins.nid]
        zeros = [zero.get(i, False) for i in ins.ins]
        key = spec_key(node, ins.attrs, dims, args, res, zeros)
        spec = _once(found, key, _form, xp, table, node, ins.attrs, dims, args, res, zeros)
        if spec is not None:
            specs[k] = spec
    return specs


def _once(found: dict[tuple, OutSpec | None], key: tuple | None,
          make: Callable[..., OutSpec | None], *args: Any) -> OutSpec | None:
    """`make(*args)` once per `key` (None: every time)."""
    if key is None:
        return make(*args)
    if key not in found:
        found[key] = make(*args)
    return found[key]


def _form(xp: Any, table: KernelTable, node: Any, attrs: Any, dims: Mapping[str, int],
          args: list[Any], res: Any, zeros: list[bool]) -> OutSpec | None:
    """The out= form of a node that gives its plain kernel's bytes, or None."""
    spec = out_spec(xp, node, attrs, dims, args, res, zeros, table=table)
    return spec if spec is not None and spec_matches(spec, args, res) else None


def _inplace_form(xp: Any, table: KernelTable, node: Any, attrs: Any,
                  dims: Mapping[str, int], args: list[Any], res: Any, zeros: list[bool],
                  alias: list[bool], var: Any) -> OutSpec | None:
    """The out= form of an update written into its variable `var` (operands `alias` are the
    variable itself) that gives the plain kernel's bytes, or None."""
    spec = out_spec(xp, node, attrs, dims, args, res, zeros, alias, table)
    return spec if spec is not None and spec_matches(spec, args, res, var.copy(), alias) \
        else None


@with_gc_paused
def build_region_step(rp: RegionPlan) -> list[tuple[Any, tuple[int, ...], int]]:
    """The buffer-reusing steps (by instruction) of a region plan that just ran plainly (its
    `vals` hold every value it made): as a plan's step, without updates; its results other
    than those the caller copies at once (`rp.escaping`) are new arrays."""
    keep_freed_memory()
    vals = rp.vals
    instrs = rp.instrs
    zero = {s: is_zero(vals[s]) for s in rp.const_slots}
    specs = _out_specs(np, rp.kernels, rp.region, instrs, vals, rp.dims, zero)
    _drop_escaping(instrs, specs, set(rp.escaping))
    return _with_buffers(instrs, rp.steps, vals, list(range(len(instrs))), specs, {},
                         rp.result_slots)


def _drop_escaping(instrs: list[Any], specs: dict[int, OutSpec], escaping: set[int]) -> None:
    """Keep the plain kernels of the values in `escaping` (which grows by the inputs of the
    kernels that may return views of them): they must be new arrays on every step."""
    for k in range(len(instrs) - 1, -1, -1):
        ins = instrs[k]
        if ins.out in escaping:
            if k in specs:
                del specs[k]
            else:
                escaping.update(ins.ins)


def _with_buffers(instrs: list[Any], plain: list[tuple[Any, tuple[int, ...], int]],
                  vals: list[Any], order: list[int], specs: dict[int, OutSpec],
                  fixed: dict[int, tuple[Any, OutSpec]], read_after: list[int]
                  ) -> list[tuple[Any, tuple[int, ...], int]]:
    """The steps (by instruction) with the out= kernels of `specs` writing into shared
    buffers and those of `fixed` into their given array. Buffers are shared by liveness along
    `order` (the execution order); a value that may be a view of a buffer keeps it alive, and
    the slots `read_after` are read after the last instruction."""
    end = buffer_ends([(k, instrs[k].ins, instrs[k].out) for k in order], specs, fixed,
                      read_after)
    pool: dict[tuple, list[Any]] = {}
    frees: dict[int, list[int]] = {}
    bufs: dict[int, Any] = {}

    def take(like: Any) -> Any:
        free = pool.get(layout(like))
        return free.pop() if free else np.empty_like(like)

    def give(b: Any) -> None:
        pool.setdefault(layout(b), []).append(b)

    steps = list(plain)
    for p, k in enumerate(order):
        ins = instrs[k]
        if k in fixed:
            out, spec = fixed[k]
        elif k in specs:
            spec = specs[k]
            out = bufs[k] = take(vals[ins.out])
            frees.setdefault(end[k], []).append(k)
        else:
            spec = None
        if spec is not None:
            scratch = [take(like) for like in spec.likes]
            for b in scratch:
                give(b)
            steps[k] = (spec.make(out, scratch), ins.ins, ins.out)
        for b in frees.pop(p, ()):
            give(bufs[b])
    return steps


def plan_inplace(plan: Plan, specs: dict[int, OutSpec], escaping: set[int],
                 zero: dict[int, bool]) -> tuple[dict[int, tuple[str, OutSpec]], set[int]]:
    """The update kernels that write straight into their variable (instruction -> (name,
    spec)) and the instructions `commit` runs (those and every instruction reading their
    results, none of them needed by an output)."""
    vals = plan.vals
    instrs = plan.instrs
    variables = plan.variables
    if not plan.upd_slots or any(s in plan.leaf_slots for _n, s in plan.upd_slots):
        return {}, set()
    producer = {ins.out: k for k, ins in enumerate(instrs)}
    users: dict[int, list[int]] = {}
    for k, ins in enumerate(instrs):
        for i in set(ins.ins):
            users.setdefault(i, []).append(k)
    # the variables each value may be a view of (kernels with an out= form make new arrays)
    run = [(k, ins.ins, ins.out) for k, ins in enumerate(instrs)]
    vroots = view_roots(run, specs, {s: name for name, s in plan.var_slots})
    names_of: dict[int, list[str]] = {}
    for name, s in plan.upd_slots:
        names_of.setdefault(s, []).append(name)
    var_slot = dict(plan.var_slots)
    overlapping = _overlapping(variables)
    cands: dict[int, tuple[str, OutSpec]] = {}
    found: dict[tuple, OutSpec | None] = {}  # in-place forms by `spec_key` and aliasing
    for s, names in names_of.items():
        k = producer.get(s)
        if k is None or k not in specs or s in escaping or len(names) != 1:
            continue
        name = names[0]
        var = variables.get(name)
        res = vals[s]
        if (not isinstance(var, np.ndarray) or layout(var) != layout(res)
                or not var.flags.writeable or name in overlapping):
            continue
        ins = instrs[k]
        # an operand that may be a view of the variable must be the variable itself
        if any(name in vroots.get(i, ()) and i != var_slot.get(name) for i in ins.ins):
            continue
        args = [vals[i] for i in ins.ins]
        alias = [i == var_slot.get(name) for i in ins.ins]
        zeros = [zero.get(i, False) for i in ins.ins]
        node = plan.graph[ins.nid]
        key = spec_key(node, ins.attrs, plan.dims, args, res, zeros)
        spec = _once(found, None if key is None else (key, tuple(alias)), _inplace_form,
                     plan.backend.xp, plan.backend.kernels, node, ins.attrs, plan.dims, args,
                     res, zeros, alias, var)
        if spec is not None:
            cands[k] = (name, spec)
    kept, deferred = settle_in_place(
        {k: name for k, (name, _spec) in cands.items()}, {k: (ins, out) for k, ins, out in run},
        range(len(run)), lambda s: users.get(s, ()), vroots, escaping, plan.upd_slots)
    return {k: cands[k] for k in kept}, deferred


def _overlapping(variables: dict[str, Any]) -> set[str]:
    """The names of the variables whose memory may overlap another variable's (distinct
    arrays whose byte ranges intersect, as `np.may_share_memory` judges), by one sort."""
    spans = []
    seen: set[int] = set()
    for name, v in variables.items():
        if isinstance(v, np.ndarray) and id(v) not in seen:
            seen.add(id(v))
            spans.append((*_byte_bounds(v), name))
    spans.sort()
    out: set[str] = set()
    cluster: list[str] = []  # intervals chained by overlaps: each overlaps another one
    reach = -1
    for lo, hi, name in spans:
        if lo >= reach:
            if len(cluster) > 1:
                out.update(cluster)
            cluster = []
        cluster.append(name)
        reach = max(reach, hi)
    if len(cluster) > 1:
        out.update(cluster)
    return out


def _byte_bounds(a: np.ndarray) -> tuple[int, int]:
    """[low, high) addresses of the bytes `a` can reach."""
    lo = hi = a.__array_interface__["data"][0]
    if a.size == 0:
        return lo, lo
    for n, st in zip(a.shape, a.strides):
        if st < 0:
            lo += (n - 1) * st
        else:
            hi += (n - 1) * st
    return lo, hi + a.itemsize
