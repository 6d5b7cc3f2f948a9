"""Step time against batch size, dslrun next to PyTorch eager, per step and per sample.

    python bench/batch_scaling.py [--specs mlp_large lenet] [--batches 16 64 256 1024]
                                  [--steps 20] [--warmup 5] [--threads N] [--json out.json]

For each spec and batch it writes a copy of the spec with `train { batch = N, ... }` (and a
data set of at least 4 batches), runs `dslrun bench` on it and the PyTorch model of
`bench/torch_models.py` with `--batch N` (same samples), in subprocesses with the benchmark
environment of `bench/run.py`, and prints the median step time and the time per sample (µs).
The cost per sample should not rise with the batch: a row whose dslrun µs/sample is above the
previous row's (by more than 10%) is marked `rises`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run as bench_run  # noqa: E402  (the subprocess environment and runners)

BATCHES = (16, 64, 256, 1024)


def with_batch(text: str, batch: int) -> tuple[str, int]:
    """The spec with its training batch set to `batch` and its random data set holding at
    least 4 batches; and the number of samples."""
    text, k = re.subn(r"(train\s*\{[^}]*\bbatch\s*=\s*)\d+", rf"\g<1>{batch}", text)
    if k != 1:
        raise SystemExit("the spec has no `train { batch = N }` to change")
    m = re.search(r"(\bdata\s+random\s*\([^)]*\bn\s*=\s*)(\d+)", text)
    if not m:
        raise SystemExit("the spec has no `data random(n = N, ...)`")
    n = max(int(m.group(2)), 4 * batch)
    return text[:m.start(2)] + str(n) + text[m.end(2):], n


def measure(name: str, batch: int, args: argparse.Namespace, threads: int,
            tmp: Path) -> dict[str, Any]:
    src = bench_run.resolve_spec(name, BENCH.parent / "specs" / "bench")
    if src is None:
        raise SystemExit(f"{name}: no spec file")
    text, n = with_batch(src.read_text(), batch)
    path = tmp / f"{name}.dl"
    path.write_text(text)
    timeout = max(300.0, args.steps * 10.0)
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    d, err = bench_run.run_json([*bench_run.dslrun_cmd(), "bench", str(path), *common], timeout)
    row: dict[str, Any] = {"spec": name, "batch": batch, "n": n,
                           "dslrun_ms": d["step_ms_median"] if d else None,
                           "gemm_ms": d["gemm_ms"] if d else None}
    if err:
        row["dslrun_error"] = err
    t, err = bench_run.run_json([sys.executable, str(BENCH / "torch_models.py"), name, *common,
                                 "--n", str(n), "--batch", str(batch), "--threads", str(threads)],
                                timeout)
    row["torch_ms"] = t["step_ms_median"] if t else None
    if err:
        row["torch_error"] = err
    return row


def per_sample(ms: float | None, batch: int) -> float | None:
    return None if ms is None else ms * 1000 / batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--specs", nargs="+", default=["mlp_large", "lenet"])
    ap.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="force this BLAS/OpenMP thread count on both sides")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    bench_run.FORCED_THREADS = args.threads
    threads = bench_run.blas_threads()
    if not bench_run.importable("torch"):
        print("torch: not installed, its columns stay empty (pip install -e '.[bench]')")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.specs:
            for batch in args.batches:
                rows.append(measure(name, batch, args, threads, Path(d)))
    f = bench_run.fmt
    print(f"median step time over {args.steps} steps after {args.warmup}; "
          f"{threads} BLAS thread(s); µs/sample = step time / batch")
    head = ["spec", "batch", "dslrun ms", "dslrun µs/sample", "GEMM ms", "torch ms",
            "torch µs/sample", "dslrun/torch", ""]
    table = []
    prev: dict[str, float] = {}
    for r in rows:
        ours, theirs = per_sample(r["dslrun_ms"], r["batch"]), per_sample(r["torch_ms"],
                                                                           r["batch"])
        flag = ("rises" if ours is not None and r["spec"] in prev
                and ours > 1.1 * prev[r["spec"]] else "")
        if ours is not None:
            prev[r["spec"]] = ours
        ratio = r["dslrun_ms"] / r["torch_ms"] if r["dslrun_ms"] and r["torch_ms"] else None
        table.append([r["spec"], str(r["batch"]), f(r["dslrun_ms"], ".3f"), f(ours, ".2f"),
                      f(r["gemm_ms"], ".3f"), f(r["torch_ms"], ".3f"), f(theirs, ".2f"),
                      f(ratio, ".2f"), flag])
        for side in ("dslrun", "torch"):
            if f"{side}_error" in r:
                print(f"  {r['spec']} batch {r['batch']}: {side} failed: {r[side + '_error']}")
    widths = [max(len(h), *(len(t[k]) for t in table)) for k, h in enumerate(head)]
    for t in [head, *table]:
        print("  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                        for k, (c, w) in enumerate(zip(t, widths))).rstrip())
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": threads, "rows": rows}, indent=2)
                                   + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
