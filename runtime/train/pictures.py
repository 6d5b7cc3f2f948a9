"""Pictures of runs: `curves.png` (a run's metrics.csv drawn) and the picture of what a
procedure returned (`dslrun sample` writes `<procedure>.png` beside the `.npz`).

`draw_curves` gives each objective, metric and (varying) learning rate a panel against the
step: the training rows of metrics.csv (objectives averaged over the steps since the previous
row, in training mode) as a line, each evaluated split as points joined by a line.

`draw_samples` chooses a panel by the shape of each float value a procedure returned:

    [N, H, W], [N, C, H, W] (C = 1 or 3)   images     a grid of the first 64
    [N, 2]                                 points     a scatter over the training data's
                                                      2-D points (GAN, diffusion)
    [T]                                    series     one line each, series of one length
                                                      sharing a panel (Kalman filter)

Series are drawn only when there are no images or points: beside samples, a 1-D value is a
statistic (the GAN's share of samples per mode), printed rather than drawn. Integer values
(token ids, counts) and scalars get no panel; with no panel, no picture is written.

matplotlib is imported when a picture is drawn, never before (so `import dsl` and
`dslrun check` stay fast), and draws on its Agg canvas (no display, no global pyplot state).
Pictures are written atomically: a temporary file in the same directory, then renamed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from runtime.train.metrics_log import FIXED, read_metrics
from runtime.train.runs import CURVES_NAME, RunDirError

__all__ = ["CURVES_NAME", "MAX_IMAGES", "Curve", "Panel", "PanelKind", "curve_panels",
           "draw_curves", "draw_samples", "sample_panels"]

MAX_IMAGES = 64  # images drawn from one value (the grid of an [N, H, W] value)
MAX_BACKGROUND = 5000  # training points drawn behind sampled points
DPI = 100


# --------------------------------------------------------------------------- drawing helpers

# margins in inches around and between panels (fixed: a layout engine would triple the time
# a drawing takes): room for tick labels and an axis label on the left and below, a panel
# title above, the figure's title at the top
LEFT, RIGHT, BOTTOM, TOP, TITLE = 0.95, 0.25, 0.6, 0.45, 0.3


def _figure(title: str, panels: int, width: float, height: float,
            max_cols: int = 3) -> tuple[Any, list]:
    """An Agg figure titled `title` with `panels` axes of `width` x `height` inches (margins
    included) in rows of at most `max_cols`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(max_cols, panels)
    rows = math.ceil(panels / cols)
    w, h = width * cols, height * rows + TITLE
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    inner_w, inner_h = width - LEFT - RIGHT, height - BOTTOM - TOP
    fig.subplots_adjust(left=LEFT / w, right=1 - RIGHT / w, bottom=BOTTOM / h,
                        top=1 - (TOP + TITLE) / h, wspace=(LEFT + RIGHT) / inner_w,
                        hspace=(BOTTOM + TOP) / inner_h)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.suptitle(title, y=1 - 0.1 / h, va="top")
    return fig, axes[:panels]


def _save(fig: Any, path: Path) -> Path:
    """Write the figure as PNG atomically (a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RunDirError(f"cannot write {path}: {e.strerror or e}") from e
    return path


# --------------------------------------------------------------------------- curves

def _float(cell: str) -> float | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


TRAIN_ROWS = "train steps (training mode)"
COLORS = {TRAIN_ROWS: "tab:blue", "train evaluation": "tab:green",
          "valid evaluation": "tab:purple", "test evaluation": "tab:orange"}


def _series(rows: Sequence[Mapping[str, str]], column: str) -> dict[str, tuple[list, list]]:
    """label -> (steps, values) of one column: the training rows, then each evaluated split."""
    out: dict[str, tuple[list, list]] = {}
    for r in rows:
        v = _float(r.get(column, ""))
        step = _float(r.get("step", ""))
        if v is None or step is None:
            continue
        label = TRAIN_ROWS if r.get("kind") == "step" else f"{r.get('split')} evaluation"
        xs, ys = out.setdefault(label, ([], []))
        xs.append(step)
        ys.append(v)
    return out


@dataclass
class Curve:
    """One panel of curves.png: a quantity (a metrics.csv column), what it is, and its
    series by label (`train steps (training mode)`, `test evaluation`, ...): steps, values."""

    name: str
    kind: str
    series: dict[str, tuple[list, list]]


def curve_panels(rows: Sequence[Mapping[str, str]],
                 kinds: Mapping[str, str] | None = None) -> list[Curve]:
    """The panels of curves.png for metrics.csv rows (`read_metrics`); `kinds` names what
    each column is ("objective", "metric", "learning rate"; default "value"). A learning
    rate that never changes gets no panel, nor does a column without values."""
    kinds = kinds or {}
    panels = []
    for c in [c for c in (rows[0] if rows else ()) if c not in FIXED]:
        series = _series(rows, c)
        values = [v for _, ys in series.values() for v in ys]
        if not values or (kinds.get(c) == "learning rate" and max(values) == min(values)):
            continue
        panels.append(Curve(c, kinds.get(c, "value"), series))
    return panels


def draw_curves(csv_path: str | os.PathLike[str], png_path: str | os.PathLike[str],
                title: str, kinds: Mapping[str, str] | None = None) -> Path | None:
    """Draw the metrics.csv at `csv_path` into `png_path`, one panel per quantity
    (`curve_panels`). None (nothing written) when the file has no values yet."""
    panels = curve_panels(read_metrics(csv_path), kinds)
    if not panels:
        return None
    last = max(x for p in panels for xs, _ in p.series.values() for x in xs)
    fig, axes = _figure(title, len(panels), 5.0, 3.4)
    for ax, p in zip(axes, panels):
        for label, (xs, ys) in sorted(p.series.items(), key=lambda kv: kv[0] != TRAIN_ROWS):
            text = f"{label}: {ys[-1]:.4g}"  # the legend gives the last value
            style = {"lw": 1.2} if label == TRAIN_ROWS else {"marker": "o", "ms": 4, "lw": 1}
            ax.plot(xs, ys, label=text, color=COLORS.get(label), **style)
        ax.set_xlim(0, max(last, 1) * 1.03)  # every panel spans the run's steps
        values = [v for _, ys in p.series.values() for v in ys]
        if p.kind == "objective" and min(values) > 0 and max(values) / min(values) >= 100:
            ax.set_yscale("log")  # a loss falling by decades
        ax.set_xlabel("step")
        ax.set_ylabel(p.kind)
        ax.grid(True, alpha=0.3)
        if p.kind == "learning rate":  # one series: the last value in the title
            ax.set_title(f"{p.name}: {values[-1]:.4g} at the end")
        else:
            ax.set_title(p.name)
            ax.legend(fontsize="small")
    return _save(fig, Path(png_path))


# --------------------------------------------------------------------------- samples

class PanelKind(Enum):
    IMAGES = "images"
    POINTS = "points"
    SERIES = "series"


@dataclass
class Panel:
    """One panel of a sample picture: its kind and the named values it draws."""

    kind: PanelKind
    values: dict[str, np.ndarray] = field(default_factory=dict)


def _kind(v: np.ndarray) -> PanelKind | None:
    if v.dtype.kind != "f" or v.size == 0:
        return None
    if v.ndim == 3 or (v.ndim == 4 and v.shape[1] in (1, 3)):
        return PanelKind.IMAGES
    if v.ndim == 2 and v.shape[1] == 2:
        return PanelKind.POINTS
    if v.ndim == 1 and v.shape[0] >= 2:
        return PanelKind.SERIES
    return None


def sample_panels(values: Mapping[str, Any]) -> list[Panel]:
    """The panels of the picture of a procedure's results (see the module docstring)."""
    panels: list[Panel] = []
    series: dict[int, Panel] = {}  # by length: series of one length share a panel
    for name, value in values.items():
        v = np.asarray(value)
        kind = _kind(v)
        if kind is PanelKind.SERIES:
            series.setdefault(v.shape[0], Panel(kind)).values[name] = v
        elif kind is not None:
            panels.append(Panel(kind, {name: v}))
    return panels or list(series.values())


def _mosaic(v: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The first MAX_IMAGES images of `v` tiled in a near-square grid, one pixel apart
    (NaN between them), and the value range to show."""
    imgs = v[:MAX_IMAGES].astype(np.float64)
    if imgs.ndim == 4:
        imgs = imgs.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        if imgs.shape[-1] == 1:
            imgs = imgs[..., 0]
    finite = imgs[np.isfinite(imgs)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    n, h, w = imgs.shape[:3]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, *imgs.shape[3:]), np.nan)
    for k in range(n):
        r, c = divmod(k, cols)
        grid[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = imgs[k]
    if grid.ndim == 3:  # RGB: scale to [0, 1], white between the images
        grid = np.nan_to_num((grid - lo) / max(hi - lo, 1e-12), nan=1.0).clip(0, 1)
    return grid, lo, hi


def _draw_images(fig: Any, ax: Any, name: str, v: np.ndarray) -> None:
    import matplotlib

    grid, lo, hi = _mosaic(v)
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    im = ax.imshow(grid, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    if grid.ndim == 2:
        fig.colorbar(im, ax=ax, shrink=0.8)
    shown = min(len(v), MAX_IMAGES)
    more = f", the first {shown}" if shown < len(v) else ""
    ax.set_title(f"{name}: {len(v)} images {list(v.shape[1:])}{more}")
    ax.set_axis_off()


def _draw_points(ax: Any, name: str, v: np.ndarray, data: np.ndarray | None) -> None:
    if data is not None:
        if len(data) > MAX_BACKGROUND:
            data = data[np.random.default_rng(0).choice(len(data), MAX_BACKGROUND,
                                                        replace=False)]
        ax.scatter(data[:, 0], data[:, 1], s=4, c="lightgrey", label="training data",
                   rasterized=True)
    alpha = 0.6 if len(v) > 200 else 0.9
    ax.scatter(v[:, 0], v[:, 1], s=6, c="tab:red", alpha=alpha, label=f"{name} ({len(v)})",
               rasterized=True)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"{name}: {len(v)} points" + (" over the training data"
                                               if data is not None else ""))
    ax.set_xlabel(f"{name}[:, 0]")
    ax.set_ylabel(f"{name}[:, 1]")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", markerscale=2)


def _draw_series(ax: Any, values: Mapping[str, np.ndarray]) -> None:
    for name, v in values.items():
        ax.plot(np.arange(len(v)), v, lw=1.2, label=name)
    length = len(next(iter(values.values())))
    ax.set_title(", ".join(values) + f" ({length} steps)")
    ax.set_xlabel("index")
    ax.set_ylabel("value")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def _training_points(data: Any) -> np.ndarray | None:
    """The training data's 2-D float points, the background of sampled points."""
    if data is None:
        return None
    v = np.asarray(data)
    return v if v.ndim == 2 and v.shape[1] == 2 and v.dtype.kind == "f" else None


def draw_samples(values: Mapping[str, Any], png_path: str | os.PathLike[str], title: str,
                 training_points: Callable[[], Any] | None = None) -> Path | None:
    """Draw the results of a procedure into `png_path`; `training_points()` gives the
    training data drawn behind sampled points (asked only when there are points). None
    (nothing written) when no value has a picture."""
    panels = sample_panels(values)
    if not panels:
        return None
    data = None
    if training_points is not None and any(p.kind is PanelKind.POINTS for p in panels):
        data = _training_points(training_points())
    wide = any(p.kind is PanelKind.SERIES for p in panels)
    fig, axes = _figure(title, len(panels), 9.0 if wide else 5.5, 4.0 if wide else 5.0,
                        max_cols=1 if wide else 3)
    for ax, p in zip(axes, panels):
        if p.kind is PanelKind.IMAGES:
            (name, v), = p.values.items()
            _draw_images(fig, ax, name, v)
        elif p.kind is PanelKind.POINTS:
            (name, v), = p.values.items()
            _draw_points(ax, name, v, data)
        else:
            _draw_series(ax, p.values)
    return _save(fig, Path(png_path))
