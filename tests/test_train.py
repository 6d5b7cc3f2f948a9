"""Tests for runtime.train: the training loop, checkpoints, resuming and progress display.

Programs are built by hand with the Builder: linear regression `mean((x @ w - y)**2)` with a
gradient-descent (optionally momentum) update from `runtime.autodiff.gradients`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import zipfile

import numpy as np
import pytest

from runtime.autodiff import gradients
from runtime.ir import Graph, TensorType
from runtime.ops import Builder
from runtime.plan import NonFiniteError
from runtime.program import Phase, Program, TrainSettings, Variable
from runtime.train import checkpoint as ckmod
from runtime.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from runtime.train.data import Dataset
from runtime.train.loop import (
    Trainer,
    TrainError,
    TrainingDiverged,
    TrainingInterrupted,
)
from runtime.train.metrics_log import read_metrics
from runtime.train.progress import Progress, format_table

D = 3


def _leaf(g: Graph, op: str, name: str, dtype: str, shape: tuple) -> int:
    return g.add(op, (), {}, TensorType(dtype, shape), role=op, name=name)


def _linreg_graph(train: bool, dt: str, lr: float, momentum: float, noise: float,
                  d: int = D, counters: bool = False) -> Graph:
    g = Graph()
    b = Builder(g)
    x = b.val(_leaf(g, "input", "x", dt, ("B", d)))
    y = b.val(_leaf(g, "input", "y", dt, ("B",)))
    w = b.val(_leaf(g, "param", "w", dt, (d,)))
    xin = x
    if train and noise:
        xin = x + b.emit("random_normal", shape=("B", d), std=noise, dtype=dt)
    r = xin @ w - y
    loss = b.emit("mean", r * r)
    g.outputs["loss"] = loss.id
    g.output_kinds["loss"] = "objective"
    if not train:
        mae = b.emit("mean", b.emit("abs", r))
        g.outputs["mae"] = mae.id
        g.output_kinds["mae"] = "metric"
        g.outputs["pred"] = (x @ w).id
        g.output_kinds["pred"] = "output"
        return g
    (gw,) = gradients(b, loss.id, [w.id])
    if momentum:
        v = b.val(_leaf(g, "state", "v", dt, (d,)))
        vn = v * momentum + gw
        g.updates["v"] = vn.id
        g.updates["w"] = (w - vn * lr).id
    else:
        g.updates["w"] = (w - gw * lr).id
    if counters:
        step = b.val(_leaf(g, "input", "step", dt, ()))
        epoch = b.val(_leaf(g, "input", "epoch", dt, ()))
        t_last = b.val(_leaf(g, "state", "t_last", dt, ()))
        e_last = b.val(_leaf(g, "state", "e_last", dt, ()))
        g.updates["t_last"] = (t_last * 0.0 + step).id
        g.updates["e_last"] = (e_last * 0.0 + epoch).id
    return g


def linreg(n: int = 64, dt: str = "f64", lr: float = 0.1, momentum: float = 0.0,
           noise: float = 0.0, batch: int | None = None, seed: int = 0, d: int = D,
           counters: bool = False, test: bool = False, **settings) -> tuple[Program, Dataset]:
    rng = np.random.default_rng(1234)
    fdt = TensorType(dt, ()).np_dtype()
    x = rng.standard_normal((n, d)).astype(fdt)
    theta = np.arange(1, d + 1, dtype=np.float64)
    y = (x @ theta + 0.1 * rng.standard_normal(n)).astype(fdt)
    variables = {"w": Variable("w", TensorType(dt, (d,)), np.zeros(d), "param")}
    if momentum:
        variables["v"] = Variable("v", TensorType(dt, (d,)), np.zeros(d), "state",
                                  kind="buffer")
    if counters:
        for k in ("t_last", "e_last"):
            variables[k] = Variable(k, TensorType(dt, ()), np.zeros(()), "state", kind="buffer")
    prog = Program(
        name="linreg",
        forward=_linreg_graph(False, dt, lr, momentum, noise, d),
        phases=[Phase("main", _linreg_graph(True, dt, lr, momentum, noise, d, counters),
                      "loss")],
        variables=variables,
        inputs={"x": TensorType(dt, ("B", d)), "y": TensorType(dt, ("B",))},
        objectives=["loss"], metrics=["mae"], outputs=["pred"],
        train=TrainSettings(batch=batch, seed=seed, **settings),
        float_dtype=dt,
    )
    if test:
        k = n * 3 // 4
        ds = Dataset({"x": x[:k], "y": y[:k]}, {"x": x[k:], "y": y[k:]})
    else:
        ds = Dataset({"x": x, "y": y})
    return prog, ds


# --------------------------------------------------------------------------- training


def test_fit_reaches_least_squares_solution():
    prog, ds = linreg(lr=0.1)
    tr = Trainer(prog, dataset=ds)
    res = tr.fit(steps=300)
    assert res.steps == 300 and res.step == 300 and len(res.losses["loss"]) == 300
    assert res.loss_first == res.losses["loss"][0] and res.loss_final == res.losses["loss"][-1]
    assert res.loss_final < 0.05 * res.loss_first
    assert all(isinstance(v, float) for v in res.losses["loss"])
    w_ls = np.linalg.lstsq(ds.train["x"], ds.train["y"], rcond=None)[0]
    np.testing.assert_allclose(tr.get_variables()["w"], w_ls, rtol=1e-8, atol=1e-10)
    assert res.epochs == 300.0  # full batch: one epoch per step
    assert set(res.metrics["train"]) == {"loss", "mae"}
    np.testing.assert_allclose(res.metrics["train"]["loss"],
                               np.mean((ds.train["x"] @ w_ls - ds.train["y"]) ** 2))
    # the Program's own initial values are untouched by training
    assert np.all(prog.variables["w"].value == 0)


def test_fit_epochs_and_totals_counted_from_step_zero():
    prog, ds = linreg(n=10, batch=4)
    tr = Trainer(prog, dataset=ds)
    res = tr.fit(epochs=2)  # 3 batches per epoch (4, 4, 2)
    assert res.steps == 6 and tr.epoch == 2.0
    assert tr.fit(epochs=2).steps == 0  # already there
    assert tr.fit(steps=8).steps == 2
    prog2, _ = linreg(n=10, batch=4, steps=5)
    assert Trainer(prog2, dataset=ds).fit().steps == 5  # the program's settings


def test_step_and_epoch_are_fed():
    prog, ds = linreg(n=10, batch=4, counters=True)
    tr = Trainer(prog, dataset=ds)
    seen = []
    tr.fit(steps=5, on_step=lambda s, losses: seen.append(
        (s, float(tr.variables["t_last"]), float(tr.variables["e_last"]))))
    # step is the 1-based index of the update; epoch is 0-based (batches 4, 4, 2 | 4, 4)
    assert seen == [(1, 1, 0), (2, 2, 0), (3, 3, 0), (4, 4, 1), (5, 5, 1)]


def _quadratic_program(lr: float = 0.25) -> Program:
    """min_w sum((w - c)**2) with no data; `total` accumulates the fed step numbers."""
    g = Graph()
    b = Builder(g)
    w = b.val(_leaf(g, "param", "w", "f64", (2,)))
    c = b.val(_leaf(g, "input", "c", "f64", (2,)))
    step = b.val(_leaf(g, "input", "step", "f64", ()))
    total = b.val(_leaf(g, "state", "total", "f64", ()))
    loss = b.emit("sum", (w - c) * (w - c))
    g.outputs["f"] = loss.id
    g.output_kinds["f"] = "objective"
    (gw,) = gradients(b, loss.id, [w.id])
    g.updates["w"] = (w - gw * lr).id
    g.updates["total"] = (total + step).id
    fg = Graph()
    fb = Builder(fg)
    fw = fb.val(_leaf(fg, "param", "w", "f64", (2,)))
    fc = fb.val(_leaf(fg, "input", "c", "f64", (2,)))
    fg.outputs["f"] = fb.emit("sum", (fw - fc) * (fw - fc)).id
    fg.output_kinds["f"] = "objective"
    return Program(
        name="quad", forward=fg, phases=[Phase("main", g, "f")],
        variables={"w": Variable("w", TensorType("f64", (2,)), np.array([5.0, -3.0]), "param"),
                   "total": Variable("total", TensorType("f64", ()), np.zeros(()), "state")},
        inputs={"c": TensorType("f64", (2,))},
        input_defaults={"c": np.array([1.0, 2.0])}, objectives=["f"],
        train=TrainSettings(steps=40))


def test_program_without_data_trains_on_defaults():
    tr = Trainer(_quadratic_program())
    res = tr.fit()
    assert res.steps == 40
    np.testing.assert_allclose(tr.get_variables()["w"], [1.0, 2.0], atol=1e-9)
    assert tr.get_variables()["total"] == 40 * 41 / 2
    assert res.metrics["train"]["f"] < 1e-15
    assert tr.predict({})["f"] < 1e-15
    np.testing.assert_allclose(tr.predict({"c": np.array([1.0, 3.0])})["f"], 1.0)


def test_same_seed_bit_identical_and_seed_matters():
    def run(seed):
        prog, ds = linreg(lr=0.05, noise=0.3, batch=10, seed=seed)
        tr = Trainer(prog, dataset=ds)
        return tr.fit(steps=25).losses["loss"], tr.get_variables()["w"]

    (l1, w1), (l2, w2), (l3, _) = run(3), run(3), run(4)
    assert l1 == l2 and w1.tobytes() == w2.tobytes()
    assert l1 != l3


def test_short_last_batch_gets_its_own_plan():
    prog, ds = linreg(n=10, batch=4)
    tr = Trainer(prog, dataset=ds)
    tr.fit(epochs=2)
    assert sorted(tr._phases[0].plans) == [(2,), (4,)]
    prog, ds = linreg(n=10, batch=4, drop_last=True)
    tr = Trainer(prog, dataset=ds)
    assert tr.fit(epochs=2).steps == 4
    assert sorted(tr._phases[0].plans) == [(4,)]


def test_evaluate_averages_batches_like_full_batch():
    prog, ds = linreg(n=50, test=True)
    tr = Trainer(prog, dataset=ds)
    tr.fit(steps=3)
    w = tr.get_variables()["w"]
    for split, arrays in (("train", ds.train), ("test", ds.test)):
        full = tr.evaluate(split)
        r = arrays["x"] @ w - arrays["y"]
        np.testing.assert_allclose(full["loss"], np.mean(r * r), rtol=1e-12)
        np.testing.assert_allclose(full["mae"], np.mean(np.abs(r)), rtol=1e-12)
        for b in (1, 4, 7, 100):
            part = tr.evaluate(split, batch=b)
            assert set(part) == {"loss", "mae"}  # user outputs are not averaged
            for k in part:
                np.testing.assert_allclose(part[k], full[k], rtol=1e-12)
    p20, d20 = linreg(n=20)
    with pytest.raises(TrainError, match="no test split"):
        Trainer(p20, dataset=d20).evaluate("test")


def test_eval_every_uses_the_test_split():
    prog, ds = linreg(n=40, test=True, batch=8, eval_every=4)
    res = Trainer(prog, dataset=ds).fit(steps=10)
    assert [s for s, _ in res.evals] == [4, 8]
    assert set(res.evals[0][1]) == {"loss", "mae"}
    assert set(res.metrics) == {"train", "test"}


def test_predict_computes_what_the_inputs_allow():
    prog, ds = linreg()
    tr = Trainer(prog, dataset=ds)
    tr.fit(steps=50)
    x = ds.train["x"][:5]
    out = tr.predict({"x": x})
    assert set(out) == {"pred"}
    np.testing.assert_allclose(out["pred"], x @ tr.get_variables()["w"])
    both = tr.predict({"x": x, "y": ds.train["y"][:5]})
    assert {"pred", "loss", "mae"} <= set(both)
    with pytest.raises(TrainError, match="dimension B is 5 in input 'x' but 4 in input 'y'"):
        tr.predict({"x": x, "y": ds.train["y"][:4]})


# --------------------------------------------------------------------------- checkpoints


def _resumable(**kw):
    return linreg(lr=0.05, momentum=0.9, noise=0.2, batch=10, seed=7, **kw)


def test_resume_is_bit_exact(tmp_path):
    prog, ds = _resumable()
    full = Trainer(prog, dataset=ds)
    ref = full.fit(steps=20, final_eval=False)

    first = Trainer(prog, dataset=ds)
    head = first.fit(steps=10, final_eval=False)
    path = first.save(tmp_path / "ck.npz")
    assert head.losses["loss"] == ref.losses["loss"][:10]

    fresh = Trainer(prog, dataset=ds)
    meta = fresh.load(path)
    assert meta["step"] == 10 and fresh.step == 10
    tail = fresh.fit(steps=20, final_eval=False)
    assert tail.steps == 10
    assert tail.losses["loss"] == ref.losses["loss"][10:]
    a, b = full.get_variables(), fresh.get_variables()
    assert set(a) == {"w", "v"}
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert full.rng.bit_generator.state == fresh.rng.bit_generator.state


def test_init_from_loads_params_only(tmp_path):
    prog, ds = _resumable()
    tr = Trainer(prog, dataset=ds)
    tr.fit(steps=7, final_eval=False)
    path = tr.save(tmp_path / "ck.npz")
    fresh = Trainer(prog, dataset=ds)
    fresh.load(path, weights_only=True)
    assert fresh.step == 0
    np.testing.assert_array_equal(fresh.get_variables()["w"], tr.get_variables()["w"])
    np.testing.assert_array_equal(fresh.get_variables()["v"], 0.0)


def test_checkpoint_holds_no_pickles_and_is_self_describing(tmp_path):
    prog, ds = _resumable()
    tr = Trainer(prog, dataset=ds, out_dir=tmp_path)
    res = tr.fit(steps=4, final_eval=False)
    path = tmp_path / "checkpoint.npz"
    assert res.checkpoint == str(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert set(arrays) == {"__meta__", "var/w", "var/v"}
    assert all(a.dtype != object for a in arrays.values())
    meta = json.loads(str(arrays["__meta__"]))
    assert meta["step"] == 4 and meta["format"] == "dslrun.checkpoint/1"
    assert meta["variables"]["v"]["role"] == "state"
    assert meta["batcher"]["position"] == 4 and isinstance(meta["rng"], dict)
    with zipfile.ZipFile(path) as zf:
        assert all(n.endswith(".npy") for n in zf.namelist())


def test_checkpoint_every_and_at_the_end(tmp_path):
    prog, ds = linreg(batch=10, checkpoint_every=5)
    tr = Trainer(prog, dataset=ds, out_dir=tmp_path)
    seen = {}

    def on_step(step, losses):
        if step in (5, 10, 11):
            seen[step] = load_checkpoint(tmp_path / "checkpoint.npz")[1]["step"]

    tr.fit(steps=12, on_step=on_step, final_eval=False)
    assert seen == {5: 5, 10: 10, 11: 10}
    assert load_checkpoint(tmp_path / "checkpoint.npz")[1]["step"] == 12


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.arange(3.0)}, {"step": 1})
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 partial garbage")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ckmod.np, "savez", broken_savez)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_checkpoint(path, {"w": np.zeros(3)}, {"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]  # no temp file left behind

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(ckmod.os, "replace", broken_replace)
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_checkpoint(path, {"w": np.zeros(3)}, {"step": 3})
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["ck.npz"]
    variables, meta = load_checkpoint(path)
    assert meta["step"] == 1 and variables["w"].tolist() == [0.0, 1.0, 2.0]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint .* not a zip archive") as e:
        load_checkpoint(text)
    assert "pickle" not in str(e.value)  # numpy's own message would suggest unsafe loading
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(2))
    with pytest.raises(CheckpointError, match="__meta__"):
        load_checkpoint(plain)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __meta__=np.array("{}"), **{"var/w": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(CheckpointError):
        load_checkpoint(pickled)

    prog, ds = linreg()
    good = Trainer(prog, dataset=ds).save(tmp_path / "good.npz")
    prog4, ds4 = linreg(d=4)
    other = Trainer(prog4, dataset=ds4)
    w0 = other.get_variables()["w"]
    with pytest.raises(CheckpointError, match=r"parameter 'w' is f64\[3\] in the checkpoint "
                       r"and f64\[4\] in this spec"):
        other.load(good)
    np.testing.assert_array_equal(other.get_variables()["w"], w0)  # nothing changed
    progm, dsm = linreg(momentum=0.9)
    with pytest.raises(CheckpointError, match=r"state variable 'v' \(f64\[3\]\) is not in the "
                       "checkpoint"):
        Trainer(progm, dataset=dsm).load(good)
    Trainer(progm, dataset=dsm).load(good, weights_only=True)  # params suffice
    with pytest.raises(CheckpointError, match=r"state variable 'v' \(f64\[3\]\) is only in "
                       "the checkpoint"):
        Trainer(prog, dataset=ds).load(Trainer(progm, dataset=dsm).save(tmp_path / "m.npz"))
    prog32, ds32 = linreg(dt="f32")
    with pytest.raises(CheckpointError, match=r"'w' is f64\[3\] in the checkpoint and f32\[3\]"):
        Trainer(prog32, dataset=ds32).load(good)


# --------------------------------------------------------------------------- failures


def test_non_finite_loss_raises_and_keeps_last_good_variables():
    prog, ds = linreg(dt="f32", lr=3.0)  # far beyond the stable step size
    tr = Trainer(prog, dataset=ds)
    history = {0: tr.get_variables()["w"]}
    with pytest.raises(TrainingDiverged) as info:
        tr.fit(steps=2000, on_step=lambda s, _: history.__setitem__(s, tr.get_variables()["w"]))
    e = info.value
    assert e.objective == "loss" and e.phase == "main" and not np.isfinite(e.value)
    assert f"step {e.step}" in str(e) and "'loss'" in str(e)
    assert tr.step == e.step - 1 and e.result.steps == e.step - 1
    w = tr.get_variables()["w"]
    assert np.all(np.isfinite(w))
    assert w.tobytes() == history[e.step - 1].tobytes()


def test_nan_check_raises_non_finite_error_before_the_update():
    prog, ds = linreg(dt="f32", lr=3.0)
    tr = Trainer(prog, dataset=ds)
    with pytest.raises(TrainingDiverged) as info:
        tr.fit(steps=2000)
    bad = info.value.step
    tr2 = Trainer(prog, dataset=ds)
    tr2.fit(steps=bad - 1, final_eval=False)
    w = tr2.get_variables()["w"]
    with pytest.raises(NonFiniteError):
        tr2.fit(steps=bad, nan_check=True)
    assert tr2.step == bad - 1 and tr2.get_variables()["w"].tobytes() == w.tobytes()


def _two_phase_program() -> tuple[Program, Dataset]:
    """Phase 1 fits w1; phase 2 fits w2 and its objective is NaN at step 3 (0 * log(0))."""
    prog, ds = linreg(n=20)
    graphs = []
    for k, name in ((1, "w1"), (2, "w2")):
        g = Graph()
        b = Builder(g)
        x = b.val(_leaf(g, "input", "x", "f64", ("B", D)))
        y = b.val(_leaf(g, "input", "y", "f64", ("B",)))
        w = b.val(_leaf(g, "param", name, "f64", (D,)))
        r = x @ w - y
        loss = b.emit("mean", r * r)
        (gw,) = gradients(b, loss.id, [w.id])
        if k == 2:
            step = b.val(_leaf(g, "input", "step", "f64", ()))
            loss = loss + b.emit("log", 3.0 - step) * 0.0
        g.outputs[f"loss{k}"] = loss.id
        g.output_kinds[f"loss{k}"] = "objective"
        g.updates[name] = (w - gw * 0.1).id
        graphs.append(g)
    variables = {n: Variable(n, TensorType("f64", (D,)), np.zeros(D), "param")
                 for n in ("w1", "w2")}
    prog2 = Program("two", forward=graphs[0], phases=[Phase("a", graphs[0], "loss1"),
                                                      Phase("b", graphs[1], "loss2")],
                    variables=variables, inputs=prog.inputs, objectives=["loss1", "loss2"])
    return prog2, ds


def test_divergence_in_a_later_phase_undoes_earlier_phases_of_the_step():
    prog, ds = _two_phase_program()
    tr = Trainer(prog, dataset=ds)
    snaps = {}
    with pytest.raises(TrainingDiverged) as info:
        tr.fit(steps=5, on_step=lambda s, _: snaps.__setitem__(s, tr.get_variables()))
    assert info.value.step == 3 and info.value.phase == "b"
    losses = info.value.result.losses
    assert len(losses["loss1"]) == len(losses["loss2"]) == 2  # step 3 did not happen
    now = tr.get_variables()
    for k in ("w1", "w2"):
        assert now[k].tobytes() == snaps[2][k].tobytes()


def test_ctrl_c_writes_a_checkpoint_and_resume_continues(tmp_path):
    prog, ds = _resumable()
    ref = Trainer(prog, dataset=ds).fit(steps=12, final_eval=False)

    def on_step(step, _):
        if step == 5:
            raise KeyboardInterrupt

    tr = Trainer(prog, dataset=ds, out_dir=tmp_path)
    with pytest.raises(TrainingInterrupted) as info:
        tr.fit(steps=12, on_step=on_step)
    assert info.value.path == tmp_path / "checkpoint.npz" and info.value.step == 5
    fresh = Trainer(prog, dataset=ds)
    fresh.load(info.value.path)
    assert fresh.fit(steps=12, final_eval=False).losses["loss"] == ref.losses["loss"][5:]


def test_sigint_stops_after_the_current_step(tmp_path):
    prog, ds = _resumable()
    tr = Trainer(prog, dataset=ds, out_dir=tmp_path)
    before = signal.getsignal(signal.SIGINT)

    def on_step(step, _):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as info:
        tr.fit(steps=50, on_step=on_step)
    assert info.value.step == 3 and tr.step == 3
    assert load_checkpoint(info.value.path)[1]["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before


def test_on_step_can_stop_and_bad_settings_are_reported():
    prog, ds = linreg()
    res = Trainer(prog, dataset=ds).fit(steps=10, on_step=lambda s, _: s == 4)
    assert res.steps == 4 and res.stopped == "callback"
    with pytest.raises(TrainError, match="seed"):
        Trainer(prog, dataset=ds, seed=-1)
    with pytest.raises(TrainError, match="needs input 'y'"):
        Trainer(prog, dataset={"x": ds.train["x"]})


# --------------------------------------------------------------------------- progress


def test_progress_plain_lines_tty_bar_and_quiet():
    prog, ds = linreg()
    out = io.StringIO()
    Trainer(prog, dataset=ds).fit(steps=100, progress=Progress(out, tty=False))
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("step 100/100")
    assert "loss" in lines[0] and "steps/s" in lines[0]

    tty = io.StringIO()
    Trainer(prog, dataset=ds).fit(steps=30, progress=Progress(tty, tty=True))
    text = tty.getvalue()
    assert "\r[" in text and "30/30" in text and text.endswith("\n")

    quiet = io.StringIO()
    Trainer(prog, dataset=ds).fit(steps=30, progress=Progress(quiet, quiet=True))
    assert quiet.getvalue() == ""


def test_format_table():
    text = format_table([("loss", "0.125", "0.5"), ("accuracy", "0.98", "1")],
                        ["metric", "train", "test"])
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "train", "test"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].startswith("loss ") and lines[3].startswith("accuracy")
    # numbers are right-aligned in their columns
    assert lines[2].index("0.125") + 5 == lines[3].index("0.98") + 4


def test_a_phase_that_uses_an_input_only_through_its_shape_binds_the_dim_from_it():
    """The generator phase never reads x, but its noise is sized by shape(x)[0]."""
    from conftest import TWO_PHASES

    import dsl

    m = dsl.compile(TWO_PHASES, data={"x": np.random.default_rng(0).normal(size=(20, 2))})
    g = m.program.phases[0].graph
    assert g.find("input", "x") not in g.ancestors(g.outputs["g_loss"])
    res = m.fit(steps=3, batch=5)
    assert res.steps == 3 and all(np.isfinite(v).all() for v in res.losses.values())
    assert [sorted(r.plans) for r in m.trainer._phases] == [[(5,)], [(5,)]]


def test_every_new_fed_shape_is_checked_even_when_a_plan_for_its_dims_exists():
    import dsl

    rng = np.random.default_rng(0)
    train = {"x": rng.normal(size=(16, 3)), "y": rng.normal(size=16)}
    test = {"x": rng.normal(size=(16, 1)), "y": rng.normal(size=16)}  # one feature too few
    text = ("model m\ninput x: f64[B, 3]\ninput y: f64[B]\nparam w: [3] = zeros\n"
            "objective loss = mean((x @ w - y) ** 2)\noptimizer sgd(lr = 0.1) minimize loss\n")
    with pytest.raises(dsl.DslError, match=r"axis 1 of its field has size 1, not 3 in the test"):
        dsl.compile(text, data=Dataset(train=train, test=test), dtype="float64")
    # the runtime checks too, for a Trainer made without the language
    tr = Trainer(dsl.compile(text, dtype="float64").program, dataset=Dataset(train, test))
    tr.evaluate("train")
    with pytest.raises(TrainError, match=r"has type f64\[B,3\], but the fed array has shape"):
        tr.evaluate("test")


# --------------------------------------------------------------------------- runs (issue 7)


def test_resume_is_bit_exact_with_validation_keep_best_and_logs(tmp_path):
    """10 + save + load + 10 == 20 with a validation split, keep_best and early_stop: the
    tracker's best-so-far travels in the checkpoint, metrics.csv continues after step 10."""
    kw = dict(eval_every=2, validation=0.25, keep_best="mae", early_stop=50, log_every=1)
    prog, ds = _resumable(**kw)
    full = Trainer(prog, dataset=ds, out_dir=tmp_path / "full")
    ref = full.fit(steps=20)
    first = Trainer(prog, dataset=ds, out_dir=tmp_path / "half")
    first.fit(steps=10)
    fresh = Trainer(prog, dataset=ds, out_dir=tmp_path / "half")
    fresh.load(tmp_path / "half" / "checkpoint.npz")
    tail = fresh.fit(steps=20)
    assert tail.losses["loss"] == ref.losses["loss"][10:]
    assert tail.best == {**ref.best, "path": str(tmp_path / "half" / "best.npz")}
    a, b = full.get_variables(), fresh.get_variables()
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    best_a = load_checkpoint(tmp_path / "full" / "best.npz")
    best_b = load_checkpoint(tmp_path / "half" / "best.npz")
    assert best_a[1]["step"] == best_b[1]["step"] == ref.best["step"]
    assert all(best_a[0][k].tobytes() == best_b[0][k].tobytes() for k in best_a[0])

    def table(path):
        return [{k: v for k, v in r.items() if k != "seconds"}
                for r in read_metrics(path / "metrics.csv")]

    full_rows = table(tmp_path / "full")
    half_rows = [r for r in table(tmp_path / "half")
                 if not (r["step"] == "10" and r["kind"] == "eval" and r["split"] != "valid")]
    assert half_rows == full_rows  # (the first call's final evaluation rows aside)


def test_validation_rows_are_not_trained_on():
    prog, ds = linreg(n=40, batch=5, validation=0.25)
    tr = Trainer(prog, dataset=ds)
    assert len(tr.dataset.train["x"]) == 30 and len(tr.dataset.valid["x"]) == 10
    seen = []
    tr.fit(epochs=1, on_step=lambda s, _: seen.append(tr._batcher.n))
    assert set(seen) == {30}
    held = {r.tobytes() for r in tr.dataset.valid["x"]}
    assert not held & {r.tobytes() for r in tr.dataset.train["x"]}


def test_init_from_loads_what_fits_and_converts_float_dtypes(tmp_path):
    prog, ds = linreg(momentum=0.9)
    src = Trainer(prog, dataset=ds)
    src.fit(steps=3, final_eval=False)
    path = src.save(tmp_path / "a.npz")
    prog32, ds32 = linreg(dt="f32", momentum=0.9)
    tr = Trainer(prog32, dataset=ds32)
    m = tr.init_from(path)
    assert list(m.load) == ["w"] and m.converted == ["w"] and m.complete
    np.testing.assert_allclose(tr.get_variables()["w"], src.get_variables()["w"], rtol=1e-6)
    assert tr.get_variables()["v"].tolist() == [0.0] * D  # state is never taken
    prog4, ds4 = linreg(d=4)
    with pytest.raises(CheckpointError, match="no parameter that fits"):
        Trainer(prog4, dataset=ds4).init_from(path)


KILL_SPEC = """model killed
data  blobs(n = 400, centers = 3, seed = 0)
input x: f32[B, 2]
input y: i64[B]
net clf(x) { return dense(tanh(dense(x, 32)), 3) }
objective loss = cross_entropy(clf(x), y)
optimizer adam(lr = 1e-3) minimize loss
train { batch = 8, steps = 1000000, checkpoint_every = 50, log_every = 10 }
"""


def test_resume_after_kill_9_is_exact(tmp_path):
    """A run killed with SIGKILL between checkpoints resumes from its last checkpoint, in its
    own run directory, to exactly the run trained at once; metrics.csv has each step once."""
    import subprocess
    import sys
    import time

    from conftest import cli_env

    (tmp_path / "k.dl").write_text(KILL_SPEC)
    proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "k.dl", "--quiet"], cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = tmp_path / "runs" / "killed"
    try:
        deadline = time.monotonic() + 120
        step = 0
        while step < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                run = base / (base / "latest").read_text().strip()
                step = load_checkpoint(run / "checkpoint.npz")[1]["step"]
            except (OSError, CheckpointError):
                continue
    finally:
        proc.kill()
        proc.wait()
    assert step >= 100, proc.stderr.read().decode()
    step = load_checkpoint(run / "checkpoint.npz")[1]["step"]
    target = str(step + 20)
    env = cli_env()
    for args in (["k.dl", "--quiet", "--resume", str(run.relative_to(tmp_path)), "--steps",
                  target], ["k.dl", "--quiet", "--steps", target, "--out", "once"]):
        done = subprocess.run([sys.executable, "-m", "dsl.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    a = load_checkpoint(run / "checkpoint.npz")[0]
    b = load_checkpoint(tmp_path / "once" / "checkpoint.npz")[0]
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    logged = [int(r["step"]) for r in read_metrics(run / "metrics.csv") if r["kind"] == "step"]
    assert logged == sorted(set(logged)) and logged[-1] == int(target)
