"""The `dslrun` command line on its happy paths, through subprocesses on tiny specs written
into temporary directories (so `runs/` lands there).

Commands that only read run in parallel in one module-scoped fixture; training, evaluation,
resuming and fine-tuning run in order because each uses the previous checkpoint. Error
cases live in `tests/test_errors.py`.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from runtime.ir_text import parse_text
from runtime.passes import PIPELINE
from runtime.train.checkpoint import load_checkpoint

PASS_NAMES = [name for name, _ in PIPELINE]

TINY = """model tiny
data  blobs(n = 64, centers = 3, seed = 0, test_fraction = 0.25)
input x: f32[B, 2]
input y: i64[B]
const H = 8

net clf(x) {
  h = relu(dense(x, H))
  return dense(h, 3)
}

objective loss = cross_entropy(clf(x), y)
metric    acc  = accuracy(clf(x), y)
optimizer adam(lr = 1e-2) minimize loss
train { batch = 16, steps = 20, seed = 0 }
"""

# no data: the objective needs no input, and an output is printed after training
QUAD = """model quad
param w: [2] = zeros
objective loss = sum((w - [1, 2]) ** 2)
output twice = 2 * w
optimizer sgd(lr = 0.25) minimize loss
train { steps = 10 }
"""

TINY_PARAMS = 2 * 8 + 8 + 8 * 3 + 3

READ_ONLY: dict[str, list[str]] = {
    "check": ["check", "tiny.dl"],
    "check_set": ["check", "tiny.dl", "--set", "H=16"],
    "params": ["params", "tiny.dl"],
    "params_f64": ["params", "tiny.dl", "--dtype", "float64"],
    "dot": ["graph", "tiny.dl", "--format", "dot"],
    "locs": ["graph", "tiny.dl", "--locs"],
    "check_grad_1": ["check-grad", "tiny.dl"],
    "check_grad_2": ["check-grad", "tiny.dl", "--order", "2"],
    "bench": ["bench", "tiny.dl", "--steps", "5", "--warmup", "2", "--json", "bench.json"],
    "quad": ["quad.dl", "--json", "quad.json"],
    "help": ["--help"],
    **{f"stage_{s}": ["graph", "tiny.dl", "--stage", s]
       for s in ("forward", "grad", "step", "optimized")},
    **{f"dump_{p}": ["graph", "tiny.dl", "--dump-after", p] for p in PASS_NAMES},
}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "tiny.dl").write_text(TINY)
    (d / "quad.dl").write_text(QUAD)
    return d


@pytest.fixture(scope="module")
def out(work: Path, cli_runner) -> dict[str, object]:
    """Every read-only command run once, several at a time: key -> CompletedProcess."""
    keys = list(READ_ONLY)
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 1) as pool:
        procs = pool.map(lambda k: cli_runner(READ_ONLY[k], work), keys)
        return dict(zip(keys, procs))


def ok(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}"
    return proc.stdout


def graphs(text: str) -> list[str]:
    """The graph texts in a (possibly multi-phase) stage or dump."""
    chunks, cur = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("# phase: "):
            if cur:
                chunks.append("".join(cur))
            cur = []
        else:
            cur.append(line)
    chunks.append("".join(cur))
    return [c for c in chunks if c.strip()]


# ---------------------------------------------------------------- inspecting

def test_check(out) -> None:
    lines = ok(out["check"]).splitlines()
    assert lines[0] == "tiny: ok"
    assert lines[1] == "inputs:  x: f32[B,2], y: i64[B]"
    assert lines[2] == "outputs: objective loss, metric acc"
    assert lines[3] == f"parameters: {TINY_PARAMS}"
    assert lines[4] == "data: blobs"


def test_set_overrides_a_const(out) -> None:
    assert f"parameters: {2 * 16 + 16 + 16 * 3 + 3}" in ok(out["check_set"])


def test_params(out) -> None:
    text = ok(out["params"])
    for name, typ in (("clf.dense1.W", "f32[2,8]"), ("clf.dense1.b", "f32[8]"),
                      ("clf.dense2.W", "f32[8,3]"), ("opt.clf.dense1.W.m", "f32[2,8]")):
        row = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert typ in row
    assert f"total parameters: {TINY_PARAMS} (trainable {TINY_PARAMS})" in text
    assert "f64[2,8]" in ok(out["params_f64"])


@pytest.mark.parametrize("stage", ["forward", "grad", "step", "optimized"])
def test_graph_stages(out, stage: str) -> None:
    text = ok(out[f"stage_{stage}"])
    assert text.startswith("# dslgraph 1\n")
    assert f"# stage: {stage}\n" in text
    g = parse_text(text)
    assert g.outputs["loss"] is not None
    kinds = g.output_kinds
    if stage == "grad":
        assert kinds["clf.dense1.W.grad"] == "grad"
    if stage in ("step", "optimized"):
        assert set(g.updates) >= {"clf.dense1.W", "clf.dense2.b", "opt.clf.dense1.W.m"}
    if stage == "optimized":
        assert f"# passes: {', '.join(PASS_NAMES)}\n" in text
    assert "loc=" not in text


def test_graph_locs(out) -> None:
    assert "loc='tiny.dl:3:1'" in ok(out["locs"])


def test_graph_dot(out) -> None:
    text = ok(out["dot"])
    assert text.startswith("digraph dslgraph {") and text.rstrip().endswith("}")
    assert "->" in text and 'label="loss"' in text


@pytest.mark.parametrize("name", PASS_NAMES)
def test_graph_dump_after(out, name: str) -> None:
    text = ok(out[f"dump_{name}"])
    ran = ", ".join(PASS_NAMES[:PASS_NAMES.index(name) + 1])
    parts = graphs(text)
    assert [line[len("# phase: "):] for line in text.splitlines()
            if line.startswith("# phase: ")] == ["forward", "train"]
    for part in parts:
        assert f"# passes: {ran}\n" in part
        parse_text(part)


def test_check_grad(out) -> None:
    first = ok(out["check_grad_1"])
    assert "gradients: worst relative error" in first and first.rstrip().endswith("pass")
    assert "clf.dense1.W" in first
    second = ok(out["check_grad_2"])
    assert "Hessian-vector products: worst relative error" in second
    assert second.rstrip().endswith("pass")


def test_bench(out, work: Path) -> None:
    data = json.loads(ok(out["bench"]).strip().splitlines()[-1])
    assert set(data) == {"spec", "compile_ms", "data_ms", "step_ms_median", "steps", "gemm_ms",
                         "plan_peak_bytes", "rss_increase_bytes", "rss_method"}
    assert data["steps"] == 5 and data["step_ms_median"] > 0 and data["compile_ms"] > 0
    assert data["data_ms"] > 0  # the spec's data set, loaded while compiling, counted apart
    assert data["gemm_ms"] > 0 and data["plan_peak_bytes"] > 0
    assert json.loads((work / "bench.json").read_text()) == data


def test_outputs_without_data_are_printed(out, work: Path) -> None:
    text = ok(out["quad"])
    assert "twice" in text
    data = json.loads((work / "quad.json").read_text())
    assert data["steps"] == 10
    assert np.allclose(data["outputs"]["twice"], [2, 4], atol=1e-2)
    assert data["loss_final"] < data["loss_first"]


def test_help(out) -> None:
    text = ok(out["help"])
    for cmd in ("train", "check", "graph", "params", "eval", "check-grad", "bench"):
        assert cmd in text


# ---------------------------------------------------------------- training, in order

def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _params(path: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(path)[0]


def test_train_eval_resume_init_from(dslrun, tmp_path: Path) -> None:
    (tmp_path / "tiny.dl").write_text(TINY)
    # the default command is train; --steps N --json
    ok(dslrun("tiny.dl", "--steps", "20", "--quiet", "--json", "full.json", "--out", "full"))
    full = _json(tmp_path / "full.json")
    assert set(full) >= {"spec", "steps", "epochs", "loss_first", "loss_final", "metrics",
                         "params", "seconds", "checkpoint"}
    assert full["spec"] == "tiny.dl" and full["steps"] == 20
    assert full["epochs"] == pytest.approx(20 / 3)  # 48 training rows, batch 16
    assert full["params"] == TINY_PARAMS and full["seconds"] > 0
    assert set(full["metrics"]) == {"loss", "acc"}
    assert full["loss_final"] < full["loss_first"]
    assert full["checkpoint"] == "full/checkpoint.npz"
    assert (tmp_path / "full" / "checkpoint.npz").is_file()

    # eval of the checkpoint reproduces the run's final (test split) metrics
    ev = dslrun("eval", "tiny.dl", "--checkpoint", "full/checkpoint.npz", "--json", "ev.json")
    assert "acc" in ok(ev)
    metrics = _json(tmp_path / "ev.json")["metrics"]
    assert metrics == pytest.approx(full["metrics"], rel=1e-6)

    # 10 steps, then --resume to 20 in total: the same run as 20 at once
    ok(dslrun("train", "tiny.dl", "--steps", "10", "--quiet", "--json", "half.json"))
    run_id = (tmp_path / "runs" / "tiny" / "latest").read_text().strip()
    ckpt = f"runs/tiny/{run_id}/checkpoint.npz"  # the default place: a new run directory
    assert (tmp_path / ckpt).is_file()
    proc = dslrun("train", "tiny.dl", "--steps", "20", "--resume", ckpt,
                  "--json", "resumed.json", "--out", "resumed")
    ok(proc)
    assert f"resumed from {ckpt} at step 10" in proc.stderr
    resumed = _json(tmp_path / "resumed.json")
    assert resumed["steps"] == 20
    assert resumed["loss_final"] == full["loss_final"]
    a, b = _params(tmp_path / "full" / "checkpoint.npz"), _params(
        tmp_path / "resumed" / "checkpoint.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    # --init-from takes the weights only: a fresh run of 5 steps from trained weights
    ok(dslrun("train", "tiny.dl", "--steps", "5", "--quiet", "--init-from",
              "full/checkpoint.npz", "--json", "tuned.json", "--out", "tuned"))
    tuned = _json(tmp_path / "tuned.json")
    assert tuned["steps"] == 5
    assert tuned["loss_first"] < full["loss_first"]
    assert load_checkpoint(tmp_path / "tuned" / "checkpoint.npz")[1]["step"] == 5


def test_dtype_float64(dslrun, tmp_path: Path) -> None:
    (tmp_path / "tiny.dl").write_text(TINY)
    ok(dslrun("tiny.dl", "--steps", "3", "--dtype", "float64", "--quiet", "--json", "o.json"))
    data = _json(tmp_path / "o.json")
    variables = _params(tmp_path / data["checkpoint"])
    assert all(v.dtype == np.float64 for v in variables.values())
    assert data["steps"] == 3


def test_seed_changes_the_initialization(dslrun, tmp_path: Path) -> None:
    (tmp_path / "tiny.dl").write_text(TINY)
    ok(dslrun("tiny.dl", "--steps", "1", "--quiet", "--seed", "1", "--json", "a.json",
              "--out", "a"))
    ok(dslrun("tiny.dl", "--steps", "1", "--quiet", "--seed", "2", "--json", "b.json",
              "--out", "b"))
    assert _json(tmp_path / "a.json")["loss_first"] != _json(tmp_path / "b.json")["loss_first"]


def test_shipped_spec_by_name(dslrun, tmp_path: Path) -> None:
    text = ok(dslrun("check", "mlp_digits"))
    assert text.startswith("mlp_digits: ok")
    ok(dslrun("mlp_digits", "--steps", "2", "--quiet", "--json", "o.json"))
    data = _json(tmp_path / "o.json")
    assert data["steps"] == 2 and data["spec"] == "mlp_digits"
    assert (tmp_path / data["run_dir"] / "checkpoint.npz").is_file()
    assert data["run_dir"].startswith("runs/mlp_digits/")


def test_check_imports_no_heavy_modules(tmp_path: Path) -> None:
    """`dslrun check` must start fast: networkx (~0.15 s) and scikit-learn (~1.5 s) stay out,
    and so does Lark once the spec's parse is cached."""
    import subprocess
    import sys

    from conftest import cli_env

    code = ("import sys, contextlib, io\nfrom dsl.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    status = main(['check', 'kernel_perceptron'])\n"
            "heavy = ('lark', 'networkx', 'sklearn')\n"
            "print(status, sorted(m for m in heavy if m in sys.modules))\n")
    env = {**cli_env(), "DSLRUN_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120) for _ in range(2)]
    assert runs[0].stdout.split() == ["0", "['lark']"], runs[0].stdout + runs[0].stderr
    assert runs[1].stdout.split() == ["0", "[]"], runs[1].stdout + runs[1].stderr
