"""Fuzz the front end (issue 11): N cases, each in a forked worker with a time limit.

    python bench/fuzz.py                       # 10,000 cases, 2 workers, 10 s per case
    python bench/fuzz.py -n 2000 --start 0 --jobs 2 --timeout 10 --json out.json
    python bench/fuzz.py --case 1234           # print case 1234 and its outcome

The cases and the contract are `bench/fuzz_cases.py`. Each case runs in a child forked from
a process that has already imported everything (the parser tables, the prelude), with an
address-space limit (`--max-memory`, default 4 GiB) so that a runaway allocation fails in
the child instead of the machine. A child that uses more than `--timeout` seconds of CPU
time (or six times as much wall time) is killed and counted as a hang: CPU time, so that
the load of other processes on the machine does not turn slow cases into hangs. One that
dies without answering is an escape.

Prints the counts by outcome (ok, user error with file:line:col, user error without,
escape, hang), the share of errors that carry a position, and each distinct defect (an
escape's exception type and innermost frame, or a hang) with how often it was seen and a
reproducer shrunk by deleting lines and then tokens while the defect persists.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz_cases import Case, Outcome, make_case, run_case, tokens  # noqa: E402

KINDS = ("ok", "user", "user_nopos", "escape", "hang")
# A case may use `--timeout` seconds of CPU time (RLIMIT_CPU: the machine's load does not
# count) and WALL_FACTOR times as much wall time (a case blocked without computing).
WALL_FACTOR = 6


def preload() -> None:
    """Import and build everything a case needs once, before forking."""
    from fuzz_cases import _grammar, shipped

    import dsl

    shipped()
    _grammar()
    run_case("model warm\ninput x: f32[B, 2]\nparam w: [2] = zeros\n"
             "objective loss = mean(x * w)\noptimizer sgd(lr = 0.1) minimize loss\n"
             "train { steps = 1 }\n", grad=True)
    assert dsl.Error


def _child(text: str, wfd: int, max_memory: int, cpu_seconds: int, work: str) -> None:
    os.chdir(work)  # data paths of cases resolve here; the parent removes it
    if max_memory:
        resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))  # then SIGXCPU
    with os.fdopen(wfd, "wb", buffering=0) as f:
        try:  # the stages as they start, one a line, then the outcome
            out = run_case(text, on_stage=lambda name: f.write(f"{name}\n".encode()))
        except BaseException as e:  # noqa: BLE001 - e.g. a SystemExit: an escape
            out = Outcome("escape", "?", f"{type(e).__name__}: {e}", "run_case")
        f.write(json.dumps(asdict(out)).encode())
    os._exit(0)


def _stage(buf: bytearray) -> str:
    """The last stage a child started, from what it wrote."""
    lines = [x for x in bytes(buf).decode(errors="replace").split("\n") if x]
    return lines[-1] if lines else "?"


class Pool:
    """At most `jobs` forked children, each running one text under a deadline."""

    def __init__(self, jobs: int, timeout: float, max_memory: int) -> None:
        self.jobs, self.timeout, self.max_memory = jobs, timeout, max_memory
        self.running: dict[int, tuple[int, int, float, bytearray]] = {}  # rfd -> key, pid...
        self.work: dict[int, str] = {}  # pid -> the child's working directory

    def submit(self, key: int, text: str) -> None:
        rfd, wfd = os.pipe()
        work = tempfile.mkdtemp(prefix="dslfuzz-")
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            _child(text, wfd, self.max_memory, math.ceil(self.timeout), work)
        os.close(wfd)
        self.work[pid] = work
        wall = self.timeout * WALL_FACTOR
        self.running[rfd] = (key, pid, time.monotonic() + wall, bytearray())

    def _reap(self, pid: int) -> int:
        """Wait for child `pid`, remove what it wrote; its exit status."""
        _, status = os.waitpid(pid, 0)
        shutil.rmtree(self.work.pop(pid), ignore_errors=True)
        return status

    def wait(self) -> list[tuple[int, Outcome]]:
        """Block until at least one child finished or timed out; their outcomes."""
        done: list[tuple[int, Outcome]] = []
        while not done:
            now = time.monotonic()
            first = min(d for _, _, d, _ in self.running.values())
            ready, _, _ = select.select(list(self.running), [], [], max(0.0, first - now))
            for rfd in ready:
                chunk = os.read(rfd, 1 << 16)
                key, pid, deadline, buf = self.running[rfd]
                if chunk:
                    buf.extend(chunk)
                    continue
                os.close(rfd)
                del self.running[rfd]
                status = self._reap(pid)
                last = bytes(buf).split(b"\n")[-1]
                if last.startswith(b"{"):
                    done.append((key, Outcome(**json.loads(last))))
                elif os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
                    done.append((key, Outcome("hang", _stage(buf),
                                              f"more than {self.timeout:g} s of CPU time",
                                              "timeout")))
                else:
                    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
                    what = f"signal {sig}" if sig else f"exit {os.WEXITSTATUS(status)}"
                    done.append((key, Outcome("escape", _stage(buf), f"crash: {what}",
                                              "worker")))
            now = time.monotonic()
            for rfd, (key, pid, deadline, buf) in list(self.running.items()):
                if now >= deadline and rfd not in ready:
                    os.kill(pid, signal.SIGKILL)
                    self._reap(pid)
                    os.close(rfd)
                    del self.running[rfd]
                    done.append((key, Outcome("hang", _stage(buf), "no answer in "
                                              f"{self.timeout * WALL_FACTOR:g} s", "timeout")))
        return done

    def run_all(self, texts: dict[int, str]) -> dict[int, Outcome]:
        out: dict[int, Outcome] = {}
        todo = list(texts.items())
        while todo or self.running:
            while todo and len(self.running) < self.jobs:
                self.submit(*todo.pop(0))
            for key, o in self.wait():
                out[key] = o
        return out


def _same(a: Outcome, b: Outcome) -> bool:
    return a.kind == b.kind and (a.kind == "hang" or a.defect == b.defect)


def shrink(text: str, target: Outcome, pool: Pool, budget: int = 400) -> str:
    """Delete lines, then tokens, while the case still shows `target`'s defect (greedy, in
    batches of `pool.jobs` candidates). A hang costs the time limit per try: lines only,
    and a tenth of the budget."""
    runs = 0
    units = ("lines",) if target.kind == "hang" else ("lines", "tokens")
    budget = budget // 10 if target.kind == "hang" else budget
    for unit in units:
        i = 0  # candidates are tried from the end: later lines use the names of earlier ones
        while runs < budget:
            parts = text.split("\n") if unit == "lines" else tokens(text)
            sig = [k for k, t in enumerate(parts) if unit == "lines" or t.strip()][::-1]
            if i >= len(sig):
                break
            cands = {}
            for k in sig[i:i + pool.jobs]:
                rest = parts[:k] + parts[k + 1:]
                cands[k] = "\n".join(rest) if unit == "lines" else "".join(rest)
            runs += len(cands)
            res = pool.run_all(cands)
            hit = next((k for k in sorted(cands, reverse=True) if _same(res[k], target)),
                       None)
            if hit is None:
                i += len(cands)
            else:
                text = cands[hit]
                i = sig.index(hit)  # the next candidate is the part before it
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=10_000, help="number of cases (default 10000)")
    ap.add_argument("--start", type=int, default=0, help="first case number")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per case")
    ap.add_argument("--max-memory", type=float, default=4.0, help="GiB per worker (0: none)")
    ap.add_argument("--case", type=int, help="print one case and its outcome (in-process)")
    ap.add_argument("--no-shrink", action="store_true")
    ap.add_argument("--json", help="write counts and defects here")
    ap.add_argument("--progress", type=int, default=500, help="print counts every N cases")
    args = ap.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if args.case is not None:
        c = make_case(args.case)
        print(f"# case {args.case}: {c.origin}\n{c.text}\n# -> {run_case(c.text)}")
        return 0
    preload()
    pool = Pool(args.jobs, args.timeout, int(args.max_memory * 2**30))
    counts: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    defects: dict[str, list] = {}  # defect -> [count, case number, Case, Outcome]
    unpositioned: list[tuple[int, str]] = []  # (case, first line) of some errors without one
    t0 = time.monotonic()
    cases: dict[int, Case] = {}
    todo = list(range(args.start, args.start + args.n))
    finished = 0
    while todo or pool.running:
        while todo and len(pool.running) < pool.jobs:
            k = todo.pop(0)
            cases[k] = make_case(k)
            pool.submit(k, cases[k].text)
        for k, o in pool.wait():
            c = cases.pop(k)
            counts[o.kind] += 1
            stages[f"{o.kind}@{o.stage}"] += 1
            finished += 1
            if o.kind == "user_nopos" and len(unpositioned) < 8:
                first = o.message.split("\n")[0][:160]
                if all(first != m for _, m in unpositioned):
                    unpositioned.append((k, first))
            if o.kind in ("escape", "hang"):
                key = o.defect if o.kind == "escape" else "hang"
                entry = defects.setdefault(key, [0, k, c, o])
                entry[0] += 1
                print(f"  case {k}: {o.kind} in {o.stage}: {key} ({c.origin})", flush=True)
            if args.progress and finished % args.progress == 0:
                print(f"[{finished}/{args.n} {time.monotonic() - t0:.0f} s] "
                      + " ".join(f"{n}={counts[n]}" for n in KINDS), flush=True)
    elapsed = time.monotonic() - t0
    errors = counts["user"] + counts["user_nopos"]
    share = counts["user"] / errors if errors else 1.0
    print(f"\n{finished} cases in {elapsed:.0f} s ({args.jobs} workers, {args.timeout:g} s "
          "limit per case)")
    for n in KINDS:
        print(f"  {n:11s} {counts[n]:6d}")
    print(f"  errors with file:line:col: {share:.1%}")
    print("  by stage: " + ", ".join(f"{k} {v}" for k, v in sorted(stages.items())))
    for k, m in unpositioned:
        print(f"  without a position, e.g. case {k}: {m}")
    report = []
    for key, (n, k, c, o) in sorted(defects.items(), key=lambda kv: -kv[1][0]):
        small = c.text if args.no_shrink else shrink(c.text, o, pool)
        print(f"\n=== defect: {key} ({n} case{'s' * (n > 1)}; first: case {k}, {c.origin}, "
              f"stage {o.stage})\n{o.message}\n--- reproducer:\n{small}\n---", flush=True)
        report.append({"defect": key, "count": n, "case": k, "origin": c.origin,
                       "stage": o.stage, "message": o.message, "reproducer": small})
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"cases": finished, "start": args.start, "seconds": round(elapsed, 1),
             "counts": {n: counts[n] for n in KINDS}, "positioned": share,
             "stages": dict(stages), "defects": report,
             "unpositioned": [{"case": k, "message": m} for k, m in unpositioned]},
            indent=2) + "\n")
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
