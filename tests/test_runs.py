"""Run directories and what a training run records and reports (issue 7).

`runs/<model>/<run id>/` with `latest`, `run.json`, the spec snapshot, `metrics.csv`,
`best.npz`; eval and resume reading a run's overrides; `log_every`; the validation split,
keep_best and early_stop (settings checked at their span); the learning rate as a step-graph
output; the progress line and the final table; resuming a finished run; missing splits;
output paths checked before any work; `--init-from` reports; a spec without a length.

The command line runs in-process (`dsl.cli.main`) in a temporary working directory, except
where a subprocess is the point.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TWO_PHASES

import dsl
from dsl.errors import DslError, DslWarning
from runtime.train import runs
from runtime.train.best import BestTracker, direction
from runtime.train.checkpoint import load_checkpoint
from runtime.train.data import Dataset, split_validation
from runtime.train.loop import Trainer, TrainError
from runtime.train.metrics_log import MetricsLog, read_metrics
from runtime.train.progress import Progress

TINY = """model tiny
data  blobs(n = 80, centers = 3, seed = 0, test_fraction = 0.25)
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
train { batch = 15, steps = 12, seed = 0 }
"""

NO_TEST = TINY.replace(", test_fraction = 0.25", "")
NO_TRAIN = "\n".join(line for line in TINY.splitlines() if not line.startswith("train"))


def write(tmp_path: Path, text: str, name: str = "tiny.dl") -> str:
    (tmp_path / name).write_text(text)
    return name


def latest(tmp_path: Path, model: str = "tiny") -> Path:
    return tmp_path / "runs" / model / (tmp_path / "runs" / model / "latest").read_text().strip()


def rows(path: Path) -> list[dict[str, str]]:
    return read_metrics(path)


# --------------------------------------------------------------------------- run directories


def test_new_run_ids_sort_by_start_and_never_collide(tmp_path: Path) -> None:
    t = 1_800_000_000.0
    a = runs.new_run(tmp_path, "m", now=t)
    b = runs.new_run(tmp_path, "m", now=t)  # the same second: a suffix
    c = runs.new_run(tmp_path, "m", now=t + 1)
    assert b.id == a.id + "-02" and sorted([c.id, b.id, a.id]) == [a.id, b.id, c.id]
    assert (tmp_path / "m" / "latest").read_text().strip() == c.id
    assert runs.latest_run(tmp_path, "m").path == c.path
    assert runs.resolve_checkpoint(tmp_path / "m" / "latest") == tmp_path / "m" / "latest"
    (c.path / "checkpoint.npz").write_bytes(b"x")
    assert runs.resolve_checkpoint(tmp_path / "m" / "latest") == c.checkpoint
    assert runs.resolve_checkpoint(c.path) == c.checkpoint


def test_a_training_run_records_itself(cli, tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.dl").write_text("def block(x, u) { return relu(dense(x, u)) }\n")
    spec = write(tmp_path, TINY.replace("const H = 8", 'include "lib/blocks.dl"\nconst H = 8')
                 .replace("h = relu(dense(x, H))", "h = block(x, H)"))
    status, out, err = cli("train", spec, "--set", "H=6", "--seed", "3", "--quiet")
    assert status == 0, err
    run = latest(tmp_path)
    assert run.parent == tmp_path / "runs" / "tiny"
    info = json.loads((run / "run.json").read_text())
    assert info["model"] == "tiny" and info["run_id"] == run.name
    # dtype: the --dtype given; none here (float32, and the float dtypes the spec writes)
    assert info["overrides"] == {"H": "6"} and info["seed"] == 3 and info["dtype"] is None
    assert set(info["versions"]) == {"dslrun", "numpy", "python"}
    assert info["command"][0] == "dslrun"  # with this process's arguments
    assert (run / "spec.dl").read_text() == (tmp_path / spec).read_text()
    assert (run / "lib" / "blocks.dl").is_file() and sorted(info["snapshot"]) == [
        "lib/blocks.dl", "spec.dl"]
    assert load_checkpoint(run / "checkpoint.npz")[1]["step"] == 12
    table = rows(run / "metrics.csv")
    header = next(csv.reader(io.StringIO((run / "metrics.csv").read_text())))
    assert header == ["step", "epoch", "split", "kind", "seconds", "loss", "acc", "lr"]
    steps = [r for r in table if r["kind"] == "step"]
    assert [int(r["step"]) for r in steps] == list(range(1, 13))  # 12 steps: a row each
    assert all(r["split"] == "train" and r["acc"] == "" and float(r["lr"]) == pytest.approx(
        1e-2) for r in steps)
    final = [(r["split"], r["kind"]) for r in table if r["kind"] == "eval"]
    assert final == [("train", "eval"), ("test", "eval")]


def test_out_names_the_run_directory_and_latest_is_left_alone(cli, tmp_path: Path) -> None:
    spec = write(tmp_path, TINY)
    assert cli("train", spec, "--out", "exp/one", "--quiet")[0] == 0
    assert (tmp_path / "exp" / "one" / "checkpoint.npz").is_file()
    assert (tmp_path / "exp" / "one" / "run.json").is_file()
    assert not (tmp_path / "runs").exists()


def test_eval_without_checkpoint_uses_the_latest_run_and_its_overrides(cli, tmp_path) -> None:
    spec = write(tmp_path, TINY)
    status, _, err = cli("eval", spec)
    assert status == 1
    assert "no trained run" in err and "dslrun train" in err and "--checkpoint" in err
    assert cli("train", spec, "--set", "H=5", "--dtype", "float64", "--quiet", "--json",
               "t.json")[0] == 0
    trained = json.loads((tmp_path / "t.json").read_text())
    status, out, err = cli("eval", spec, "--json", "e.json")  # H=5 and float64 from run.json
    assert status == 0, err
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["split"] == "test" and ev["step"] == 12
    assert ev["metrics"] == pytest.approx(trained["metrics"], rel=1e-9)
    assert f"checkpoint {trained['run_dir']}/checkpoint.npz (step 12)" in out
    # an explicit --set wins, and the difference is said (here the weights then do not fit)
    status, _, err = cli("eval", spec, "--set", "H=7")
    assert "note: --set H=7 replaces H=5 of the run" in err
    assert status == 1 and "which differs from this spec: parameter 'clf.dense1.W'" in err


def test_resume_reads_the_run_and_continues_in_its_directory(cli, tmp_path: Path) -> None:
    spec = write(tmp_path, TINY)
    assert cli("train", spec, "--set", "H=5", "--steps", "6", "--quiet")[0] == 0
    run = latest(tmp_path)
    # a row logged after the checkpoint (a run killed at step 7) is dropped on resume
    with open(run / "metrics.csv", "a") as f:
        f.write("7,1.1,train,step,0.1,9.0,,0.01\n")
    status, _, err = cli("train", spec, "--resume", run.relative_to(tmp_path), "--steps", "12",
                         "--quiet", "--json", "r.json")
    assert status == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["run_dir"] == str(
        run.relative_to(tmp_path))
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == [run.name,
                                                                             "latest"]
    steps = [int(r["step"]) for r in rows(run / "metrics.csv") if r["kind"] == "step"]
    assert steps == list(range(1, 13))
    info = json.loads((run / "run.json").read_text())
    assert info["resumes"][0]["step"] == 6 and not info["resumes"][0]["spec_changed"]
    # the resumed run is the run trained at once (same overrides picked up from run.json)
    assert cli("train", spec, "--set", "H=5", "--steps", "12", "--quiet", "--out", "once")[0] == 0
    a, b = load_checkpoint(run / "checkpoint.npz")[0], load_checkpoint(
        tmp_path / "once" / "checkpoint.npz")[0]
    assert all(np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- log_every


def test_log_every_sets_metrics_rows_and_progress_lines(tmp_path: Path) -> None:
    m = dsl.compile(TINY.replace("steps = 12", "steps = 12, log_every = 4"),
                    out_dir=tmp_path / "run")
    err = io.StringIO()
    m.fit(progress=Progress(err, tty=False))
    steps = [int(r["step"]) for r in rows(tmp_path / "run" / "metrics.csv")
             if r["kind"] == "step"]
    assert steps == [4, 8, 12]
    lines = err.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["4/12", "8/12", "12/12"]
    table = rows(tmp_path / "run" / "metrics.csv")
    # a training row holds the mean of the objective over its steps
    m2 = dsl.compile(TINY)
    losses = m2.fit(steps=12).losses["loss"]
    assert float(table[0]["loss"]) == pytest.approx(np.mean(losses[:4]), rel=1e-5)


def test_log_every_default_is_about_a_hundred_rows(tmp_path: Path) -> None:
    m = dsl.compile(TINY.replace("steps = 12", "steps = 250"), out_dir=tmp_path / "run")
    m.fit()
    steps = [int(r["step"]) for r in rows(tmp_path / "run" / "metrics.csv")
             if r["kind"] == "step"]
    assert steps == list(range(3, 250, 3)) + [250]


def test_metrics_log_keeps_rows_up_to_the_resumed_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path, ["loss"], resume_step=0)
    for s in (1, 2, 3):
        log.step_row(s, s / 2, 0.0, {"loss": float(s)})
    log.close()
    with open(path, "a") as f:
        f.write("4,2,train,st")  # a line cut short by a kill
    log = MetricsLog(path, ["loss", "acc"], resume_step=2)  # a column more: old rows kept
    log.eval_row(2, 1.0, "valid", 0.0, {"loss": 0.5, "acc": 0.75})
    log.close()
    got = [(r["step"], r["split"], r["loss"], r["acc"]) for r in rows(path)]
    assert got == [("1", "train", "1.0", ""), ("2", "train", "2.0", ""),
                   ("2", "valid", "0.5", "0.75")]


# --------------------------------------------------------------------------- train settings


def test_validation_split_is_seeded_stratified_and_removed_from_training() -> None:
    rng = np.random.default_rng(0)
    ds = Dataset({"x": rng.normal(size=(100, 2)), "y": np.repeat(np.arange(4), 25)})
    a, b = split_validation(ds, 0.2, 7), split_validation(ds, 0.2, 7)
    assert np.array_equal(a.valid["x"], b.valid["x"])
    assert len(a.train["y"]) == 80 and len(a.valid["y"]) == 20
    assert np.bincount(a.valid["y"]).tolist() == [5, 5, 5, 5]
    both = np.concatenate([a.train["x"], a.valid["x"]])
    assert len(np.unique(both, axis=0)) == 100  # no row in both parts
    assert not np.array_equal(split_validation(ds, 0.2, 8).valid["x"], a.valid["x"])
    m = dsl.compile(TINY.replace("seed = 0 }", "seed = 0, validation = 0.2 }"))
    res = m.fit()
    assert set(res.metrics) == {"train", "valid", "test"}
    assert len(m.trainer.dataset.train["y"]) == 48 and len(m.trainer.dataset.valid["y"]) == 12
    assert m.evaluate("valid") == pytest.approx(res.metrics["valid"])


def test_keep_best_writes_best_npz_of_the_best_evaluation(tmp_path: Path) -> None:
    text = TINY.replace("steps = 12, seed = 0 }",
                        "steps = 30, seed = 0, validation = 0.2, eval_every = 3, "
                        "keep_best = acc }")
    m = dsl.compile(text, out_dir=tmp_path / "run")
    res = m.fit()
    assert res.eval_split == "valid" and [s for s, _ in res.evals] == list(range(3, 30, 3))
    history = [(s, ev["acc"]) for s, ev in res.evals] + [(30, res.metrics["valid"]["acc"])]
    best = max(v for _, v in history)
    first_best = next(s for s, v in history if v == best)  # ties keep the earlier one
    assert res.best["metric"] == "acc" and res.best["mode"] == "max"
    assert res.best["value"] == best and res.best["step"] == first_best
    assert load_checkpoint(tmp_path / "run" / "best.npz")[1]["step"] == first_best
    by_loss = dsl.compile(text.replace("keep_best = acc", "keep_best = \"loss\""))
    assert by_loss.fit().best["mode"] == "min"


def test_early_stop_stops_after_patience_evaluations_without_improvement() -> None:
    # lr 0 never improves: the first evaluation is the best, two more and it stops
    text = TINY.replace("adam(lr = 1e-2)", "sgd(lr = 0.0)").replace(
        "steps = 12, seed = 0 }", "steps = 100, seed = 0, validation = 0.2, eval_every = 2, "
        "early_stop = 2 }")
    out = io.StringIO()
    res = dsl.compile(text).fit(progress=Progress(out, tty=False))
    assert res.stopped == "early_stop" and res.step == 6
    assert res.best["metric"] == "loss" and res.best["step"] == 2
    assert "early stop: loss on the valid split has not improved for 2 evaluations" in \
        out.getvalue()


def test_best_direction_and_tracker_state() -> None:
    assert direction("loss", "objective") == "min"
    assert direction("acc", "metric") == "max" and direction("top5_accuracy", "metric") == "max"
    assert direction("mae", "metric") == "min" and direction("val_error", "metric") == "min"
    assert direction("foo", "metric") is None
    t = BestTracker("acc", "max", keep=True, patience=2)
    assert t.observe(1, 0.5) and not t.observe(2, 0.5) and not t.observe(3, float("nan"))
    assert t.should_stop
    u = BestTracker("acc", "max")
    u.set_state(t.state())
    assert (u.best, u.best_step, u.bad) == (0.5, 1, 2)


BAD_SETTINGS = [
    ("steps = 12, epochs = 3", "give steps or epochs, not both", "epochs = 3"),
    ("validation = 1.5", "validation is the fraction", "validation = 1.5"),
    ("keep_best = accuracy", "keep_best names an objective or metric, and 'accuracy' is none",
     "keep_best = accuracy"),
    ("keep_best = acc, keep_best_mode = \"up\"", "keep_best_mode must be", "keep_best_mode"),
    ("keep_best_mode = \"max\"", "keep_best_mode needs keep_best", "keep_best_mode"),
    ("early_stop = -1", "train setting 'early_stop' must be an integer >= 0", "early_stop"),
    ("clip_norm = -1.0", "clip_norm is a number >= 0", "clip_norm"),
    ("clip_value = \"big\"", "clip_value is a number >= 0", "clip_value"),
]


@pytest.mark.parametrize(("setting", "message", "at"), BAD_SETTINGS,
                         ids=[b[0] for b in BAD_SETTINGS])
def test_bad_train_settings_are_errors_at_the_setting(setting: str, message: str,
                                                      at: str) -> None:
    text = TINY.replace("train { batch = 15, steps = 12, seed = 0 }",
                        f"train {{ batch = 15, {setting} }}")
    with pytest.raises(DslError) as e:
        dsl.compile(text)
    assert message in e.value.message
    line = text.splitlines()[e.value.span.line - 1]
    assert line[e.value.span.col - 1:].startswith(at), (line, e.value.span)


def test_keep_best_mode_is_asked_for_when_the_name_does_not_say() -> None:
    text = TINY.replace("metric    acc", "metric    foo").replace(
        "seed = 0 }", "seed = 0, validation = 0.1, keep_best = foo }")
    with pytest.raises(DslError, match="add keep_best_mode"):
        dsl.compile(text)
    m = dsl.compile(text.replace("keep_best = foo", "keep_best = foo, keep_best_mode = \"max\""))
    assert m.program.train.keep_best_mode == "max"


def test_keep_best_without_validation_warns() -> None:
    with pytest.warns(DslWarning, match="keep_best without validation judges 'acc' on the test"):
        dsl.compile(TINY.replace("seed = 0 }", "seed = 0, keep_best = acc }"))


def test_trainer_settings_are_checked_too() -> None:
    prog = dsl.compile(TINY).program
    with pytest.raises(TrainError, match="give steps or epochs, not both"):
        Trainer(prog, steps=3, epochs=1)
    with pytest.raises(TrainError, match="'validation' must be a fraction"):
        Trainer(prog, validation=1.0)
    with pytest.raises(TrainError, match="keep_best names 'nope'"):
        Trainer(prog, keep_best="nope")
    assert Trainer(prog, epochs=2).settings.steps is None  # replaces the spec's steps


# --------------------------------------------------------------------------- learning rate


def test_the_learning_rate_is_a_step_graph_output() -> None:
    m = dsl.compile(TINY.replace("adam(lr = 1e-2)", "adam(lr = 1e-2 * 0.5 ** epoch)"))
    g = m.program.phases[0].graph
    assert g.output_kinds["lr"] == "lr"
    res = m.fit(steps=7)  # 4 batches per epoch: the 7th step is in epoch 1
    assert res.lr == {"lr": pytest.approx(5e-3)}
    gan = dsl.compile(TWO_PHASES, data={"x": np.zeros((8, 2))})
    kinds = [{n for n, k in ph.graph.output_kinds.items() if k == "lr"}
             for ph in gan.program.phases]
    assert kinds == [{"lr.g_loss"}, {"lr.d_loss"}]
    assert gan.fit(steps=1, batch=4).lr == {"lr.g_loss": pytest.approx(1e-2),
                                             "lr.d_loss": pytest.approx(2e-3)}


def test_progress_shows_epoch_learning_rate_and_eta() -> None:
    out = io.StringIO()
    dsl.compile(TINY).fit(steps=12, progress=Progress(out, tty=False))
    first = out.getvalue().splitlines()[0]
    assert first.startswith("step 2/12  epoch 0.50  loss ") and "  lr 0.01  " in first
    assert "steps/s  ETA " in first
    assert "ETA" not in out.getvalue().splitlines()[-1]  # nothing left at the end


def test_final_table_keeps_the_splits_apart(cli, tmp_path: Path) -> None:
    spec = write(tmp_path, TINY.replace("seed = 0 }", "seed = 0, validation = 0.2 }"))
    status, out, err = cli("train", spec)
    assert status == 0, err
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("evaluation"))
    assert lines[head].split() == ["evaluation", "train", "valid", "test"]
    assert lines[head + 2].split()[0] == "loss" and lines[head + 3].split()[0] == "acc"
    assert any("over the training steps (training mode): first" in line for line in lines)
    assert "None" not in out


# --------------------------------------------------------------------------- small mistakes


def test_resume_at_or_past_the_target_says_so(cli, tmp_path: Path) -> None:
    spec = write(tmp_path, TINY)
    assert cli("train", spec, "--quiet")[0] == 0
    ckpt = (latest(tmp_path) / "checkpoint.npz").relative_to(tmp_path)
    for steps in ("12", "5"):
        status, out, err = cli("train", spec, "--resume", ckpt, "--steps", steps)
        assert status == 0
        assert f"nothing to train: the checkpoint {ckpt} is already at " \
               f"step 12, and this run ends at step {steps}" in err
        assert "None" not in out + err
    assert load_checkpoint(tmp_path / ckpt)[1]["step"] == 12


def test_eval_of_a_missing_split_is_an_error_unless_none_was_asked(cli, tmp_path) -> None:
    spec = write(tmp_path, NO_TEST)
    assert cli("train", spec, "--quiet")[0] == 0
    status, _, err = cli("eval", spec, "--split", "test")
    assert status == 1
    assert err.startswith("error: there is no test split") and "test_fraction" in err
    status, out, err = cli("eval", spec)
    assert status == 0 and "reporting the train split" in err and "train split" in out
    status, _, err = cli("eval", spec, "--split", "valid")
    assert status == 1 and "validation = 0.1" in err
    m = dsl.compile(NO_TEST)
    with pytest.raises(TrainError, match="no test split"):
        m.evaluate("test")
    assert m.default_split == "train" and set(m.evaluate()) == {"loss", "acc"}


@pytest.mark.parametrize("flags", [["--json", "nodir/x.json"], ["--json", "."],
                                   ["--out", "afile/run"]], ids=["json-dir", "json-is-dir",
                                                                 "out-under-file"])
def test_output_paths_are_checked_before_any_work(cli, tmp_path: Path, flags) -> None:
    spec = write(tmp_path, TINY)
    (tmp_path / "afile").write_text("")
    status, out, err = cli("train", spec, *flags)
    assert status == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert flags[0] in err
    assert not (tmp_path / "runs").exists() and out == ""
    for cmd in (["eval", spec], ["bench", spec, "--steps", "1", "--warmup", "0"]):
        if flags[0] == "--json":
            status, _, err = cli(*cmd, *flags)
            assert status == 1 and "--json" in err


def test_init_from_reports_loaded_and_skipped(cli, tmp_path: Path) -> None:
    spec = write(tmp_path, TINY)
    assert cli("train", spec, "--quiet", "--out", "base")[0] == 0
    other = write(tmp_path, TINY.replace("return dense(h, 3)", "return dense(h, 4)")
                  .replace("centers = 3", "centers = 4"), "four.dl")
    status, _, err = cli("train", other, "--init-from", "base/checkpoint.npz", "--steps", "1",
                         "--out", "tuned")
    assert status == 0, err
    assert "init-from: loaded 2 of 4 parameters from base/checkpoint.npz; skipped 2 with " \
           "another shape: clf.dense2.W (checkpoint float32[8, 3], this program " \
           "float32[8, 4]), clf.dense2.b (checkpoint float32[3], this program float32[4])" in err
    status, _, err = cli("train", other, "--init-from", "base/checkpoint.npz", "--init-strict")
    assert status == 1 and "error: variable 'clf.dense2.W' in checkpoint" in err
    status, _, err = cli("train", spec, "--init-strict")
    assert status == 1 and "--init-strict goes with --init-from" in err


def test_a_spec_without_length_says_what_it_trains(cli, tmp_path: Path) -> None:
    spec = write(tmp_path, NO_TRAIN)
    status, _, err = cli("train", spec)
    assert status == 0
    assert "note: the spec sets no length: training 1 full-batch step (one epoch)" in err
    assert "train { steps = N }" in err and "--steps N" in err
    status, _, err = cli("train", spec, "--batch", "20")
    assert "training one epoch (3 steps)" in err
    status, _, err = cli("train", spec, "--steps", "2")
    assert "note:" not in err


def test_cli_subprocess_writes_a_run(dslrun, tmp_path: Path) -> None:
    """The real command: a run directory appears under the working directory."""
    write(tmp_path, TINY)
    proc = dslrun("tiny.dl", "--steps", "3")
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint: runs/tiny/" in proc.stdout
    assert (latest(tmp_path) / "checkpoint.npz").is_file()
    assert os.path.getsize(latest(tmp_path) / "metrics.csv") > 0


def test_taking_a_run_directory_removes_only_its_own_temporaries(tmp_path: Path) -> None:
    from runtime.train.runs import RunDir

    (tmp_path / ".checkpoint.npz.x1y2.tmp").write_bytes(b"partial")
    (tmp_path / ".metrics.csv.tmp").write_text("partial")
    (tmp_path / ".notes.md.tmp").write_text("an editor's file")  # --out may be any directory
    run = RunDir(tmp_path)
    run.lock()
    run.unlock()
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == [".notes.md.tmp"]
