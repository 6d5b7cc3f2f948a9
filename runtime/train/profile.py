"""Where a training step's time goes: per op kind its instructions, calls, time, FLOPs and
bytes moved, and the step's overhead (step time less the kernels' time), for
`dslrun bench --profile` and `bench/profile_step.py`.

* Timing: every kernel of a training plan (the buffer-reusing step and its commit, or the
  plain loop) and of the loop bodies compiled for it (`RegionPlan`s, recorded while the plans
  are built, `recording_regions`) is wrapped by a timer for the profiled steps: the generated
  step functions (`runtime.plan.codegen`) read their kernels from their globals, which are
  swapped and swapped back. A kernel's time is its own, less the kernels it runs (a loop's
  own time is its slicing and stacking); the sum over all kernels is the step's kernel time.
* Costs: one table keyed by op (`OP_COSTS`) gives each node's FLOPs from its operand and
  result shapes (a matrix product 2mnk, a convolution 2 x output x the kernel's size, an
  elementwise op one per element, a reduction one per input element, ...), whether it moves
  bytes (views do not: their operands and result are not read or written) and the matrix
  products it amounts to (`Gemm`: batch, m, k, n; a convolution as im2col GEMMs).
* GEMM bound (`gemm_bound_ms`): the step's matrix products (by shape and calls per step)
  timed alone with NumPy (the fastest of a few runs each), the time a step cannot go below
  on this machine.
* Memory: `PeakRss` measures the process's peak resident memory over a span less its
  resident memory at the start (Linux: VmHWM reset through /proc/self/clear_refs, else the
  growth of ru_maxrss); `plan_peak_bytes` is the most bytes a plan's values hold at once
  (liveness in the plan's order, `runtime.train.memory.body_peak_bytes`).
"""

from __future__ import annotations

import collections
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.ir import Graph, IRError, TupleType
from runtime.plan import Plan, PlanContext, RegionPlan
from runtime.train.memory import body_peak_bytes

__all__ = ["OP_COSTS", "Gemm", "OpCost", "OpProfile", "OpRow", "PeakRss", "gemm_bound_ms",
           "node_cost", "op_label", "plan_peak_bytes", "profile_steps", "recording_regions",
           "training_plans"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Gemm:
    """A matrix product [batch, m, k] @ [batch, k, n]."""

    batch: int
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n


def _n(shape: Shape) -> int:
    return math.prod(shape)


def _matmul_gemms(ins: Sequence[Shape], out: Shape) -> list[Gemm]:
    a, b = ins[0], ins[1]
    k = a[-1]
    n = b[-1] if len(b) >= 2 else 1
    batch = _n(out[:-2]) if len(b) > 2 else 1  # a weight matrix folds a's batch into m
    return [Gemm(batch, _n(out) // max(batch * n, 1), k, n)]


def _tensordot_gemms(ins: Sequence[Shape], out: Shape, attrs: Mapping[str, Any]) -> list[Gemm]:
    a, b = ins[0], ins[1]
    axes = attrs.get("axes", 2)
    k = _n(a[len(a) - axes:]) if axes else 1
    return [Gemm(1, _n(a) // max(k, 1), k, _n(b) // max(k, 1))]


def _conv_gemms(x_out: Shape, w: Shape, groups: int, grad: str = "") -> list[Gemm]:
    """im2col: columns [N*positions, C/g*kernel] against the weight [C/g*kernel, O/g]."""
    o = w[0]
    rows = _n(x_out) // o  # N x output positions
    ck = _n(w) // o
    g = max(groups, 1)
    if grad == "input":  # g_out [rows, O/g] @ w [O/g, ck]
        return [Gemm(g, rows, o // g, ck)]
    if grad == "weight":  # g_out^T [O/g, rows] @ columns [rows, ck]
        return [Gemm(g, o // g, rows, ck)]
    return [Gemm(g, rows, ck, o // g)]


def _conv_fwd(ins: Sequence[Shape], out: Shape, attrs: Mapping[str, Any]) -> list[Gemm]:
    return _conv_gemms(out, ins[1], attrs.get("groups", 1))


def _conv_grad_input(ins: Sequence[Shape], out: Shape, attrs: Mapping[str, Any]) -> list[Gemm]:
    return _conv_gemms(ins[0], ins[1], attrs.get("groups", 1), "input")


def _conv_grad_weight(ins: Sequence[Shape], out: Shape, attrs: Mapping[str, Any]) -> list[Gemm]:
    return _conv_gemms(ins[1], out, attrs.get("groups", 1), "weight")


@dataclass(frozen=True)
class OpCost:
    """How an op's FLOPs follow from its shapes: `per` elements of `over` ("out": the result,
    "in": the first operand, "none": no arithmetic) times `factor`, or the FLOPs of its
    matrix products (`gemms`); `view`: it moves no bytes (a view of its operand)."""

    over: str = "out"
    factor: float = 1.0
    gemms: Callable[..., list[Gemm]] | None = None
    view: bool = False


ELEMENTWISE = OpCost()
REDUCE = OpCost("in")
MOVE = OpCost("none")
VIEW = OpCost("none", view=True)
_GEMM = {"matmul": lambda ins, out, attrs: _matmul_gemms(ins, out),
         "tensordot": _tensordot_gemms, "conv2d": _conv_fwd, "conv1d": _conv_fwd,
         "conv2d_grad_input": _conv_grad_input, "conv2d_grad_weight": _conv_grad_weight}

OP_COSTS: dict[str, OpCost] = {
    **{op: ELEMENTWISE for op in (
        "abs", "add", "cos", "div", "equal", "erf", "exp", "expm1", "greater", "greater_equal",
        "less", "less_equal", "log", "log1p", "logical_and", "logical_not", "logical_or",
        "maximum", "minimum", "mul", "neg", "not_equal", "pow", "relu", "sigmoid", "sign",
        "sin", "sqrt", "square", "step", "sub", "tanh", "where", "gelu", "leaky_relu",
        "softplus", "swish", "random_bernoulli", "random_normal", "random_randint",
        "random_uniform", "random_categorical", "max_pool2d_grad", "avg_pool2d_grad",
        "take_grad", "index_put")},
    **{op: REDUCE for op in ("sum", "sum_to", "mean", "max", "min", "argmax", "max_pool2d",
                             "avg_pool2d", "max_pool2d_pick")},
    **{op: OpCost("in", 2.0) for op in ("norm",)},
    **{op: OpCost("in", 3.0) for op in ("variance", "logsumexp")},
    **{op: OpCost("in", 4.0) for op in ("softmax", "log_softmax", "masked_softmax")},
    **{op: OpCost("in", 5.0) for op in ("softmax_cross_entropy", "sigmoid_bce",
                                        "softmax_cross_entropy_grad")},
    **{op: OpCost("in", 7.0) for op in ("layer_norm", "group_norm", "batch_norm_train")},
    "lstm_gates": OpCost("out", 4.0),  # tanh(z s) s + b
    **{op: OpCost("none", gemms=fn) for op, fn in _GEMM.items()},
    # linear algebra on [..., n, n]: inverse 2n^3, symmetric eigenvalues ~4/3 n^3, solve
    # (LU 2/3 n^3 and the substitutions) per right-hand side
    "inv": OpCost("in", 0.0),
    "eigvalsh": OpCost("in", 0.0),
    "solve": OpCost("in", 0.0),
    **{op: MOVE for op in ("cast", "concat", "take", "one_hot", "full", "full_like",
                           "loop", "fused_elementwise")},
    **{op: VIEW for op in ("reshape", "transpose", "getitem", "broadcast_to",
                           "stop_gradient", "size", "item")},
}
_CUBIC = {"inv": 2.0, "eigvalsh": 4.0 / 3.0, "solve": 2.0 / 3.0}


@dataclass(frozen=True)
class NodeCost:
    flops: int
    bytes: int
    gemms: tuple[Gemm, ...]


def _shapes(t: Any, dims: Mapping[str, int]) -> list[tuple[Shape, int]]:
    items = t.items if isinstance(t, TupleType) else (t,)
    return [(item.concrete(dims), item.np_dtype().itemsize) for item in items]


def node_cost(graph: Graph, nid: int, dims: Mapping[str, int]) -> NodeCost:
    """FLOPs, bytes moved (operands read and result written, none for a view) and matrix
    products of one node with `dims` bound (`OP_COSTS`)."""
    node = graph[nid]
    cost = OP_COSTS[node.op]
    try:
        outs = _shapes(node.type, dims)
        ins = [s for i in node.inputs for s in _shapes(graph[i].type, dims)]
    except IRError:  # a dim bound only at run time (inside a body): not counted
        return NodeCost(0, 0, ())
    out = outs[0][0] if outs else ()
    in_shapes = [s for s, _ in ins]
    gemms: tuple[Gemm, ...] = ()
    if cost.gemms is not None:
        gemms = tuple(cost.gemms(in_shapes, out, node.attrs))
        flops = sum(g.flops for g in gemms)
    elif node.op in _CUBIC:
        a = in_shapes[0]
        flops = int(_CUBIC[node.op] * _n(a[:-2]) * a[-1] ** 3)
        if node.op == "solve":
            flops += 2 * _n(in_shapes[1]) * a[-1]
    elif node.op == "fused_elementwise":
        body = node.regions[0]
        members = sum(1 for i in body.topo_order(body.results())
                      if body[i].op not in ("arg", "const"))
        flops = _n(out) * members
    else:
        base = {"out": _n(out), "in": _n(in_shapes[0]) if in_shapes else 0, "none": 0}
        flops = int(base[cost.over] * cost.factor)
    moved = 0 if cost.view else (sum(_n(s) * b for s, b in ins)
                                 + sum(_n(s) * b for s, b in outs))
    return NodeCost(flops, moved, gemms)


def op_label(graph: Graph, nid: int) -> str:
    """The op kind a node is counted under: its op; a fused kernel with its members."""
    n = graph[nid]
    if n.op == "fused_elementwise":
        body = n.regions[0]
        ops = (body[i].op for i in body.topo_order(body.results()) if body[i].op != "arg")
        return "fused_elementwise[" + ",".join(ops) + "]"
    return n.op


# ------------------------------------------------------------------------- recording, timing
@contextmanager
def recording_regions() -> Iterator[list[RegionPlan]]:
    """Every region plan (loop body) compiled inside the block, in a list (plans compile their
    bodies when they are built: build the training plans inside it)."""
    made: list[RegionPlan] = []
    compile_region = PlanContext.compile_region

    def recording(self: PlanContext, region: Graph, *args: Any, **kw: Any) -> RegionPlan:
        rp = compile_region(self, region, *args, **kw)
        made.append(rp)
        return rp

    PlanContext.compile_region = recording  # type: ignore[method-assign]
    try:
        yield made
    finally:
        PlanContext.compile_region = compile_region  # type: ignore[method-assign]


@dataclass
class _Cell:
    """One op kind's totals over the profiled steps."""

    instrs: int = 0
    seconds: float = 0.0
    calls: int = 0
    flops: int = 0
    bytes: int = 0
    gemms: collections.Counter = field(default_factory=collections.Counter)


class _Timers:
    """Timed stand-ins for kernels; each adds its own time (less its inner kernels') to its
    op kind's cell, with the node's costs once per call."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.cells: dict[str, _Cell] = collections.defaultdict(_Cell)
        self.stack = [0.0]
        self.undo: list[Callable[[], None]] = []

    def wrap(self, fn: Any, label: str, cost: NodeCost) -> Any:
        cell, stack, clock = self.cells[label], self.stack, self.clock

        def timed(*args: Any) -> Any:
            stack.append(0.0)
            t0 = clock()
            r = fn(*args)
            dt = clock() - t0
            cell.seconds += dt - stack.pop()
            stack[-1] += dt
            cell.calls += 1
            cell.flops += cost.flops
            cell.bytes += cost.bytes
            for g in cost.gemms:
                cell.gemms[g] += 1
            return r
        return timed

    def patch_generated(self, gen: Any, by_fn: Mapping[int, tuple[str, NodeCost]]) -> None:
        """Swap the kernels a generated step reads from its globals (`f0`, `f1`, ...)."""
        ns = gen.__globals__
        for key, fn in list(ns.items()):
            if key[:1] == "f" and key[1:].isdigit() and id(fn) in by_fn:
                ns[key] = self.wrap(fn, *by_fn[id(fn)])
                self.undo.append(lambda ns=ns, key=key, fn=fn: ns.__setitem__(key, fn))

    def restore(self) -> None:
        for u in reversed(self.undo):
            u()
        self.undo.clear()


def _by_fn(graph: Graph, instrs: Sequence[Any], dims: Mapping[str, int],
           step_lists: Sequence[Sequence[tuple[Any, Any, int]]],
           timers: _Timers) -> dict[int, tuple[str, NodeCost]]:
    """Kernel object id -> (op kind, costs) for every kernel of these steps (by instruction),
    counting each instruction once under its op kind."""
    labels = []
    for ins in instrs:
        label = op_label(graph, ins.nid)
        labels.append((label, node_cost(graph, ins.nid, dims)))
        timers.cells[label].instrs += 1
    out: dict[int, tuple[str, NodeCost]] = {}
    for steps in step_lists:
        for k, (fn, _ins, _out) in enumerate(steps):
            out[id(fn)] = labels[k]
    return out


def _instrument_plan(plan: Plan, timers: _Timers) -> None:
    fast = plan.fast
    lists = [plan.steps] + ([fast.steps] if fast is not None else [])
    by_fn = _by_fn(plan.graph, plan.instrs, plan.dims, lists, timers)
    if fast is not None:
        timers.patch_generated(fast.step, by_fn)
        timers.patch_generated(fast.commit, by_fn)
    plain = plan.steps
    plan.steps = [(timers.wrap(fn, *by_fn[id(fn)]), ins, out) for fn, ins, out in plain]
    timers.undo.append(lambda: setattr(plan, "steps", plain))


def _instrument_region(rp: RegionPlan, timers: _Timers) -> None:
    by_fn = _by_fn(rp.region, rp.instrs, rp.dims, [rp.steps, *rp.fast_steps.values()], timers)
    timers.patch_generated(rp._plain, by_fn)
    for layouts in rp._fast.values():
        for gen in layouts.values():
            timers.patch_generated(gen, by_fn)


# ------------------------------------------------------------------------------ the profile
@dataclass(frozen=True)
class OpRow:
    """One op kind, per step: instructions (in the plans and bodies), kernel calls, ms, FLOPs
    and bytes moved."""

    op: str
    instrs: int
    calls: float
    ms: float
    flops: float
    bytes: float


@dataclass(frozen=True)
class OpProfile:
    """A profile of `steps` training steps: rows by time, the kernels' ms per step, the step
    time it is read against (measured without timers), and the matrix products per step."""

    rows: tuple[OpRow, ...]
    steps: int
    kernel_ms: float
    step_ms: float
    gemms: Mapping[Gemm, float]

    @property
    def overhead_ms(self) -> float:
        """The step's time outside the kernels: the executor, the training loop, batching."""
        return self.step_ms - self.kernel_ms

    def share(self, ms: float) -> float:
        """Percent of the step time."""
        return 100.0 * ms / self.step_ms if self.step_ms > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "step_ms": self.step_ms, "kernel_ms": self.kernel_ms,
                "overhead_ms": self.overhead_ms,
                "ops": [{**r.__dict__, "share": self.share(r.ms)} for r in self.rows]}

    def text(self) -> str:
        w = max([len("op"), *(len(r.op) for r in self.rows)])
        w = min(w, 60)
        lines = [f"{'op':<{w}}  {'instrs':>6}  {'calls':>7}  {'ms':>8}  {'share':>6}  "
                 f"{'MFLOP':>9}  {'GFLOP/s':>7}  {'MB moved':>8}"]
        for r in self.rows:
            rate = r.flops / (r.ms * 1e6) if r.ms > 0 else 0.0
            lines.append(f"{r.op[:w]:<{w}}  {r.instrs:>6}  {r.calls:>7.0f}  {r.ms:>8.3f}  "
                         f"{self.share(r.ms):>5.1f}%  {r.flops / 1e6:>9.2f}  {rate:>7.2f}  "
                         f"{r.bytes / 1e6:>8.2f}")
        flops = sum(r.flops for r in self.rows)
        lines.append(f"{'kernels':<{w}}  {sum(r.instrs for r in self.rows):>6}  "
                     f"{sum(r.calls for r in self.rows):>7.0f}  {self.kernel_ms:>8.3f}  "
                     f"{self.share(self.kernel_ms):>5.1f}%  {flops / 1e6:>9.2f}")
        lines.append(f"{'overhead (step - kernels)':<{w}}  {'':>6}  {'':>7}  "
                     f"{self.overhead_ms:>8.3f}  {self.share(self.overhead_ms):>5.1f}%")
        lines.append(f"step time {self.step_ms:.3f} ms (median, without timers); kernels "
                     f"timed over {self.steps} step(s)")
        return "\n".join(lines) + "\n"


def profile_steps(plans: Sequence[Plan], regions: Sequence[RegionPlan],
                  run: Callable[[Callable[..., None]], None], steps: int, step_ms: float,
                  clock: Callable[[], float] = time.perf_counter) -> OpProfile:
    """Call `run(on_step)`, which trains `steps` steps calling `on_step` after each, with
    every kernel of `plans` and `regions` timed; the profile per op kind: the median over
    the steps of each kind's time per step, read against `step_ms` (the step time measured
    without timers). The plans must have been built (their first step run)."""
    timers = _Timers(clock)
    marks: list[dict[str, float]] = []

    def on_step(*_: Any) -> None:
        marks.append({k: c.seconds for k, c in timers.cells.items()})

    try:
        for p in plans:
            _instrument_plan(p, timers)
        for rp in regions:
            _instrument_region(rp, timers)
        marks.append({k: c.seconds for k, c in timers.cells.items()})
        run(on_step)
    finally:
        timers.restore()
    s = max(len(marks) - 1, 1)
    rows = []
    for label, c in timers.cells.items():
        per = [b.get(label, 0.0) - a.get(label, 0.0) for a, b in zip(marks, marks[1:])]
        ms = statistics.median(per) * 1000 if per else 0.0
        rows.append(OpRow(label, c.instrs, c.calls / s, ms, c.flops / s, c.bytes / s))
    rows.sort(key=lambda r: -r.ms)
    gemms: collections.Counter = collections.Counter()
    for c in timers.cells.values():
        gemms.update(c.gemms)
    return OpProfile(tuple(rows), s, sum(r.ms for r in rows), step_ms,
                     {g: n / s for g, n in gemms.items()})


def gemm_bound_ms(gemms: Mapping[Gemm, float], dtype: Any = np.float32,
                  repeat: int = 7) -> float:
    """The matrix products of a step (calls per step by shape) timed alone with NumPy: the
    fastest of `repeat` runs of each shape (a bound, and the measure a burst of load from
    other processes disturbs least), times its calls, summed (ms)."""
    total = 0.0
    rng = np.random.default_rng(0)
    for g, calls in gemms.items():
        a = rng.standard_normal((g.batch, g.m, g.k)).astype(dtype)
        b = rng.standard_normal((g.batch, g.k, g.n)).astype(dtype)
        if g.batch == 1:
            a, b = a[0], b[0]
        out = np.matmul(a, b)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            np.matmul(a, b, out=out)
            times.append(time.perf_counter() - t0)
        total += min(times) * 1000 * calls
    return total


def training_plans(trainer: Any) -> list[Plan]:
    """The plans a `Trainer`'s training phases have built (one per binding of dims)."""
    return [p for runner in trainer.phases for p in runner.plans.values()]


# ---------------------------------------------------------------------------------- memory
def plan_peak_bytes(plan: Plan) -> int:
    """The most bytes the values of a plan's step hold at once (its inputs and variables
    included), by liveness along the step (`body_peak_bytes`)."""
    return body_peak_bytes(plan.graph, plan.dims)


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field_name: str) -> int | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return None


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB elsewhere


class PeakRss:
    """`with PeakRss() as m: ...` then `m.increase`: the process's peak resident bytes during
    the block less its resident bytes at the start, and `m.method`: "VmHWM" (Linux, the
    high-water mark reset at the start through /proc/self/clear_refs) or "ru_maxrss" (its
    growth: 0 when the process peaked higher before the block)."""

    def __init__(self) -> None:
        self.method = "ru_maxrss"
        self.start = 0
        self.increase = 0

    def __enter__(self) -> PeakRss:
        try:
            _CLEAR_REFS.write_text("5")
            rss = _status_kib("VmRSS")
            if rss is not None:
                self.method, self.start = "VmHWM", rss * 1024
        except OSError:  # not Linux, or not allowed: the coarser measure
            pass
        if self.method == "ru_maxrss":
            self.start = _maxrss_bytes()
        return self

    def __exit__(self, *exc: Any) -> None:
        hwm = _status_kib("VmHWM") if self.method == "VmHWM" else None
        peak = hwm * 1024 if hwm is not None else _maxrss_bytes()
        self.increase = max(peak - self.start, 0)
