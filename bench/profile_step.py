"""Where a dslrun training step's time goes, for one spec.

    python bench/profile_step.py specs/bench/mlp_small.dl [--steps 200] [--cprofile]

Reports, all as medians over `--steps` steps after warm-up:
  * fit step: the time between two steps of `Model.fit` (what `dslrun bench` reports);
  * plan step: `Plan.compute` + `Plan.commit` alone on one fixed batch (no Batcher, no loop);
  * per instruction, each kernel call timed alone, grouped by op (fused_elementwise by body),
    with the bytes it allocates; the sum of the kernel times against the plan step gives the
    executor's own overhead (the loop, argument lists, slot writes, commit copies).
With --cprofile, the top functions of a cProfile run of `fit` (tottime).

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


def _label(plan: Any, nid: int) -> str:
    n = plan.graph[nid]
    if n.op == "fused_elementwise":
        body = n.regions[0]
        ops = (body[i].op for i in body.topo_order(body.results()) if body[i].op != "arg")
        return "fused[" + ",".join(ops) + "]"
    return n.op


def profile(spec: str, steps: int, warmup: int, use_cprofile: bool) -> dict[str, Any]:
    import numpy as np

    import dsl

    model = dsl.load(spec)
    model.fit(steps=warmup, final_eval=False)
    stamps: list[float] = []
    start = time.perf_counter()
    model.fit(steps=warmup + steps, on_step=lambda s, l: stamps.append(time.perf_counter()),
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
        t0 = time.perf_counter()
        plan.compute(feeds)
        plan.commit()
        plan_times.append((time.perf_counter() - t0) * 1000)
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
            t0 = time.perf_counter()
            v = fn(*args)
            per[k].append(time.perf_counter() - t0)
            vals[out] = v
            # a new array: not a view of an input, and (buffer reuse on) made by a plain kernel
            new = isinstance(v, np.ndarray) and not any(
                isinstance(a, np.ndarray) and np.may_share_memory(v, a) for a in args)
            plain = fast is None or fn is plan.steps[k][0]
            nbytes[k] = v.nbytes if new and plain else 0
        t0 = time.perf_counter()
        plan.commit()
        commits.append(time.perf_counter() - t0)
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

    out = {"spec": spec, "reuse": fast is not None, "fit_step_ms": fit_ms, "plan_step_ms": plan_ms,
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
    args = ap.parse_args(argv)
    if args.no_reuse:
        from runtime.plan import Plan

        Plan.reuse_buffers = False
    r = profile(args.spec, args.steps, args.warmup, args.cprofile)
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
    if "cprofile" in r:
        print(r["cprofile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
