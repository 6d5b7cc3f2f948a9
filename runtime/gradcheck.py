"""Finite-difference checks of a graph's symbolic gradients (and Hessian-vector products).

For each parameter p and a random unit direction u, the directional derivative ⟨∇f, u⟩ is
compared with the central difference (f(p + εu) − f(p − εu)) / 2ε in float64 (Theano's
verify_grad scheme). With order 2, H·v built symbolically (the gradient of ⟨∇f, v⟩) is compared
with (∇f(p + εv) − ∇f(p − εv)) / 2ε. Random ops see the same draws in every evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from runtime.autodiff import gradients, or_zeros
from runtime.backends import get_backend
from runtime.ir import Graph, TensorType
from runtime.ops import Builder, Val
from runtime.plan import Plan


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    num = float(np.linalg.norm(np.ravel(a - b)))
    den = max(float(np.linalg.norm(np.ravel(a))), float(np.linalg.norm(np.ravel(b))), 1e-7)
    return num / den


def check_gradients(graph: Graph, objective: str, params: list[str],
                    variables: Mapping[str, np.ndarray], feeds: Mapping[str, Any],
                    dims: Mapping[str, int], order: int = 1, seed: int = 0,
                    eps: float = 1e-6, directions: int = 3) -> dict[str, float]:
    """Worst relative error per parameter (first order, or of H·v when order == 2)."""
    g = graph.copy()
    g.updates = {}
    b = Builder(g, role="grad")
    obj = g.outputs[objective]
    pid = {g[i].name: i for i in g.variables() if g[i].name in params}
    names = [p for p in params if p in pid]
    grads = gradients(b, obj, [pid[n] for n in names])
    names = [n for n, gr in zip(names, grads) if gr is not None]
    grads = [gr for gr in grads if gr is not None]
    g.outputs = {"__f": obj}
    for n, gr in zip(names, grads):
        g.outputs[f"__g:{n}"] = gr.id
    if order == 2:
        total: Val | None = None
        for n, gr in zip(names, grads):
            t = g[pid[n]].type
            v = Val(b, g.add("input", (), {}, TensorType(t.dtype, t.shape), role="input",
                             name=f"__v:{n}"))
            s = b.emit("sum", gr * v)
            total = s if total is None else total + s
        if total is not None:
            hv = gradients(b, total.id, [pid[n] for n in names])
            for n, h in zip(names, hv):
                g.outputs[f"__hv:{n}"] = or_zeros(b, h, pid[n]).id
    backend = get_backend("numpy")
    vars64 = {k: np.array(v, dtype=np.float64) for k, v in variables.items()}
    outs = list(g.outputs)
    plan = Plan(g, dims, backend, vars64, outputs=outs, apply_updates=False)
    rng = np.random.default_rng(seed + 1)
    base_feeds = dict(feeds)

    def run(extra: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        plan.rng = backend.make_rng(seed)
        res = plan.run({**base_feeds, **(extra or {})})
        return dict(zip(outs, (np.array(r, dtype=np.float64) for r in res)))

    directions_v = {n: rng.standard_normal(np.shape(vars64[n])) for n in names}
    for n in names:
        directions_v[n] /= max(np.linalg.norm(directions_v[n]), 1e-12)
    vfeeds = {f"__v:{n}": directions_v[n] for n in names} if order == 2 else {}
    base = run() if order == 1 else {}
    worst: dict[str, float] = {}
    for n in names:
        p0 = vars64[n].copy()
        errs = []
        if order == 1:
            for _ in range(directions):
                u = rng.standard_normal(p0.shape)
                u /= max(np.linalg.norm(u), 1e-12)
                vars64[n][...] = p0 + eps * u
                fp = run()["__f"]
                vars64[n][...] = p0 - eps * u
                fm = run()["__f"]
                vars64[n][...] = p0
                fd = (fp - fm) / (2 * eps)
                an = float(np.sum(base[f"__g:{n}"] * u))
                errs.append(abs(fd - an) / max(abs(fd), abs(an), 1e-5))  # floor: FD noise
        else:
            v = directions_v[n]
            vars64[n][...] = p0 + eps * v
            gp = run(vfeeds)
            vars64[n][...] = p0 - eps * v
            gm = run(vfeeds)
            vars64[n][...] = p0
            fd = {m: (gp[f"__g:{m}"] - gm[f"__g:{m}"]) / (2 * eps) for m in names}
            # H v restricted to the direction v of parameter n alone: compare the columns
            # through the mixed product with every parameter's gradient
            hv_n = _hv_single(run, names, n, v, vfeeds)
            errs.append(max(_rel(hv_n[m], fd[m]) for m in names))
        worst[n] = max(errs)
    return worst


def _hv_single(run: Any, names: list[str], n: str, v: np.ndarray,
               vfeeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """H·w for the direction w that is v on parameter n and zero elsewhere."""
    feeds = {k: np.zeros_like(a) for k, a in vfeeds.items()}
    feeds[f"__v:{n}"] = v
    out = run(feeds)
    return {m: out[f"__hv:{m}"] for m in names}
