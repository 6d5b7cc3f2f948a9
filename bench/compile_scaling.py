"""Compile and plan time against depth: a deep MLP (`repeat` of dense 32 + relu, Adam).

    python bench/compile_scaling.py [--depths 128 512 1024 2048] [--steps 10] [--profile N]
    python bench/compile_scaling.py --specs [NAME ...]

For each depth it generates the spec below with `DEPTH` set, then times, in this process:
compile (parse, lower in both modes, autodiff, optimizer rules, the pass pipeline; the data
set is random and small), plan (the `Plan` of the training step and its buffer-reusing step,
built after the first step; the first step's own kernels are not counted) and the whole
10-step training run (`Model.fit`, plan included, no evaluation), in wall-clock seconds, one
run each; the `cpu` columns are the process's CPU seconds of compile and plan, steadier on a
shared machine (wall times there vary by tens of percent). `--profile N` prints the cProfile
of compile and training at depth N instead.

`--specs` prints instead the compile time of every shipped spec (or the named ones) with its
data loading excluded, slowest first: `first` is the first compile in a fresh process (what
`dslrun check` and `dslrun bench` pay after their imports), `again` the best of two more in
that process.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC = """\
model deep_mlp
data random(n = 256, shape = [32], classes = 10, seed = 0)
input x: f32[B, 32]
input y: i64[B]
const DEPTH = 128
net mlp(x) {
    h = x
    repeat hidden l in 0 .. DEPTH { h = relu(dense(h, 32)) }
    return dense(h, 10)
}
objective loss = cross_entropy(mlp(x), y)
optimizer adam(lr = 1e-3) minimize loss
train { batch = 32, seed = 0 }
"""


class _PlanClock:
    """Sums the time spent building plans: `Plan.__init__` and `build_fast_step`."""

    def __init__(self) -> None:
        from runtime.plan import step

        self.seconds = 0.0
        self.cpu = 0.0
        self._step = step
        self._init = step.Plan.__init__
        self._fast = step.build_fast_step

        def init(plan: object, *a: object, **kw: object) -> None:
            t, c = time.perf_counter(), time.process_time()
            self._init(plan, *a, **kw)
            self.seconds += time.perf_counter() - t
            self.cpu += time.process_time() - c

        def fast(*a: object, **kw: object) -> object:
            t, c = time.perf_counter(), time.process_time()
            try:
                return self._fast(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t
                self.cpu += time.process_time() - c

        step.Plan.__init__ = init
        step.build_fast_step = fast

    def close(self) -> None:
        self._step.Plan.__init__ = self._init
        self._step.build_fast_step = self._fast


def measure(depth: int, steps: int) -> tuple[float, float, float, float, float]:
    """(compile s, plan s, train s, compile CPU s, plan CPU s) at this depth."""
    from dsl.api import Model
    from dsl.compiler import compile_spec

    t0, c0 = time.perf_counter(), time.process_time()
    c = compile_spec(SPEC, "deep_mlp.dl", overrides={"DEPTH": str(depth)})
    t1, c1 = time.perf_counter(), time.process_time()
    clock = _PlanClock()
    try:
        t2 = time.perf_counter()
        Model(c, out_dir=None).fit(steps=steps, final_eval=False)
        t3 = time.perf_counter()
    finally:
        clock.close()
    return t1 - t0, clock.seconds, t3 - t2, c1 - c0, clock.cpu


def profile(depth: int, steps: int) -> None:
    from dsl.api import Model
    from dsl.compiler import compile_spec

    pr = cProfile.Profile()
    pr.enable()
    c = compile_spec(SPEC, "deep_mlp.dl", overrides={"DEPTH": str(depth)})
    Model(c).fit(steps=steps, final_eval=False)
    pr.disable()
    pstats.Stats(pr).sort_stats("cumtime").print_stats(50)


def spec_compile_ms(name: str) -> tuple[float, float]:
    """(first, again) compile milliseconds of a shipped spec in this process, data loading
    excluded (see the module)."""
    import dsl.compiler as compiler

    runs = []
    for _ in range(3):
        t = time.perf_counter()
        c = compiler.compile_file(name)
        runs.append((time.perf_counter() - t - c.data_seconds) * 1000)
    return runs[0], min(runs[1:])


def specs_table(names: list[str]) -> None:
    from dsl.compiler import shipped_specs

    names = names or sorted({p.relative_to(ROOT / "specs").with_suffix("").as_posix()
                             for p in shipped_specs().values()})
    rows = []
    for name in names:  # one fresh process per spec: `first` includes its cold caches
        code = (f"import sys, json; sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                f"sys.path.insert(0, {str(ROOT)!r}); import compile_scaling as c; "
                f"print(json.dumps(c.spec_compile_ms({name!r})))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=ROOT)
        first, again = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((first, again, name))
    print(f"{'first ms':>9}  {'again ms':>9}  spec   (compile, data loading excluded)")
    for first, again, name in sorted(rows, reverse=True):
        print(f"{first:>9.1f}  {again:>9.1f}  {name}")
    print(f"over 100 ms: {sum(f > 100 for f, _a, _n in rows)} first, "
          f"{sum(a > 100 for _f, a, _n in rows)} again, of {len(rows)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[128, 512, 1024, 2048])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--profile", type=int, metavar="DEPTH")
    ap.add_argument("--specs", nargs="*", metavar="NAME",
                    help="compile time of the shipped specs (all, or these) instead")
    args = ap.parse_args(argv)
    if args.specs is not None:
        specs_table(args.specs)
        return 0
    if args.profile:
        profile(args.profile, args.steps)
        return 0
    print(f"{'layers':>6}  {'compile s':>9}  {'plan s':>7}  {'train s':>8}  "
          f"{'compile cpu':>11}  {'plan cpu':>8}   (train: {args.steps} steps, plan included)")
    for d in args.depths:
        c, p, t, cc, pc = measure(d, args.steps)
        print(f"{d:>6}  {c:>9.2f}  {p:>7.2f}  {t:>8.2f}  {cc:>11.2f}  {pc:>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
