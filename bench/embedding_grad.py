"""Candidates for the gradient of a gather (`take_grad`, the embedding table's gradient).

    python bench/embedding_grad.py [--vocab 100 10000] [--dim 128] [--ids 64x64]
                                   [--dtype float32 float64] [--repeat 7]

The gradient of `E[ids]` with respect to the table E: [V, D] sums the rows of the output
cotangent g: [N, D] (N = ids.size) that share an id. Each candidate computes it without
`np.add.at`, is checked against `np.add.at` (the baseline, also timed) and timed as the best
of `--repeat` runs of a loop long enough to last ~0.1 s (the best, not the median: the
machines have 2 cores and a concurrent process makes BLAS calls 10-80x slower for a while):

* `sort_reduceat`: a stable argsort of the ids, then `np.add.reduceat` over the runs of equal
  ids and one scatter of the run sums (one row per distinct id);
* `bincount_cols`: `np.bincount(ids, weights=g[:, j], minlength=V)` for each column j;
* `bincount_flat`: one `np.bincount` over the flattened (id, column) pairs;
* `onehot_gemm`: one_hot(ids).T @ g, a [V, N] @ [N, D] matrix product.

`runtime take_grad` is the kernel the runtime uses (`runtime.ops.shape_ops._take_grad_fwd`):
the one-hot matmul up to `ONE_HOT_MAX_SIZE` rows; else, for float32 with fewer rows than ids,
the sort and segment sums (bincount sums in float64, so it first makes a float64 copy of g,
a large temporary whose page faults cost more than the sort: in a training step 1.8 against
4.0 ms, vocabulary 100); else the flat bincount.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runtime.ops.shape_ops import _take_grad_fwd  # noqa: E402

Kernel = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def add_at(g: np.ndarray, idx: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size,) + g.shape[1:], dtype=g.dtype)
    np.add.at(out, idx, g)
    return out


def sort_reduceat(g: np.ndarray, idx: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size,) + g.shape[1:], dtype=g.dtype)
    if idx.size == 0:
        return out
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    out[s[starts]] = np.add.reduceat(g[order], starts, axis=0)
    return out


def bincount_cols(g: np.ndarray, idx: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((size, g.shape[1]), dtype=g.dtype)
    for j in range(g.shape[1]):
        out[:, j] = np.bincount(idx, weights=g[:, j], minlength=size)
    return out


def bincount_flat(g: np.ndarray, idx: np.ndarray, size: int) -> np.ndarray:
    d = g.shape[1]
    flat = (idx[:, None] * d + np.arange(d)).ravel()
    return np.bincount(flat, weights=g.ravel(), minlength=size * d).reshape(size, d).astype(
        g.dtype, copy=False)


def onehot_gemm(g: np.ndarray, idx: np.ndarray, size: int) -> np.ndarray:
    onehot = (np.arange(size)[:, None] == idx[None, :]).astype(g.dtype)
    return onehot @ g


def runtime_kernel(g: np.ndarray, idx: np.ndarray, size: int) -> np.ndarray:
    """The kernel of `take_grad` as the runtime runs it (the choice made from this bench)."""
    return _take_grad_fwd(np, g, idx, axis=0, size=size)


CANDIDATES: dict[str, Kernel] = {
    "add_at (baseline)": add_at,
    "sort_reduceat": sort_reduceat,
    "bincount_cols": bincount_cols,
    "bincount_flat": bincount_flat,
    "onehot_gemm": onehot_gemm,
    "runtime take_grad": runtime_kernel,
}


def time_it(fn: Callable[[], object], repeat: int) -> float:
    """The best seconds per call over `repeat` loops of ~0.1 s each."""
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    n = max(1, int(0.1 / once))
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n)
    return min(runs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[100, 10000])
    ap.add_argument("--dim", type=int, nargs="+", default=[128])
    ap.add_argument("--ids", nargs="+", default=["64x64"], help="shape of the ids, e.g. 64x64")
    ap.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--max-onehot", type=float, default=2e8,
                    help="skip onehot_gemm above this many one-hot bytes")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}; best ms per call of {args.repeat} runs")
    for dt in args.dtype:
        for v in args.vocab:
            for d in args.dim:
                for shape in args.ids:
                    ids_shape = tuple(int(s) for s in shape.split("x"))
                    idx = rng.integers(0, v, ids_shape).reshape(-1)
                    g = rng.standard_normal((idx.size, d)).astype(dt)
                    want = add_at(g, idx, v)
                    print(f"\n{dt} vocab={v} dim={d} ids={shape} ({idx.size} ids, "
                          f"{len(np.unique(idx))} distinct)")
                    for name, fn in CANDIDATES.items():
                        if fn is onehot_gemm and v * idx.size * g.itemsize > args.max_onehot:
                            print(f"  {name:20s}  skipped (one-hot of {v}x{idx.size})")
                            continue
                        got = fn(g, idx, v)
                        tol = 1e-4 if dt == "float32" else 1e-10
                        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
                        assert got.dtype == g.dtype, name
                        ms = 1e3 * time_it(functools.partial(fn, g, idx, v), args.repeat)
                        print(f"  {name:20s} {ms:9.3f}")


if __name__ == "__main__":
    main()
