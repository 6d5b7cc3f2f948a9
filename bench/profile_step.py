"""Where a dslrun training step's time goes, for one spec.

    python bench/profile_step.py specs/bench/mlp_small.dl [--steps 200] [--cprofile]
                                 [--no-reuse] [--cpu] [--regions]

Reports, all as medians over `--steps` steps after warm-up:
  * fit step: the time between two steps of `Model.fit` (what `dslrun bench` reports);
  * plan step: `Plan.compute` + `Plan.commit` alone on one fixed batch (no Batcher, no loop);
  * per instruction, each kernel call timed alone, grouped by op (fused_elementwise by body),
    with the bytes it allocates; the sum of the kernel times against the plan step gives the
    executor's own overhead (the loop, argument lists, slot writes, commit copies).
With --cpu, every time is this process's CPU time (`time.process_time`) rather than wall
time: steadier on a loaded machine, for one BLAS thread. With --cprofile, the top functions of
a cProfile run of `fit` (tottime). With --regions, the same per-op table inside loop bodies
(each body kernel timed at every iteration, summed over a step; the loop's own work, slicing
and stacking, is the loop's time less these).

Run it with the bench environment (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset), as
`bench/run.py` does for its subprocesses.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLOCK = [time.perf_counter]  # --cpu: time.process_time (this process's CPU time)


def _label(plan: Any, nid: int) -> str:
    return _node_label(plan.graph[nid])


def _node_label(n: Any) -> str:
    if n.op == "fused_elementwise":
        body = n.regions[0]
        ops = (body[i].op for i in body.topo_order(body.results()) if body[i].op != "arg")
        return "fused[" + ",".join(ops) + "]"
    return n.op


def _record_regions() -> list[Any]:
    """Every region plan compiled from now on (loop bodies), in a list."""
    from runtime.plan import PlanContext

    made: list[Any] = []
    compile_region = PlanContext.compile_region

    def recording(self: Any, region: Any, *args: Any, **kw: Any) -> Any:
        rp = compile_region(self, region, *args, **kw)
        made.append(rp)
        return rp

    PlanContext.compile_region = recording  # type: ignore[method-assign]
    return made


def _time_regions(regions: list[Any], run: Any, steps: int) -> list[list[Any]]:
    """Per op inside the region plans: [label, ms per step, calls per step], by running `run`
    `steps` times with every body kernel (the buffer-reusing ones where built) timed."""
    from runtime.plan.codegen import codegen

    acc: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    pc = CLOCK[0]

    def timed(fn: Any, cell: list[float]) -> Any:
        def f(*a: Any) -> Any:
            t0 = pc()
            r = fn(*a)
            cell[0] += pc() - t0
            cell[1] += 1
            return r
        return f

    saved = []
    for rp in regions:
        saved.append((rp, rp._plain, {k: dict(v) for k, v in rp._fast.items()}))
        cells = [acc[_node_label(rp.region[i.nid])] for i in rp.instrs]
        rp._plain = codegen([(timed(fn, c), ins, out)
                             for (fn, ins, out), c in zip(rp.steps, cells)], "_region")
        by_id = {id(d): d for d in rp._fast.values()}
        for (where, key), st in rp.fast_steps.items():
            by_id[where][key] = codegen([(timed(fn, c), ins, out)
                                         for (fn, ins, out), c in zip(st, cells)],
                                        "_region_step")
    for _ in range(steps):
        run()
    for rp, plain, fast in saved:
        rp._plain = plain
        for k, d in rp._fast.items():
            d.update(fast.get(k, {}))
    return sorted(([k, v[0] * 1000 / steps, v[1] / steps] for k, v in acc.items()),
                  key=lambda r: -r[1])


def profile(spec: str, steps: int, warmup: int, use_cprofile: bool,
            regions: bool = False) -> dict[str, Any]:
    import numpy as np

    import dsl

    made = _record_regions() if regions else []
    model = dsl.load(spec)
    model.fit(steps=warmup, final_eval=False)
    stamps: list[float] = []
    start = CLOCK[0]()
    model.fit(steps=warmup + steps, on_step=lambda s, l: stamps.append(CLOCK[0]()),
              final_eval=False)
    fit_ms = statistics.median(np.diff([start, *stamps]) * 1000)

    tr = model.trainer
    runner = tr._phases[0]
    plan = next(iter(runner.plans.values()))
    ds = model.dataset
    b = plan.feed_slots[0][2][0]
    feeds = {k: np.ascontiguousarray(v[:b]) for k, v in ds.train.items()}
    feeds.update({k: v for k, v in tr._defaults.items()})
    feeds["step"], feeds["epoch"] = 1.0, 0.0
    saved = {k: v.copy() for k, v in tr.variables.items()}

    plan_times = []
    for _ in range(steps):
        t0 = CLOCK[0]()
        plan.compute(feeds)
        plan.commit()
        plan_times.append((CLOCK[0]() - t0) * 1000)
    plan_ms = statistics.median(plan_times)

    # each instruction alone (the plan's buffer-reusing kernels when it has them): median per
    # instruction over the steps; bytes: what the kernel returns as a new array
    vals = plan.vals
    fast = plan.fast.steps if plan.fast is not None else None
    kernels = fast or plan.steps
    per: list[list[float]] = [[] for _ in plan.instrs]
    nbytes = [0] * len(plan.instrs)
    commits: list[float] = []
    for _ in range(steps):
        plan._load(feeds)
        for k, (fn, ins, out) in enumerate(kernels):
            args = [vals[i] for i in ins]
            t0 = CLOCK[0]()
            v = fn(*args)
            per[k].append(CLOCK[0]() - t0)
            vals[out] = v
            # a new array: not a view of an input, and (buffer reuse on) made by a plain kernel
            new = isinstance(v, np.ndarray) and not any(
                isinstance(a, np.ndarray) and np.may_share_memory(v, a) for a in args)
            plain = fast is None or fn is plan.steps[k][0]
            nbytes[k] = v.nbytes if new and plain else 0
        t0 = CLOCK[0]()
        plan.commit()
        commits.append(CLOCK[0]() - t0)
    commit_ms = statistics.median(commits) * 1000
    groups: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0, 0])
    for k, ins in enumerate(plan.instrs):
        g = groups[_label(plan, ins.nid)]
        g[0] += statistics.median(per[k]) * 1000
        g[1] += 1
        g[2] += nbytes[k]
    kern_ms = sum(g[0] for g in groups.values())
    for k, v in saved.items():
        np.copyto(tr.variables[k], v)

    region_ops = []
    if made:
        def one() -> None:
            plan.compute(feeds)
            plan.commit()
        region_ops = _time_regions(made, one, steps)
        for k, v in saved.items():
            np.copyto(tr.variables[k], v)

    out = {"spec": spec, "reuse": fast is not None, "region_ops": region_ops,
           "fit_step_ms": fit_ms, "plan_step_ms": plan_ms,
           "kernels_ms": kern_ms, "commit_ms": commit_ms, "instructions": len(plan.instrs),
           "alloc_bytes": sum(nbytes),
           "ops": sorted(([k, *v] for k, v in groups.items()), key=lambda r: -r[1])}
    if use_cprofile:
        pr = cProfile.Profile()
        pr.enable()
        model.fit(steps=tr.step + steps, final_eval=False)
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(25)
        out["cprofile"] = s.getvalue()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="profile one dslrun training step")
    ap.add_argument("spec")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--no-reuse", action="store_true", help="Plan.reuse_buffers = False")
    ap.add_argument("--cpu", action="store_true",
                    help="measure this process's CPU time instead of wall time (steadier "
                         "while other processes load the machine; BLAS threads add up)")
    ap.add_argument("--regions", action="store_true",
                    help="also time each op inside loop bodies (per step, all iterations)")
    args = ap.parse_args(argv)
    if args.cpu:
        CLOCK[0] = time.process_time
    if args.no_reuse:
        from runtime.plan import Plan

        Plan.reuse_buffers = False
    r = profile(args.spec, args.steps, args.warmup, args.cprofile, args.regions)
    reuse = "on" if r["reuse"] else "off"
    print(f"{r['spec']} (buffer reuse {reuse}): fit step {r['fit_step_ms']:.3f} ms, "
          f"plan compute+commit "
          f"{r['plan_step_ms']:.3f} ms, kernels alone {r['kernels_ms']:.3f} ms "
          f"({r['instructions']} instructions), commit {r['commit_ms']:.3f} ms, "
          f"fresh allocations {r['alloc_bytes'] / 1e6:.2f} MB/step")
    print(f"  executor overhead ~ {r['plan_step_ms'] - r['kernels_ms'] - r['commit_ms']:.3f} ms;"
          f" loop + batcher ~ {r['fit_step_ms'] - r['plan_step_ms']:.3f} ms")
    print(f"  {'op':58s} {'ms':>8s} {'n':>4s} {'MB':>7s}")
    for name, ms, n, nb in r["ops"]:
        print(f"  {name[:58]:58s} {ms:8.3f} {n:4d} {nb / 1e6:7.2f}")
    if r["region_ops"]:
        print(f"  inside loop bodies ({sum(v[1] for v in r['region_ops']):.3f} ms):")
        print(f"  {'op':58s} {'ms':>8s} {'calls':>6s}")
        for name, ms, calls in r["region_ops"]:
            print(f"  {name[:58]:58s} {ms:8.3f} {calls:6.0f}")
    if "cprofile" in r:
        print(r["cprofile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
