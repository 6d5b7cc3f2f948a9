"""Where a dslrun training step's time goes, for one spec.

    python bench/profile_step.py specs/bench/mlp_small.dl [--steps 200] [--warmup 20]
                                 [--cprofile] [--no-reuse] [--cpu]

The per-op table is `dslrun bench SPEC --profile`'s (`runtime.train.profile`): per op kind
(fused kernels by their members) its instructions, calls per step (loop bodies included, at
every iteration), time (its own, median per step; a loop's own time is its slicing and
stacking), share of the step, FLOPs, GFLOP/s and bytes moved, then the kernels' sum and the
overhead (the step time without timers less the kernels: executor, training loop, batcher).
Also: the GEMM bound (the step's matrix products timed alone with NumPy) and the plan's
peak live bytes.

With --cpu, times are this process's CPU time (`time.process_time`) rather than wall time:
steadier on a loaded machine, with one BLAS thread. With --cprofile, the top functions of a
cProfile run of `fit` (tottime). --no-reuse: `Plan.reuse_buffers = False` (the plain loop).

Run it with the bench environment (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset), as
`bench/run.py` does for its subprocesses.
"""

from __future__ import annotations

import argparse
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


def profile(spec: str, steps: int, warmup: int, use_cprofile: bool,
            clock: Any = time.perf_counter) -> dict[str, Any]:
    import numpy as np

    import dsl
    from runtime.train import profile as prof

    with prof.recording_regions() as regions:
        model = dsl.load(spec)
        model.fit(steps=warmup, evaluate=False)
    stamps: list[float] = []
    start = clock()
    model.fit(steps=warmup + steps, on_step=lambda s, l: stamps.append(clock()),
              evaluate=False)
    step_ms = statistics.median(np.diff([start, *stamps]) * 1000)
    tr = model.trainer
    plans = prof.training_plans(tr)
    done = tr.step
    p = prof.profile_steps(
        plans, regions,
        lambda on_step: model.fit(steps=done + steps, on_step=on_step, evaluate=False),
        steps, step_ms, clock)
    out = {"spec": spec, "profile": p, "gemm_ms": prof.gemm_bound_ms(p.gemms),
           "plan_peak_bytes": max(prof.plan_peak_bytes(pl) for pl in plans),
           "reuse": all(pl.fast is not None for pl in plans)}
    if use_cprofile:
        pr = cProfile.Profile()
        pr.enable()
        model.fit(steps=tr.step + steps, evaluate=False)
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
    args = ap.parse_args(argv)
    if args.no_reuse:
        from runtime.plan import Plan

        Plan.reuse_buffers = False
    r = profile(args.spec, args.steps, args.warmup, args.cprofile,
                time.process_time if args.cpu else time.perf_counter)
    print(f"{r['spec']} (buffer reuse {'on' if r['reuse'] else 'off'}): GEMM bound "
          f"{r['gemm_ms']:.3f} ms, plan peak {r['plan_peak_bytes'] / 1e6:.2f} MB")
    print(r["profile"].text(), end="")
    if "cprofile" in r:
        print(r["cprofile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
