"""Run-time loops: a 1000-iteration body, forward and backward, against hand-written NumPy.

    python bench/loop.py [--steps 1000] [--batch 64] [--width 128] [--repeat 5] [--checkpoint K]

The body is h_{t+1} = tanh(h_t W + x_t); the loss sums every h_t. dslrun runs the `loop` node
(its body compiled once into a region plan, its gradient a reverse loop over saved carries)
after the pass pipeline; the reference is the same math as two plain NumPy loops (forward
storing each h, backward through them). Both run in this process, one BLAS thread, and the
ratio dslrun / NumPy is what carries over between machines. Also: compile time at T = 10
and T = 10000 (it must not grow with T), and the peak memory of a forward-only loop (it must
not grow with T either: nothing is stacked when no stacked value is used).

`--checkpoint K` adds the step with `checkpoint = K` (segments of K iterations recomputed in
the backward pass, `runtime.ops.control.checkpointed`): step time and peak memory of the
forward+backward step with and without it, for the loss over every h_t (the stacked series is
an output, O(T) either way) and for a loss on the last h only. Peak memory is what the step
allocates, by tracemalloc (NumPy reports its allocations to it), in MiB; float32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from runtime.autodiff import gradients  # noqa: E402
from runtime.backends import get_backend  # noqa: E402
from runtime.ir import Graph, TensorType  # noqa: E402
from runtime.ops import Builder, Val  # noqa: E402
from runtime.ops.control import loop, new_region, set_results  # noqa: E402
from runtime.passes import run_pipeline  # noqa: E402
from runtime.plan import Plan  # noqa: E402


def build(steps: int, batch: int, width: int, grad: bool, stack: bool = True,
          checkpoint: int | None = None) -> Graph:
    f32 = lambda *s: TensorType("f32", s)  # noqa: E731
    g = Graph()
    b = Builder(g)
    x = Val(b, g.add("input", (), {}, f32(steps, batch, width), role="input", name="x"))
    h0 = Val(b, g.add("input", (), {}, f32(batch, width), role="input", name="h0"))
    w = Val(b, g.add("param", (), {}, f32(width, width), role="param", name="W"))
    body, rb, (_t, h, xt, wa) = new_region(
        [TensorType("i64", ()), f32(batch, width), f32(batch, width), f32(width, width)])
    hn = rb.emit("tanh", h @ wa + xt)
    set_results(body, [hn, hn])
    (last,), (hs,), _ = loop(b, body, [h0], [x], [w], length=steps, checkpoint=checkpoint)
    g.outputs["loss"] = b.emit("sum", hs if stack else last).id
    if grad:
        (gw,) = gradients(Builder(g, role="grad"), g.outputs["loss"], [w.id])
        g.outputs["gW"] = gw.id
    return run_pipeline(g)[0]


def numpy_step(x: np.ndarray, h0: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    hs = np.empty((len(x) + 1, *h0.shape), h0.dtype)
    hs[0] = h0
    for t in range(len(x)):
        hs[t + 1] = np.tanh(hs[t] @ w + x[t])
    loss = float(hs[1:].sum())
    gw = np.zeros_like(w)
    gh = np.zeros_like(h0)
    for t in range(len(x) - 1, -1, -1):
        gz = (gh + 1.0) * (1.0 - hs[t + 1] * hs[t + 1])
        gw += hs[t].T @ gz
        gh = gz @ w.T
    return loss, gw


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def peak_mib(fn) -> float:
    """The most memory `fn()` holds at once (allocations traced while it runs), in MiB."""
    fn()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def checkpoint_rows(a: argparse.Namespace, x: np.ndarray, h0: np.ndarray, w: np.ndarray
                    ) -> dict[str, float]:
    """Step time and peak memory of forward+backward without and with `checkpoint = K`, for
    the loss over every h_t and over the last h; gradients checked against each other. The
    two plans of a loss are timed in alternation (a burst of load hits both), medians."""
    out: dict[str, float] = {}
    feeds = {"x": x, "h0": h0}
    for loss in ("all", "last"):
        runs = {}
        for k in (None, a.checkpoint):
            g = build(a.steps, a.batch, a.width, grad=True, stack=loss == "all", checkpoint=k)
            plan = Plan(g, {}, get_backend("numpy"), {"W": w}, ["loss", "gW"],
                        apply_updates=False)
            runs[f"{loss}_{'plain' if k is None else f'K{k}'}"] = lambda p=plan: p.run(feeds)
        grads = [fn()[1] for fn in runs.values()]
        scale = float(np.abs(grads[0]).max())  # float32, sums in another order: rounding
        assert float(np.abs(grads[0] - grads[1]).max()) <= 1e-4 * scale
        times: dict[str, list[float]] = {tag: [] for tag in runs}
        for _ in range(a.repeat):
            for tag, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[tag].append((time.perf_counter() - t0) * 1000)
        for tag, fn in runs.items():
            out[f"{tag}_ms"] = round(float(np.median(times[tag])), 2)
            out[f"{tag}_peak_MiB"] = round(peak_mib(fn), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--checkpoint", type=int, default=None, metavar="K",
                    help="also time the step with checkpoint = K, and the peak memory")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.steps, a.batch, a.width)).astype(np.float32)
    h0 = np.zeros((a.batch, a.width), np.float32)
    w = (rng.standard_normal((a.width, a.width)) / np.sqrt(a.width)).astype(np.float32)
    g = build(a.steps, a.batch, a.width, grad=True)
    plan = Plan(g, {}, get_backend("numpy"), {"W": w}, ["loss", "gW"], apply_updates=False)
    feeds = {"x": x, "h0": h0}
    loss, gw = plan.run(feeds)
    ref_loss, ref_gw = numpy_step(x, h0, w)
    assert np.allclose(loss, ref_loss, rtol=1e-4) and np.allclose(gw, ref_gw, rtol=1e-3,
                                                                   atol=1e-3)
    ours = median_ms(lambda: plan.run(feeds), a.repeat)
    ref = median_ms(lambda: numpy_step(x, h0, w), a.repeat)
    compile_ms = {}
    for steps in (10, 10000):
        t0 = time.perf_counter()
        build(steps, a.batch, a.width, grad=True)
        compile_ms[steps] = (time.perf_counter() - t0) * 1000
    peaks = {}
    for steps in (100, 1000):
        xs = rng.standard_normal((steps, a.batch, a.width)).astype(np.float32)
        fwd = build(steps, a.batch, a.width, grad=False, stack=False)
        p = Plan(fwd, {}, get_backend("numpy"), {"W": w}, ["loss"], apply_updates=False)
        p.run({"x": xs, "h0": h0})
        tracemalloc.start()
        p.run({"x": xs, "h0": h0})
        peaks[steps] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    extra = checkpoint_rows(a, x, h0, w) if a.checkpoint else {}
    print(json.dumps({
        "steps": a.steps, "batch": a.batch, "width": a.width,
        "dslrun_ms": round(ours, 2), "numpy_ms": round(ref, 2), "ratio": round(ours / ref, 3),
        "compile_ms_T10": round(compile_ms[10], 2),
        "compile_ms_T10000": round(compile_ms[10000], 2),
        "forward_peak_MiB_T100": round(peaks[100], 3),
        "forward_peak_MiB_T1000": round(peaks[1000], 3),
        **({"checkpoint": a.checkpoint, **extra} if a.checkpoint else {}),
    }, indent=2))


if __name__ == "__main__":
    main()
