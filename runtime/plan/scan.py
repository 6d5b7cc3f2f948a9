"""The plan's driver for run-time loops with a fixed trip count.

A `loop` node (`runtime.ops.control`) whose trip count is its `length` (neither `dynamic` nor
`until`) runs here rather than through the op's own kernel: the same iterations, slices,
index values and stacked results, with less work per iteration, which matters for bodies of
small kernels run hundreds of times:

- one generated function runs every iteration: it writes the body's argument slots, runs the
  body's step and reads its results, with no per-iteration argument lists;
- the body's buffer-reusing step (`RegionPlan`) is picked by the layout of the carried values
  alone: the slices of a sequence and the captured values have one layout per run;
- captured values are made contiguous once per run (a transposed weight read by a matrix
  product at every iteration is faster as a copy);
- the stacked results are written into arrays of an earlier call that nothing holds any more
  (their reference counts are back to what they were when made: not a slot of the plan, a
  view, an output a caller kept), so a training step allocates no new stacks and its
  resident memory stays flat; two sets suffice, the last step's values stay in the plan's
  slots until the next step overwrites them. A holder that keeps no Python reference (a raw
  pointer from `.ctypes.data`, a weak reference) is not seen: callers keep arrays, not
  pointers to them. The driver keeps its two sets for as long as its plan lives.

Results are the op kernel's values; the plain and buffer-reusing plans use this driver alike,
so they stay bit-identical. Other loops (and attributes this driver does not know) use the
op's kernel.
"""

from __future__ import annotations

from sys import getrefcount
from typing import Any

import numpy as np

__all__ = ["scan_kernel"]

FIXED_ATTRS = {"length", "n_carry", "n_seq", "reverse", "start", "dynamic", "until"}
SPARE_SETS = 2  # sets of stacked arrays kept for reuse: the last step's and the one before


def scan_kernel(ctx: Any, node: Any, attrs: dict[str, Any]) -> Any:
    """The kernel of loop `node` (with these concrete `attrs`), or None when it is not a
    fixed-count loop this driver runs."""
    if set(attrs) - FIXED_ATTRS or attrs.get("dynamic") or attrs.get("until"):
        return None
    region = node.regions[0]
    nc, ns = attrs["n_carry"], attrs["n_seq"]
    length, reverse, start = int(attrs["length"]), attrs["reverse"], attrs["start"]
    n_res = len(region.results())
    rp = ctx.compile_region(region, copied=range(nc, n_res))
    xp = ctx.xp
    stacked = [(t.concrete(ctx.dims), t.np_dtype()) for t in node.type.items[nc:]]
    ts = [xp.asarray(np.int64(start + k)) for k in range(length)]
    order = range(length - 1, -1, -1) if reverse else range(length)
    copy = xp.ascontiguousarray  # (makes 0-d arrays 1-d: those are contiguous already)
    empty = xp.empty
    n_cap = len(node.inputs) - nc - ns
    run = _generate(rp, nc, ns, n_cap, n_res - nc)
    layouts = rp.layouts

    spare: list[tuple[list[Any], list[int]]] = []  # stacked arrays made, their base counts

    def stacks() -> list[Any]:
        # a set of stacked arrays that nothing outside this list holds any more (the values
        # of the step before last: the plan's slots hold the last step's), else a new set
        for ys, base in spare:
            if [getrefcount(y) for y in ys] == base:
                return ys
        ys = [empty(shape, dtype) for shape, dtype in stacked]
        if len(spare) < SPARE_SETS:
            spare.append((ys, [getrefcount(y) for y in ys]))
        return ys

    def kernel(*inputs: Any) -> tuple[Any, ...]:
        seqs = inputs[nc:nc + ns]
        caps = [c if c.flags.c_contiguous else copy(c) for c in inputs[nc + ns:]]
        fast = layouts(tuple([s.strides[1:] for s in seqs] + [c.strides for c in caps]))
        return run(rp.vals, ts, order, fast, rp.plain_run, *inputs[:nc], *seqs, *caps,
                   *stacks())

    return kernel


def _generate(rp: Any, nc: int, ns: int, n_cap: int, ny: int) -> Any:
    """`run(vals, ts, order, fast, plain, carries..., seqs..., caps..., ys...)`: every
    iteration of the loop, unrolled over its arguments and results."""
    c = [f"c{k}" for k in range(nc)]
    s = [f"s{k}" for k in range(ns)]
    p = [f"p{k}" for k in range(n_cap)]
    y = [f"y{k}" for k in range(ny)]
    a = rp.arg_slots
    r = rp.result_slots
    lines = [f"def run(vals, ts, order, fast, plain, {', '.join(c + s + p + y)}):"]
    lines += [f"    vals[{a[1 + nc + ns + k]}] = {p[k]}" for k in range(n_cap)]
    lines.append("    for k in order:")
    lines.append(f"        vals[{a[0]}] = ts[k]")
    lines += [f"        vals[{a[1 + k]}] = {c[k]}" for k in range(nc)]
    lines += [f"        vals[{a[1 + nc + k]}] = {s[k]}[k]" for k in range(ns)]
    key = "(" + "".join(f"{v}.strides, " for v in c) + ")"
    lines.append(f"        key = {key}")
    lines.append("        step = fast.get(key)")
    lines.append("        if step is None:")
    lines.append("            plain(vals, key, fast)")
    lines.append("        else:")
    lines.append("            step(vals)")
    lines += [f"        {c[k]} = vals[{r[k]}]" for k in range(nc)]
    lines += [f"        {y[k]}[k] = vals[{r[nc + k]}]" for k in range(ny)]
    lines.append(f"    return ({''.join(v + ', ' for v in c + y)})")
    ns_: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<plan scan>", "exec"), ns_)
    return ns_["run"]
