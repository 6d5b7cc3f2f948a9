"""Pictures: a run's curves.png, the picture of a procedure's samples, graphs drawn by
Graphviz (`dslrun graph --format svg|png`), and what a notebook shows for a Model and a graph.

Runs are tiny (20 steps on 64 points) so the module takes seconds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_env

import dsl
from dsl.cli import main
from dsl.render import GraphView, stage_graphs
from dsl.summary import check_rows
from runtime.ir_dot import to_dot, to_dot_many
from runtime.train.metrics_log import read_metrics
from runtime.train.pictures import (
    CURVES_NAME,
    PanelKind,
    curve_panels,
    draw_samples,
    sample_panels,
)

PNG = b"\x89PNG\r\n\x1a\n"

TINY = """model tiny
data  blobs(n = 64, centers = 3, seed = 0, test_fraction = 0.25)
input x: f32[B, 2]
input y: i64[B]

net clf(x) { return dense(relu(dense(x, 8)), 3) }

objective loss = cross_entropy(clf(x), y)
metric    acc  = accuracy(clf(x), y)
optimizer adam(lr = LR) minimize loss
train { batch = 16, steps = 20, seed = 0 }
"""

# no parameters: `dslrun sample` needs no checkpoint
SAMPLES = """model pics
data blobs(n = 64, centers = 3, seed = 0)
input x: f32[B, 2]

procedure draw(n = 16) {
    points = normal([n, 2])
    images = uniform([n, 1, 4, 4])
    return points, images
}

procedure series(n = 30) {
    z = 0.0
    noise = normal([n])
    loop t in 0 .. n {
        z = 0.9 * z + noise[t]
        emit z as walk
    }
    ids = randint(0, 10, [n])
    return walk, ids
}

procedure text(n = 30) {
    ids = randint(0, 10, [n])
    return ids
}
"""

LOOP = """model looped
input x: f32[4, 6, 3]
param w: f32[3, 3] = 0.1
net rnn(x) {
    h = zeros([4, 3])
    loop t in 0 .. 6 { h = tanh(x[:, t] @ w + h) }
    return h
}
objective loss = mean(rnn(x) ** 2)
optimizer sgd(lr = 0.1) minimize loss
"""

TWO_PHASES = """model two
net A(x) { return dense(x, 2) }
net C(x) { return dense(x, 2) }
param x0: [1, 2] = ones
objective la = sum((A(x0) - 1) ** 2)
objective lc = sum((C(x0) - A(x0)) ** 2)
optimizer sgd(lr = 0.1) minimize la over params(A)
optimizer sgd(lr = 0.1) minimize lc over params(C)
train { steps = 4, order = [la, lc] }
"""


def tiny(lr: str = "1e-2") -> str:
    return TINY.replace("LR", lr)


def needs_graphviz() -> None:
    pytest.importorskip("graphviz", reason="the graphviz Python package is not installed")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot program is not installed")


def hide_dot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH on which no `dot` can be found."""
    empty = tmp_path / "empty_path"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


# --------------------------------------------------------------------------- curves.png

def test_curves_are_drawn_at_the_first_checkpoint_and_at_the_end(tmp_path: Path) -> None:
    m = dsl.compile(tiny(), checkpoint_every=5, eval_every=5)
    run = m.start_run(tmp_path / "run")
    seen = {}

    def on_step(step: int, losses: dict) -> None:
        seen[step] = (run.path / CURVES_NAME).is_file()

    m.fit(on_step=on_step)
    assert seen[4] is False and seen[5] is True  # drawn with the checkpoint of step 5
    png = (run.path / CURVES_NAME).read_bytes()
    assert png.startswith(PNG)
    assert not list(run.path.glob(".*.tmp"))  # written atomically: no temporary file left
    rows = read_metrics(run.path / "metrics.csv")
    kinds = {"loss": "objective", "acc": "metric", "lr": "learning rate"}
    panels = {p.name: p for p in curve_panels(rows, kinds)}
    assert list(panels) == ["loss", "acc"]  # a constant learning rate gets no panel
    assert set(panels["loss"].series) == {"train steps (training mode)", "test evaluation",
                                          "train evaluation"}
    steps, values = panels["loss"].series["train steps (training mode)"]
    assert steps[-1] == 20 and len(values) == len(steps)
    assert panels["acc"].kind == "metric"
    assert panels["acc"].series["test evaluation"][0] == [5, 10, 15, 20]


def test_a_varying_learning_rate_gets_a_panel(tmp_path: Path) -> None:
    m = dsl.compile(tiny("1e-2 * 0.9 ** step"), out_dir=tmp_path / "run")
    m.fit()
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    panels = curve_panels(rows, {"loss": "objective", "acc": "metric",
                                 "lr": "learning rate"})
    assert [p.name for p in panels] == ["loss", "acc", "lr"]
    assert (tmp_path / "run" / CURVES_NAME).read_bytes().startswith(PNG)


def test_a_picture_that_cannot_be_written_never_stops_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    import matplotlib.figure

    def full_disk(*a: object, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_disk)
    monkeypatch.chdir(tmp_path)
    Path("tiny.dl").write_text(tiny())
    assert main(["tiny.dl", "--out", "run"]) == 0
    err = capsys.readouterr().err
    assert "No space left on device; no more pictures in this run" in err
    assert err.count("no more pictures") == 1  # tried once, then off
    assert (tmp_path / "run" / "checkpoint.npz").is_file()
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_train_draws_curves_unless_no_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("tiny.dl").write_text(tiny())
    assert main(["tiny.dl", "--out", "with", "--quiet"]) == 0
    assert main(["tiny.dl", "--out", "without", "--quiet", "--no-plots"]) == 0
    assert (tmp_path / "with" / CURVES_NAME).read_bytes().startswith(PNG)
    assert (tmp_path / "without" / "metrics.csv").is_file()
    assert not (tmp_path / "without" / CURVES_NAME).exists()


def test_check_and_compile_never_import_matplotlib_or_graphviz(tmp_path: Path) -> None:
    (tmp_path / "tiny.dl").write_text(tiny())
    code = ("import sys, dsl\n"
            "from dsl.cli import main\n"
            f"m = dsl.compile({tiny()!r})\n"
            "assert m.program.name == 'tiny'\n"
            "assert main(['check', 'tiny.dl']) == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'graphviz')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


# --------------------------------------------------------------------------- samples

@pytest.mark.parametrize(("shape", "dtype", "kind"), [
    ((9, 8, 8), np.float32, PanelKind.IMAGES),
    ((9, 1, 8, 8), np.float32, PanelKind.IMAGES),
    ((9, 3, 8, 8), np.float64, PanelKind.IMAGES),
    ((100, 2), np.float32, PanelKind.POINTS),
    ((50,), np.float32, PanelKind.SERIES),
    ((50,), np.int64, None),          # token ids: text, no picture
    ((), np.float32, None),           # a statistic
    ((9, 5, 8, 8), np.float32, None),  # 5 channels: not an image
    ((100, 3), np.float32, None),
])
def test_a_value_is_drawn_by_its_shape(shape: tuple, dtype: type, kind: PanelKind | None
                                       ) -> None:
    panels = sample_panels({"v": np.zeros(shape, dtype)})
    assert [p.kind for p in panels] == ([kind] if kind else [])


def test_series_share_a_panel_and_give_way_to_samples() -> None:
    walk, noise, other = np.zeros(30), np.ones(30), np.zeros(5)
    panels = sample_panels({"walk": walk, "noise": noise, "other": other})
    assert [sorted(p.values) for p in panels] == [["noise", "walk"], ["other"]]
    # beside sampled points a 1-D value is a statistic (the GAN's share per mode)
    panels = sample_panels({"samples": np.zeros((10, 2), np.float32), "share": np.ones(8)})
    assert [p.kind for p in panels] == [PanelKind.POINTS]


def test_training_points_are_asked_for_only_behind_points(tmp_path: Path) -> None:
    asked = []

    def background() -> np.ndarray:
        asked.append(True)
        return np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)

    rng = np.random.default_rng(1)
    out = draw_samples({"images": rng.uniform(size=(5, 6, 6))}, tmp_path / "a.png", "a",
                       background)
    assert out is not None and out.read_bytes().startswith(PNG) and not asked
    out = draw_samples({"samples": rng.normal(size=(40, 2))}, tmp_path / "b.png", "b",
                       background)
    assert out is not None and out.read_bytes().startswith(PNG) and asked == [True]
    assert draw_samples({"ids": np.arange(5)}, tmp_path / "c.png", "c") is None
    assert not (tmp_path / "c.png").exists()


def test_sample_writes_a_picture_beside_the_npz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("pics.dl").write_text(SAMPLES)
    for proc in ("draw", "series", "text"):
        assert main(["sample", "pics.dl", proc, "--out", "out"]) == 0
    assert (tmp_path / "out" / "draw.npz").is_file()
    assert (tmp_path / "out" / "draw.png").read_bytes().startswith(PNG)
    assert (tmp_path / "out" / "series.png").read_bytes().startswith(PNG)
    assert (tmp_path / "out" / "text.npz").is_file()
    assert not (tmp_path / "out" / "text.png").exists()  # token ids get no picture
    printed = capsys.readouterr().out
    assert f"picture: {Path('out') / 'draw.png'}" in printed
    assert main(["sample", "pics.dl", "draw", "--out", "quiet", "--no-plots"]) == 0
    assert (tmp_path / "quiet" / "draw.npz").is_file()
    assert not (tmp_path / "quiet" / "draw.png").exists()


# --------------------------------------------------------------------------- graphs

def test_phases_are_clusters_of_one_digraph() -> None:
    c = dsl.compile(TWO_PHASES).compiled
    graphs = stage_graphs(c, "step")
    assert [name for name, _ in graphs] == ["phase: la", "phase: lc"]
    dot = to_dot_many(graphs)
    assert dot.count("digraph") == 1
    labels = re.findall(r'^    label="(phase: \w+)"', dot, flags=re.M)
    assert labels == ["phase: la", "phase: lc"]
    ids = re.findall(r"^\s*(n\d+) \[", dot, flags=re.M)
    assert len(ids) == len(set(ids)) == sum(len(g.nodes) for _, g in graphs)


def test_graph_svg_and_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    needs_graphviz()
    monkeypatch.chdir(tmp_path)
    Path("looped.dl").write_text(LOOP)
    assert main(["graph", "looped.dl", "--stage", "forward", "--format", "svg",
                 "-o", "g.svg"]) == 0
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg
    # the loop's body is a cluster: its label, and its tanh inside the cluster's group
    cluster = svg.split('class="cluster"', 1)[1].split('class="node"', 1)[0]
    assert re.search(r"loop %\d+ region 0", cluster)
    assert main(["graph", "looped.dl", "--format", "png", "-o", "g.png"]) == 0
    assert (tmp_path / "g.png").read_bytes().startswith(PNG)
    assert main(["graph", "looped.dl", "--format", "svg"]) == 0  # svg to standard output
    assert "<svg" in capsys.readouterr().out


def test_graph_png_needs_an_output_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("looped.dl").write_text(LOOP)
    assert main(["graph", "looped.dl", "--format", "png"]) == 1
    assert capsys.readouterr().err == "error: --format png writes a file: give -o FILE\n"


def test_a_missing_dot_is_one_message_saying_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("graphviz", reason="the graphviz Python package is not installed")
    monkeypatch.chdir(tmp_path)
    Path("looped.dl").write_text(LOOP)
    hide_dot(monkeypatch, tmp_path)
    assert main(["graph", "looped.dl", "--format", "svg", "-o", "g.svg"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "`dot` program" in err
    assert "apt-get install graphviz" in err and "brew install graphviz" in err
    assert not (tmp_path / "g.svg").exists()


def test_a_missing_graphviz_package_says_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("looped.dl").write_text(LOOP)
    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz raises ImportError
    assert main(["graph", "looped.dl", "--format", "png", "-o", "g.png"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'dslrun[graph]'" in err


# --------------------------------------------------------------------------- notebooks

def test_a_model_shows_what_check_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("pics.dl").write_text(SAMPLES)
    assert main(["check", "pics.dl"]) == 0
    printed = capsys.readouterr().out
    m = dsl.load("pics.dl")
    html = m._repr_html_()
    assert "model pics" in html
    rows = check_rows(m.compiled)
    assert [label for label, _ in rows] == ["inputs", "outputs", "parameters", "data",
                                            "procedures"]
    for label, text in rows:
        assert re.search(rf"^{label}: +{re.escape(text)}$", printed, flags=re.M)
        assert f">{label}</th><td style='text-align:left'>{text}</td>" in html.replace(
            "&#x27;", "'")


def test_a_graph_shows_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = dsl.compile(LOOP)
    view = m.graph_view("forward")
    assert isinstance(view, GraphView)
    assert str(view) == m.graph_text("forward")
    assert view.dot == to_dot_many(stage_graphs(m.compiled, "forward"))
    assert repr(view).startswith("<GraphView of looped, stage forward: 1 graph,")
    with pytest.raises(dsl.Error, match="unknown graph stage 'fowrard'.*forward"):
        m.graph_view("fowrard")
    hide_dot(monkeypatch, tmp_path)
    fallback = m.graph_view("forward")
    assert fallback._repr_svg_() is None
    html = fallback._repr_html_()
    assert "apt-get install graphviz" in html and "tanh" in html and "<pre>" in html
    monkeypatch.undo()
    needs_graphviz()
    svg = view._repr_svg_()
    assert svg is not None and "<svg" in svg and "tanh" in svg
    assert view._repr_html_().startswith("<svg")
    saved = view.save(tmp_path / "g.png")
    assert saved.read_bytes().startswith(PNG)


def test_a_loop_body_is_drawn_as_a_cluster_with_its_own_nodes() -> None:
    (_, g), = dsl.compile(LOOP).compiled.stages["forward"]
    dot = to_dot(g)
    clusters = re.findall(r'subgraph (cluster_\d+) \{\n\s+label="loop %\d+ region 0"', dot)
    assert len(clusters) == 1
    body = dot.split(f"subgraph {clusters[0]} {{", 1)[1].split("\n  }", 1)[0]
    assert "tanh" in body and 'arg\\ni64[]\\nt"' in body  # the body's ops and its index
    assert f"ltail={clusters[0]}" in dot  # the cluster points at its loop node
    assert "tanh" not in dot.split(f"subgraph {clusters[0]}", 1)[0]  # nothing leaks out
    ids = re.findall(r"^\s*(n\d+) \[", dot, flags=re.M)
    assert len(ids) == len(set(ids))  # node ids are unique across graph and bodies


def test_a_failing_dot_is_one_message() -> None:
    pytest.importorskip("graphviz", reason="needs the graphviz package (the graph extra)")
    if shutil.which("dot") is None:
        pytest.skip("needs Graphviz's dot program (apt-get install graphviz)")
    from dsl.render import GraphvizMissing, render

    with pytest.raises(GraphvizMissing, match=r"dot could not draw the graph as svg \(exit 1\)"):
        render("digraph { a -> }", "svg")
