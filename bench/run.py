"""dslrun against PyTorch eager (and JAX jit when installed) on the bench specs.

    python bench/run.py [--steps N] [--warmup N] [--repeat R] [--specs mlp_small mlp_large ...]
                        [--spec-dir DIR] [--no-check] [--json out.json]

For each spec (a name looked up in `--spec-dir`, default `specs/bench/`, or a path to a .dl
file) it runs, in one invocation, `dslrun bench <spec>` and the same model in PyTorch
(`bench/torch_models.py`) in subprocesses, `--repeat` times interleaved, and reports the
median of the per-run median step times. JAX runs only when `import jax` works. It then times
`dslrun check` on every spec under `specs/` (subprocess wall time, median of `--repeat` after
one untimed run that writes the caches).

Every subprocess gets this process's environment less `OPENBLAS_CORETYPE` and
`OPENBLAS_L2_SIZE` (set on some machines for old OpenBLAS builds; they slow current NumPy
several-fold). PyTorch gets as many threads as NumPy's BLAS uses (threadpoolctl, else
os.cpu_count()).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
DROP_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
DEFAULT_SPECS = ("mlp_small", "mlp_large", "lenet", "lstm", "transformer")

sys.path.insert(0, str(BENCH))
from torch_models import MODELS  # noqa: E402  (standard library only)

THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
FORCED_THREADS: int | None = None  # --threads: the BLAS / OpenMP thread count of every run


def bench_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if FORCED_THREADS:
        env.update({k: str(FORCED_THREADS) for k in THREAD_ENV})
    return env


def blas_threads() -> int:
    """The thread count of NumPy's BLAS, asked in a subprocess with the bench environment."""
    code = ("import numpy, threadpoolctl\n"
            "print(max([i['num_threads'] for i in threadpoolctl.threadpool_info() "
            "if i['user_api'] == 'blas'] or [0]))")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=bench_env(), capture_output=True,
                             text=True, timeout=60)
        n = int(out.stdout.strip()) if out.returncode == 0 else 0
    except (subprocess.SubprocessError, ValueError):
        n = 0
    return n or os.cpu_count() or 1


def dslrun_cmd() -> list[str]:
    """The installed console script next to this interpreter (as in a venv), not a version
    manager's shim, which would add its own start-up time to every `dslrun check`."""
    exe = Path(sys.executable).parent / "dslrun"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("dslrun")
    return [found] if found else [sys.executable, "-m", "dsl.cli"]


BASELINE_CODE = ("import sys; from runtime.plan import Plan; Plan.reuse_buffers = False; "
                 "from dsl.cli import main; sys.exit(main(sys.argv[1:]))")


def run_json(cmd: list[str], timeout: float) -> tuple[dict[str, Any] | None, str]:
    """Run `cmd` with `--json <tmp>` appended; the JSON it wrote, or None and the error text."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out.json"
        try:
            p = subprocess.run([*cmd, "--json", str(out)], env=bench_env(), capture_output=True,
                               text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout:.0f} s"
        if p.returncode != 0 or not out.exists():
            err = (p.stderr.strip() or p.stdout.strip()).splitlines()
            return None, (err[-1] if err else f"exit status {p.returncode}")
        return json.loads(out.read_text()), ""


def importable(module: str) -> bool:
    """Whether `import module` works in the benchmark environment (a subprocess)."""
    try:
        p = subprocess.run([sys.executable, "-c", f"import {module}"], env=bench_env(),
                           capture_output=True, timeout=120)
    except subprocess.SubprocessError:
        return False
    return p.returncode == 0


def resolve_spec(name: str, spec_dir: Path) -> Path | None:
    p = Path(name)
    if p.suffix == ".dl":
        return p if p.exists() else None
    for cand in (spec_dir / f"{name}.dl", ROOT / "specs" / "bench" / f"{name}.dl"):
        if cand.exists():
            return cand
    return None


def spec_samples(path: Path) -> int | None:
    """n of the spec's `data random(n = ...)`, for the reference models' data."""
    m = re.search(r"^\s*data\s+random\s*\(([^)]*)\)", path.read_text(), re.M)
    n = re.search(r"\bn\s*=\s*(\d+)", m.group(1)) if m else None
    return int(n.group(1)) if n else None


def med(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 4) if xs else None


MEMORY_KEYS = ("plan_peak", "dslrun_rss", "torch_rss", "jax_rss")


def bench_spec(name: str, path: Path, args: argparse.Namespace, threads: int,
               peers: dict[str, bool]) -> dict[str, Any]:
    model = Path(name).stem
    runs: dict[str, list[float]] = {"dslrun": [], "plain": [], "torch": [], "jax": [],
                                    "compile": [], "gemm": [],
                                    **{k: [] for k in MEMORY_KEYS}}
    errors: dict[str, str] = {}
    timeout = max(300.0, args.steps * 5.0)
    for _ in range(args.repeat):  # interleaved, so a burst of load hits both alike
        d, err = run_json([*dslrun_cmd(), "bench", str(path), "--steps", str(args.steps),
                           "--warmup", str(args.warmup)], timeout)
        if d:
            runs["dslrun"].append(d["step_ms_median"])
            runs["compile"].append(d["compile_ms"])
            if d.get("gemm_ms") is not None:
                runs["gemm"].append(d["gemm_ms"])
            runs["plan_peak"].append(d["plan_peak_bytes"])
            runs["dslrun_rss"].append(d["rss_increase_bytes"])
        else:
            errors["dslrun"] = err
        if args.baseline:  # the same with the plan's plain loop (no buffer reuse)
            d, err = run_json([sys.executable, "-c", BASELINE_CODE, "bench", str(path),
                               "--steps", str(args.steps), "--warmup", str(args.warmup)],
                              timeout)
            if d:
                runs["plain"].append(d["step_ms_median"])
            else:
                errors["plain loop"] = err
        if model in MODELS:
            n = spec_samples(path)
            common = [sys.executable, str(BENCH / "torch_models.py"), model,
                      "--steps", str(args.steps), "--warmup", str(args.warmup),
                      *(["--n", str(n)] if n else [])]
            for fw, extra in (("torch", ["--threads", str(threads)]),
                              ("jax", ["--framework", "jax", "--threads", str(threads)])):
                if not peers[fw]:
                    continue
                d, err = run_json([*common, *extra], timeout)
                if d:
                    runs[fw].append(d["step_ms_median"])
                    runs[f"{fw}_rss"].append(d["rss_increase_bytes"])
                else:
                    errors[fw] = err
    res: dict[str, Any] = {"spec": model, "path": str(path),
                           **{f"{k}_ms": med(runs[k]) for k in ("dslrun", "plain", "torch",
                                                                 "jax", "gemm", "compile")},
                           **{f"{k}_bytes": med(runs[k]) for k in MEMORY_KEYS},
                           "runs": runs}
    for peer in ("torch", "jax", "gemm"):
        d_ms, p_ms = res["dslrun_ms"], res[f"{peer}_ms"]
        res[f"ratio_{peer}"] = round(d_ms / p_ms, 3) if d_ms and p_ms else None
    if errors:
        res["errors"] = errors
    return res


def time_checks(repeat: int) -> list[dict[str, Any]]:
    """Wall time of `dslrun check SPEC` as a user sees it from the second run on: one untimed
    run first writes the caches (bytecode, parser tables, parsed prelude), and bytecode
    writing is allowed even where the environment turns it off."""
    env = {k: v for k, v in bench_env().items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = []
    for spec in sorted((ROOT / "specs").rglob("*.dl")):
        times, ok, err = [], True, ""
        for i in range(repeat + 1):
            t0 = time.perf_counter()
            p = subprocess.run([*dslrun_cmd(), "check", str(spec)], env=env,
                               capture_output=True, text=True, cwd=ROOT)
            if i:
                times.append(time.perf_counter() - t0)
            if p.returncode != 0:
                ok = False
                lines = p.stderr.strip().splitlines()
                err = lines[0] if lines else f"exit status {p.returncode}"
        out.append({"spec": str(spec.relative_to(ROOT)),
                    "seconds": round(statistics.median(times), 3),
                    "ok": ok, **({"error": err} if err else {})})
    return out


def mb(v: float | None) -> float | None:
    return None if v is None else v / 1e6


def fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="dslrun vs PyTorch (and JAX) step times")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per framework and spec (interleaved); the median is reported")
    ap.add_argument("--specs", nargs="+", default=list(DEFAULT_SPECS))
    ap.add_argument("--spec-dir", type=Path, default=ROOT / "specs" / "bench")
    ap.add_argument("--no-check", action="store_true", help="skip timing `dslrun check`")
    ap.add_argument("--check-only", action="store_true", help="only time `dslrun check`")
    ap.add_argument("--baseline", action="store_true",
                    help="also time dslrun with the plan's plain loop (Plan.reuse_buffers = "
                         "False), the executor before buffer reuse")
    ap.add_argument("--threads", type=int, default=None,
                    help="force this BLAS/OpenMP thread count on both sides (default: what "
                         "NumPy's BLAS uses; on a loaded 2-core machine 1 is far steadier)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)

    global FORCED_THREADS
    FORCED_THREADS = args.threads
    threads = blas_threads()
    peers = {fw: importable(fw) for fw in ("torch", "jax")}
    print(f"numpy BLAS threads: {threads}{' (forced)' if args.threads else ''} "
          f"(torch.set_num_threads({threads})); dropped from the environment: "
          f"{', '.join(k for k in DROP_ENV if k in os.environ) or 'nothing set'}", flush=True)
    for fw, ok in peers.items():
        if not ok:
            print(f"{fw}: not installed, skipped (pip install -e '.[bench]' installs PyTorch "
                  f"and JAX)", flush=True)
    results = []
    for name in [] if args.check_only else args.specs:
        path = resolve_spec(name, args.spec_dir)
        if path is None:
            print(f"  {name}: no spec file, skipped", flush=True)
            continue
        r = bench_spec(name, path, args, threads, peers)
        results.append(r)
        for fw, e in r.get("errors", {}).items():
            print(f"  {r['spec']}: {fw} failed: {e}", flush=True)

    cols = ["spec", "dslrun ms"]
    for fw in ("torch", "jax"):
        if peers[fw]:
            cols += [f"{fw} ms", f"dslrun/{fw}"]
    cols += ["GEMM ms", "dslrun/GEMM"]
    if args.baseline:
        cols += ["plain-loop ms"]
    cols += ["compile ms", "plan peak MB", "dslrun RSS+ MB"]
    cols += [f"{fw} RSS+ MB" for fw in ("torch", "jax") if peers[fw]]
    rows = []
    for r in results:
        row = [r["spec"], fmt(r["dslrun_ms"], ".3f")]
        for fw in ("torch", "jax"):
            if peers[fw]:
                row += [fmt(r[f"{fw}_ms"], ".3f"), fmt(r[f"ratio_{fw}"], ".2f")]
        row += [fmt(r["gemm_ms"], ".3f"), fmt(r["ratio_gemm"], ".2f")]
        if args.baseline:
            row += [fmt(r["plain_ms"], ".3f")]
        row += [fmt(r["compile_ms"], ".0f"), fmt(mb(r["plan_peak_bytes"]), ".2f"),
                fmt(mb(r["dslrun_rss_bytes"]), ".2f")]
        row += [fmt(mb(r[f"{fw}_rss_bytes"]), ".2f") for fw in ("torch", "jax") if peers[fw]]
        rows.append(row)
    if rows:
        widths = [max(len(c), *(len(row[k]) for row in rows)) for k, c in enumerate(cols)]
        print()
        print(f"step time, median of {args.repeat} run(s) x {args.steps} steps "
              f"after {args.warmup} warm-up steps; GEMM: the step's matrix products timed "
              f"alone with NumPy in the dslrun run; plan peak: the plan's values alive at "
              f"once; RSS+: peak resident memory increase over the timed steps; compile: "
              f"data loading excluded")
        for row in [cols, *rows]:
            print("  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                            for k, (c, w) in enumerate(zip(row, widths))))

    checks: list[dict[str, Any]] = []
    if not args.no_check:
        checks = time_checks(args.repeat)
        print(f"\n`dslrun check` wall time (median of {args.repeat}; target < 0.5 s)")
        w = max((len(c["spec"]) for c in checks), default=4)
        for c in checks:
            flag = "" if c["seconds"] < 0.5 else "  > 0.5 s"
            status = "ok" if c["ok"] else f"FAILED: {c.get('error', '')}"
            print(f"  {c['spec'].ljust(w)}  {c['seconds']:.3f} s  {status}{flag}")

    if args.json:
        Path(args.json).write_text(json.dumps(
            {"steps": args.steps, "warmup": args.warmup, "repeat": args.repeat,
             "forced_threads": args.threads,
             "threads": threads, "peers": peers, "results": results, "check": checks},
            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
