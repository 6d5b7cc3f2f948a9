"""Graph pictures: a stage of a compiled spec as DOT (`runtime.ir_dot.to_dot_many`: each phase
or procedure a cluster, a loop's body a cluster inside it), rendered to SVG or PNG by Graphviz
(the `graphviz` Python package, `pip install 'dslrun[graph]'`, driving the `dot` program of
the OS packages). `dslrun graph --format svg|png` and `GraphView` (what `Model.graph_view`
returns, and what a notebook shows as the picture) both use it.

A missing `dot` (or Python package) is one `GraphvizMissing` error saying how to install it.
The graphviz package is imported when a picture is rendered, never before.
"""

from __future__ import annotations

import functools
import html
import os
from pathlib import Path
from typing import Any

from runtime.errors import UserError
from runtime.ir import Graph
from runtime.ir_dot import to_dot_many

__all__ = ["FORMATS", "GraphView", "GraphvizMissing", "render", "stage_graphs"]

FORMATS = ("svg", "png")  # the picture formats of `dslrun graph --format`
INSTALL_DOT = ("install Graphviz with your OS packages: apt-get install graphviz (Debian, "
               "Ubuntu), dnf install graphviz (Fedora), brew install graphviz (macOS), or "
               "see https://graphviz.org/download/")


class GraphvizMissing(UserError):
    """Rendering a graph needs Graphviz, which is not installed (or its dot failed)."""


def stage_graphs(compiled: Any, stage: str) -> list[tuple[str, Graph]]:
    """The named graphs of a stage: `phase: NAME` per phase (stage "planned" draws the
    optimized graphs), `procedure: NAME` per procedure with its default arguments."""
    if stage == "procedures":
        from dsl.procedures import procedure_graph

        return [(f"procedure: {n}", procedure_graph(compiled, n, {}, False).graph)
                for n in compiled.procedures]
    key = "optimized" if stage == "planned" else stage
    return [(f"phase: {name}" if name else "graph", g) for name, g in compiled.stages[key]]


def render(dot: str, fmt: str) -> bytes:
    """DOT text rendered by Graphviz's `dot` in `fmt` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown picture format {fmt!r}; the formats are {FORMATS}")
    try:
        import graphviz
    except ImportError:
        raise GraphvizMissing(
            f"drawing a graph as {fmt} needs the graphviz Python package: pip install "
            f"'dslrun[graph]' (or pip install graphviz); it runs Graphviz's dot program: "
            f"{INSTALL_DOT}") from None
    try:
        return graphviz.Source(dot).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise GraphvizMissing(
            f"drawing a graph as {fmt} needs Graphviz's `dot` program, which is not on PATH: "
            f"{INSTALL_DOT}") from None
    except graphviz.CalledProcessError as e:  # dot ran and failed (a crash, out of memory)
        why = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        raise GraphvizMissing(f"Graphviz's dot could not draw the graph as {fmt} (exit "
                              f"{e.returncode}): {why[-1] if why else 'no message'}") from None


class GraphView:
    """A stage of a compiled spec's graphs, as `dslrun graph` shows it: `str()` is the
    canonical text (`--format text`), `.dot` the DOT, `.svg()` / `.png()` the picture,
    `.save(path)` writes one (by the suffix: .svg, .png, .dot, or text). In a notebook it
    shows itself as the picture, or as its text with a note when Graphviz is missing."""

    def __init__(self, compiled: Any, stage: str = "optimized") -> None:
        known = [*compiled.stages, "planned", "procedures"]
        if stage not in known:
            from dsl.errors import DslError, did_you_mean

            raise DslError(f"unknown graph stage '{stage}'" + did_you_mean(stage, known)
                           + f"; the stages are: {', '.join(known)}")
        self.compiled = compiled
        self.stage = stage

    def __repr__(self) -> str:
        graphs = stage_graphs(self.compiled, self.stage)
        nodes = sum(len(g.nodes) for _, g in graphs)
        names = f" ({', '.join(n for n, _ in graphs)})" if len(graphs) > 1 else ""
        return (f"<GraphView of {self.compiled.program.name}, stage {self.stage}: "
                f"{len(graphs)} graph{'s' if len(graphs) != 1 else ''}{names}, {nodes} nodes>")

    def __str__(self) -> str:
        return self.text

    @functools.cached_property
    def text(self) -> str:
        return self.compiled.text(self.stage)

    @functools.cached_property
    def dot(self) -> str:
        return to_dot_many(stage_graphs(self.compiled, self.stage))

    def svg(self) -> str:
        return self._svg

    @functools.cached_property
    def _svg(self) -> str:
        return render(self.dot, "svg").decode()

    def png(self) -> bytes:
        return render(self.dot, "png")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the picture (.svg, .png), the DOT (.dot, .gv) or the text (any other)."""
        p = Path(path)
        suffix = p.suffix.lower().lstrip(".")
        if suffix in FORMATS:
            p.write_bytes(self.png() if suffix == "png" else self.svg().encode())
        else:
            p.write_text(self.dot if suffix in ("dot", "gv") else self.text)
        return p

    def _repr_svg_(self) -> str | None:
        try:
            return self.svg()
        except GraphvizMissing:
            return None  # the notebook falls back to _repr_html_'s text

    def _repr_html_(self) -> str:
        try:
            svg = self.svg()
        except GraphvizMissing as e:
            return (f"<div><p><i>{html.escape(str(e))}</i></p>"
                    f"<pre>{html.escape(self.text)}</pre></div>")
        return svg[svg.find("<svg"):]  # inline: without the XML prolog
