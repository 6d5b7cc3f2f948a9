"""Reliability (issue 11): resource limits checked before anything is allocated, dtypes written
in a spec honored, constants that do not fit their dtype, `--nan-check`, checkpoint
fingerprints, one process per run directory, and exact resume after SIGKILL at random points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_env, run_cli, spec

import dsl
from dsl.compiler import compile_spec
from dsl.errors import DslError
from runtime import init as inits
from runtime.train import memory, runs
from runtime.train.checkpoint import (
    CheckpointError,
    check_fingerprint,
    load_checkpoint,
    save_checkpoint,
    saved_fingerprint,
)
from runtime.train.memory import ResourceError, parse_size
from runtime.train.runs import RunDirError, RunLock

# --------------------------------------------------------------------------- resource limits

def test_sizes_read_with_binary_units() -> None:
    assert parse_size("8G") == 8 * 2**30 and parse_size("512M") == 512 * 2**20
    assert parse_size("1.5GiB") == 3 * 2**29 and parse_size("2e9") == 2 * 10**9
    assert parse_size("10kb") == 10240 and parse_size("100") == 100
    for bad in ("abc", "-1G", "0", "G", "8X", ""):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_available_memory_is_the_smaller_of_meminfo_and_the_cgroup(tmp_path: Path) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemTotal: 9000 kB\nMemAvailable: 1000 kB\n")
    cg = tmp_path / "cg"
    cg.mkdir()
    assert memory.available_bytes(info, cg) == 1000 * 1024  # no cgroup files
    (cg / "memory.max").write_text("max\n")
    assert memory.available_bytes(info, cg) == 1000 * 1024  # no cgroup limit
    (cg / "memory.max").write_text("500000\n")
    (cg / "memory.current").write_text("100000\n")
    assert memory.available_bytes(info, cg) == 400000


def test_a_huge_model_is_one_message_with_the_estimate(cli, monkeypatch) -> None:
    # a tensor beyond the element limit is a compile error; a model that merely does not fit
    # is refused by the estimate, before any weight is drawn
    status, _, err = cli(spec("mlp_digits"), "--set", "H=100000000")
    assert status == 1 and err.count("error:") == 1 and "H=100000000" in err
    monkeypatch.setattr(memory, "available_bytes", lambda *a: 4 * 2**30)
    t0 = time.perf_counter()
    status, _, err = cli(spec("mlp_digits"), "--set", "H=100000", "--out", "r")
    assert time.perf_counter() - t0 < 30  # nothing was drawn: 1e10 weights take minutes
    assert status == 1 and err.count("error:") == 1, err
    for part in ("parameters 37.3 GiB", "optimizer and other state 74.6 GiB",
                 "step values at batch 64", "data", "4.0 GiB of the memory available",
                 "--max-memory SIZE"):
        assert part in err, err
    assert not (Path("r") / "checkpoint.npz").exists()
    status, _, err = cli(spec("mlp_digits"), "--max-memory", "1M", "--steps", "1")
    assert status == 1 and "1 MiB of the limit given by --max-memory" in err, err
    status, _, err = cli(spec("mlp_digits"), "--max-memory", "lots")
    assert status == 1 and "--max-memory: cannot read the size 'lots'" in err


def test_check_prints_the_estimate_and_fails_where_training_would(cli) -> None:
    status, out, _ = cli("check", spec("mlp_digits"))
    assert status == 0
    line = next(x for x in out.splitlines() if x.startswith("memory:"))
    assert "to train (parameters 332 KiB + optimizer and other state 664 KiB" in line, line
    status, out, err = cli("check", spec("mlp_digits"), "--max-memory", "1M")
    assert status == 1 and "1 MiB of the limit given by --max-memory" in err and not out
    status, out, _ = cli("check", spec("kalman_filter"))  # nothing to train: no estimate
    assert status == 0 and "memory:" not in out and "outputs: none" in out


WIDE = """model wide
data digits(test_fraction = 0.2, seed = 0)
input x: f32[B, 64]
input y: i64[B]
net clf(x) { return dense(relu(dense(relu(dense(x, 1500)), 1500)), 10) }
objective loss = cross_entropy(clf(x), y)
optimizer adam(lr = 1e-3) minimize loss
train { batch = 64, steps = 3 }
"""


def test_the_estimate_bounds_what_a_run_allocates() -> None:
    model = dsl.compile(WIDE)
    assert model.dataset is not None  # loaded before measuring, as the CLI's check does
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        trainer = model.trainer
        est = trainer.estimate_memory()
        trainer.fit()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    params = 64 * 1500 + 1500 * 1500 + 1500 * 10 + 1500 * 2 + 10
    assert est.parts["parameters"] == 4 * params
    assert est.parts["optimizer and other state"] == 8 * params  # adam's m and v
    # an upper bound, and not a wild one (measured: 268 MiB against 282 MiB)
    assert peak <= est.total <= 3 * peak, (peak, est.breakdown())


def test_max_memory_refuses_below_the_estimate_and_allows_at_it() -> None:
    est = dsl.compile(WIDE).trainer.estimate_memory()
    with pytest.raises(ResourceError, match="limit given by --max-memory"):
        _ = dsl.compile(WIDE, max_memory=est.total - 1).trainer
    assert dsl.compile(WIDE, max_memory=est.total).trainer.step == 0


def test_initial_values_are_drawn_in_the_target_dtype_chunk_by_chunk() -> None:
    shape = (3000, 1000)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        w = inits.initialize("xavier_normal", shape, inits.seeded_rng(0, "w"), np.float32)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert w.dtype == np.float32 and w.shape == shape
    assert peak <= w.nbytes + 3 * 8 * inits.CHUNK  # never the whole array in float64
    # the values of one float64 draw of the whole shape, cast
    z = inits.seeded_rng(0, "w").standard_normal(shape)
    assert w.tobytes() == (z * np.sqrt(2.0 / sum(shape))).astype(np.float32).tobytes()
    for name in ("uniform", "he_uniform", "default", "orthogonal", "constant"):
        a = inits.initialize(name, (40, 30), inits.seeded_rng(1, name), np.float32)
        b = inits.initialize(name, (40, 30), inits.seeded_rng(1, name), np.float64)
        assert a.dtype == np.float32 and a.tobytes() == b.astype(np.float32).tobytes()


UNROLL = """model unroll
input x: f32[B, 4]
const T = 30
h = x
for t in 0 .. T { h = tanh(h) }
output o = h
"""


def test_the_unroll_budget_suggests_a_runtime_loop_and_is_configurable(monkeypatch) -> None:
    compile_spec(UNROLL, "u.dl")
    monkeypatch.setenv("DSLRUN_MAX_UNROLLED_NODES", "10")
    with pytest.raises(DslError) as info:
        compile_spec(UNROLL, "u.dl")
    text = info.value.format()
    assert "u.dl:5:1" in text and "more than the limit of 10" in text
    assert "run-time 'loop t in ...'" in text and "DSLRUN_MAX_UNROLLED_NODES" in text
    monkeypatch.setenv("DSLRUN_MAX_UNROLLED_NODES", "many")
    with pytest.raises(DslError, match="must be a positive integer"):
        compile_spec(UNROLL, "u.dl")


# --------------------------------------------------------------------------- dtypes

F64 = """model f64fit
input x: f64[B, 3]
input y: f64[B]
param w: f64[3] = zeros
param b: [] = zeros
objective loss = mean((x @ w + b - y) ** 2)
optimizer adam(lr = 0.05) minimize loss
train { steps = 40 }
"""


def test_a_written_dtype_is_honored_unless_dtype_is_given() -> None:
    x, y = np.zeros((4, 3)), np.zeros(4)
    m = dsl.compile(F64, data={"x": x, "y": y})
    v = m.trainer.variables
    assert v["w"].dtype == np.float64 and v["b"].dtype == np.float32  # b follows the default
    assert v["opt.w.m"].dtype == np.float64 and v["opt.b.m"].dtype == np.float32
    m32 = dsl.compile(F64, dtype="float32", data={"x": x, "y": y})
    assert {a.dtype for a in m32.trainer.variables.values()} == {np.dtype(np.float32)}
    m64 = dsl.compile(F64, dtype="float64", data={"x": x, "y": y})
    assert {a.dtype for a in m64.trainer.variables.values()} == {np.dtype(np.float64)}
    assert ":f64[3] = param" in m.graph_text("forward")
    assert "f64" not in m32.graph_text("optimized")


def test_a_float64_trajectory_keeps_its_digits() -> None:
    """40 full-batch Adam steps of an f64 spec equal a float64 NumPy Adam to ~1e-12 (in
    float32 they would agree to ~1e-6 only)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.standard_normal(32)
    text = F64.replace("param b: [] = zeros", "param b: f64[] = zeros")
    m = dsl.compile(text, data={"x": x, "y": y})
    m.fit(final_eval=False)
    got = m.trainer.get_variables()
    w, b = np.zeros(3), 0.0
    mw, vw, mb, vb = np.zeros(3), np.zeros(3), 0.0, 0.0
    for t in range(1, 41):
        r = x @ w + b - y
        gw, gb = 2 * x.T @ r / len(y), 2 * r.mean()
        mw, mb = 0.9 * mw + 0.1 * gw, 0.9 * mb + 0.1 * gb
        vw, vb = 0.999 * vw + 0.001 * gw * gw, 0.999 * vb + 0.001 * gb * gb
        c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
        w = w - 0.05 * (mw / c1) / (np.sqrt(vw / c2) + 1e-8)
        b = b - 0.05 * (mb / c1) / (np.sqrt(vb / c2) + 1e-8)
    assert got["w"].dtype == np.float64
    np.testing.assert_allclose(got["w"], w, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(got["b"], b, rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- constants

@pytest.mark.parametrize(("line", "column", "says"), [
    ("objective loss = mean(x * 1e39)", 23, "the constant 1e+39 does not fit f32"),
    ("objective loss = mean(x * full([4], 1e300))", 27, "the constant 1e+300 does not fit f32"),
    ("objective loss = mean(x) + 99999999999999999999", 18,
     "the integer 99999999999999999999 does not fit i64"),
    ("input n: i32[] = 3000000000\nobjective loss = mean(x)", 18,
     "the integer 3000000000 does not fit i32"),
    ("param w: f32[4] = constant(value = 1e308)\nobjective loss = mean(x @ w)", 19,
     "the constant 1e+308 does not fit f32"),
])
def test_a_constant_that_does_not_fit_is_a_positioned_error(tmp_path: Path, line: str,
                                                            column: int, says: str) -> None:
    (tmp_path / "c.dl").write_text(f"model m\ninput x: f32[B, 4] = zeros([2, 4])\n{line}\n")
    done = run_cli(["check", "c.dl"], tmp_path, "-W", "error")
    assert done.returncode == 1, done.stderr
    assert f"c.dl:3:{column}: error: {says}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr


# --------------------------------------------------------------------------- --nan-check

DIVERGES = """model div
data linear_gaussian(n = 64, seed = 0)
input x: f32[B, 5]
input y: f32[B]
param w: f32[5] = zeros
objective loss = mean((x @ w - y) ** 2)
optimizer sgd(lr = 50.0) minimize loss
train { batch = 16, steps = 200, checkpoint_every = 2 }
"""


def test_nan_check_names_the_op_its_position_its_inputs_and_the_last_checkpoint(cli) -> None:
    Path("div.dl").write_text(DIVERGES)
    status, _, err = cli("div.dl", "--quiet", "--out", "plain")
    assert status == 1
    assert "training diverged at step 10" in err
    assert "the last good checkpoint is plain/checkpoint.npz (step 8)" in err
    status, _, err = cli("div.dl", "--quiet", "--out", "checked", "--nan-check")
    assert status == 1, err
    lines = err.splitlines()
    assert lines[0] == "div.dl:6:18: error: non-finite value produced by node %7 (mean)"
    assert lines[3].startswith("note: input %6 (square): f32[16] min ") and " max " in lines[3]
    assert lines[-1] == "note: the last good checkpoint is checked/checkpoint.npz (step 8)"
    assert load_checkpoint("checked/checkpoint.npz")[1]["step"] == 8


# --------------------------------------------------------------------------- fingerprints

TINY = """model tiny
data blobs(n = 64, centers = 3, seed = 0)
input x: f32[B, 2]
input y: i64[B]
const H = 8
net clf(x) { return dense(tanh(dense(x, H)), 3) }
objective loss = cross_entropy(clf(x), y)
optimizer adam(lr = 1e-2) minimize loss
train { batch = 16, steps = 4 }
"""


def test_resume_with_another_spec_names_what_differs(cli) -> None:
    Path("a.dl").write_text(TINY)
    assert cli("a.dl", "--quiet", "--out", "run")[0] == 0
    meta = load_checkpoint("run/checkpoint.npz")[1]
    assert saved_fingerprint(meta)["params"]["clf.dense2.W"] == "f32[2,8]"  # the inner call
    assert saved_fingerprint(meta)["optimizers"] == ["adam minimize loss"]
    Path("b.dl").write_text(TINY.replace("H = 8", "H = 6").replace("adam(", "sgd("))
    status, _, err = cli("b.dl", "--quiet", "--resume", "run", "--steps", "8")
    assert status == 1 and err.count("error:") == 1
    assert "which differs from this spec" in err
    assert "parameter 'clf.dense2.W' is f32[2,8] in the checkpoint and f32[2,6] in this spec" \
        in err
    assert "and 6 more differences" in err  # adam's state (8 variables) in all
    assert "the optimizers are adam minimize loss in the checkpoint and sgd minimize loss in " \
           "this spec" in err
    assert "--init-from" in err
    status, _, err = cli("b.dl", "--init-from", "run/checkpoint.npz", "--steps", "2")
    assert status == 0 and "init-from: loaded 1 of 4 parameters" in err
    assert "skipped 3 with another shape: clf.dense2.W (checkpoint float32[2, 8]" in err
    status, _, err = cli("a.dl", "--quiet", "--resume", "run", "--steps", "8")
    assert status == 0, err


def test_a_checkpoint_records_a_variables_type_once(cli) -> None:
    Path("a.dl").write_text(TINY)
    assert cli("a.dl", "--quiet", "--out", "run")[0] == 0
    meta = load_checkpoint("run/checkpoint.npz")[1]
    assert meta["fingerprint"] == {"optimizers": ["adam minimize loss"]}
    assert meta["variables"]["clf.dense2.W"] == {"role": "param", "dtype": "float32",
                                                 "shape": [2, 8]}
    fp = saved_fingerprint(meta)
    assert fp["params"]["clf.dense2.W"] == "f32[2,8]"
    assert len(fp["params"]) == 4 and len(fp["state"]) == len(meta["variables"]) - 4


def test_checkpoints_that_repeat_the_types_or_have_no_fingerprint_still_resume(cli) -> None:
    Path("a.dl").write_text(TINY)
    assert cli("a.dl", "--quiet", "--out", "run")[0] == 0
    saved, meta = load_checkpoint("run/checkpoint.npz")
    program = compile_spec(TINY, "a.dl").program
    full = saved_fingerprint(meta)
    written_before = {**meta, "fingerprint": full}  # types in the fingerprint as well
    oldest = {k: v for k, v in meta.items() if k != "fingerprint"}
    for m in (written_before, oldest):
        check_fingerprint("ck.npz", m, program)
        save_checkpoint("old/checkpoint.npz", saved, m)
        status, _, err = cli("a.dl", "--quiet", "--resume", "old/checkpoint.npz", "--steps", "6")
        assert status == 0, err
    other = compile_spec(TINY.replace("H = 8", "H = 6"), "b.dl").program
    with pytest.raises(CheckpointError, match="parameter 'clf.dense2.W' is f32.2,8. in the "
                       r"checkpoint and f32\[2,6\] in this spec"):
        check_fingerprint("ck.npz", written_before, other)
    with pytest.raises(CheckpointError, match="parameter 'clf.dense2.W' is f32.2,8."):
        check_fingerprint("ck.npz", oldest, other)


# --------------------------------------------------------------------------- run locks

LONG = TINY.replace("steps = 4", "steps = 10000000, checkpoint_every = 100")


def _wait_for(cond, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _checkpoint_step(path: Path) -> int:
    try:
        return int(load_checkpoint(path)[1]["step"])
    except Exception:
        return -1


def test_two_runs_never_share_a_run_directory(tmp_path: Path) -> None:
    (tmp_path / "a.dl").write_text(LONG)
    first = subprocess.Popen([sys.executable, "-m", "dsl.cli", "a.dl", "--quiet", "--out",
                              "run"], cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _checkpoint_step(tmp_path / "run" / "checkpoint.npz") >= 100)
        holder = json.loads((tmp_path / "run" / "run.lock").read_text())
        assert holder["pid"] == first.pid
        second = run_cli(["a.dl", "--quiet", "--out", "run", "--steps", "5"], tmp_path)
        assert second.returncode == 1
        assert "is in use by another dslrun process (pid " + str(first.pid) in second.stderr
        assert "Traceback" not in second.stderr
        assert _checkpoint_step(tmp_path / "run" / "checkpoint.npz") >= 100  # untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed run's lock names a dead process: the next run takes the directory
    assert json.loads((tmp_path / "run" / "run.lock").read_text())["pid"] == first.pid
    step = _checkpoint_step(tmp_path / "run" / "checkpoint.npz")
    done = run_cli(["a.dl", "--quiet", "--resume", "run", "--steps", str(step + 3)],
                      tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "run.lock").read_text() == ""  # released at the end


def test_a_lock_is_held_once_and_a_dead_holder_is_stale(tmp_path: Path) -> None:
    held = RunLock.acquire(tmp_path)
    with pytest.raises(RunDirError, match=f"pid {os.getpid()}"):
        RunLock.acquire(tmp_path)
    held.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / runs.LOCK).write_text(json.dumps({"pid": int(dead), "host": "x"}))
    RunLock.acquire(tmp_path).release()


# --------------------------------------------------------------------------- SIGKILL

KILLED = """model killed
data blobs(n = 200, centers = 3, seed = 0)
input x: f32[B, 2]
input y: i64[B]
const CK = 1
net clf(x) { return dense(tanh(dense(x, 16)), 3) }
objective loss = cross_entropy(clf(x), y)
optimizer adam(lr = 1e-2) minimize loss
train { batch = 8, steps = 10000000, checkpoint_every = CK, log_every = 7 }
"""
TARGET = 400


def test_sigkill_at_random_points_always_leaves_a_checkpoint_that_resumes_exactly(
        tmp_path: Path) -> None:
    """Runs that checkpoint every step are killed at seeded random moments (often in the
    middle of writing a checkpoint); each checkpoint loads, and resuming to TARGET steps ends
    with the final loss and parameters of the run trained at once, bit for bit."""
    (tmp_path / "k.dl").write_text(KILLED)
    once = run_cli(["k.dl", "--quiet", "--steps", str(TARGET), "--out", "once", "--json",
                       "once.json", "--set", "CK=1000000"], tmp_path)
    assert once.returncode == 0, once.stderr
    want = json.loads((tmp_path / "once.json").read_text())["loss_final"]
    want_vars = load_checkpoint(tmp_path / "once" / "checkpoint.npz")[0]
    rng = random.Random(11)
    for trial in range(5):
        out = tmp_path / f"k{trial}"
        proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "k.dl", "--quiet", "--out",
                                 out.name], cwd=tmp_path, env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_for(lambda o=out, p=proc: (o / "checkpoint.npz").exists()
                      or p.poll() is not None)
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
        step = _checkpoint_step(out / "checkpoint.npz")
        assert 1 <= step < TARGET, step  # the checkpoint loads
        # (measured: 4 of the 5 kills hit a checkpoint being written, leaving its temporary)
        done = run_cli(["k.dl", "--quiet", "--resume", out.name, "--steps", str(TARGET),
                           "--json", f"{out.name}.json", "--set", "CK=1000000"], tmp_path)
        assert done.returncode == 0, done.stderr
        got = json.loads((tmp_path / f"{out.name}.json").read_text())["loss_final"]
        assert got == want, (trial, step, got, want)
        saved = load_checkpoint(out / "checkpoint.npz")[0]
        assert all(saved[k].tobytes() == want_vars[k].tobytes() for k in want_vars)
        assert not list(out.glob(".*.tmp"))  # the resumed run removed the killed one's

