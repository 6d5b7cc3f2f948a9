"""Finite-difference checks of a graph's symbolic gradients (and Hessian-vector products).

For each parameter p and a random unit direction u, the directional derivative ⟨∇f, u⟩ is
compared with the central difference (f(p + εu) − f(p − εu)) / 2ε in float64 (Theano's
verify_grad scheme). With order 2, H·v built symbolically (the gradient of ⟨∇f, v⟩) is compared
with (∇f(p + εv) − ∇f(p − εv)) / 2ε. Random ops see the same draws in every evaluation.

Kinks. A probe whose segment [p − εu, p + εu] crosses a kink (relu at 0, a tie in a max-pool
window, a comparison that switches a `where`) measures no derivative. Every evaluation also
computes the piece each piecewise op is on (`OpDef.branch`); a probe that finds a piece
different at p − εu, p or p + εu is drawn again, with a new direction, from the point moved by
a random nudge δ ≫ ε (all checked parameters, by `nudge`·(1 + rms p), ×10 per retry). A probe
still crossing after `retries` nudges is skipped and reported with the ops it crossed; it is
not an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.autodiff import gradients, or_zeros
from runtime.backends import get_backend
from runtime.ir import Graph, Role, TensorType, concrete_attrs
from runtime.ops import REGISTRY, Builder, Val
from runtime.plan import Plan

Result = dict[str, np.ndarray]


@dataclass(frozen=True)
class ParamCheck:
    """The check of one parameter: the worst relative error over the probes that crossed no
    kink (None when every probe did one), how many probes were drawn again from a nudged point
    (`moved`) or skipped, and the ops ("relu at x.dl:7:13") that made them."""

    name: str
    error: float | None
    probes: int
    moved: int = 0
    skipped: int = 0
    kinks: tuple[str, ...] = ()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    num = float(np.linalg.norm(np.ravel(a - b)))
    den = max(float(np.linalg.norm(np.ravel(a))), float(np.linalg.norm(np.ravel(b))), 1e-7)
    return num / den


def _unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    u = rng.standard_normal(shape)
    return u / max(float(np.linalg.norm(u)), 1e-12)


def check_gradients(graph: Graph, objective: str, params: list[str],
                    variables: Mapping[str, np.ndarray], feeds: Mapping[str, Any],
                    dims: Mapping[str, int], order: int = 1, seed: int = 0,
                    eps: float = 1e-6, directions: int = 3) -> dict[str, float]:
    """Worst relative error per parameter (first order, or of H·v when order == 2); probes at
    kinks are left out (NaN when every probe of a parameter was at one)."""
    checks = gradient_report(graph, objective, params, variables, feeds, dims, order=order,
                             seed=seed, eps=eps, directions=directions)
    return {c.name: math.nan if c.error is None else c.error for c in checks}


def gradient_report(graph: Graph, objective: str, params: list[str],
                    variables: Mapping[str, np.ndarray], feeds: Mapping[str, Any],
                    dims: Mapping[str, int], order: int = 1, seed: int = 0,
                    eps: float = 1e-6, directions: int = 3, retries: int = 3,
                    nudge: float = 1e-4) -> list[ParamCheck]:
    """One `ParamCheck` per parameter with a gradient, in the order of `params`."""
    g = graph.copy()
    g.updates = {}
    b = Builder(g, role=Role.GRAD)
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
            v = Val(b, g.add("input", (), {}, TensorType(t.dtype, t.shape), role=Role.INPUT,
                             name=f"__v:{n}"))
            s = b.emit("sum", gr * v)
            total = s if total is None else total + s
        if total is not None:
            hv = gradients(b, total.id, [pid[n] for n in names])
            for n, h in zip(names, hv):
                g.outputs[f"__hv:{n}"] = or_zeros(b, h, pid[n]).id
    # the piecewise ops the probed values go through, their inputs returned as outputs
    probed = [obj] if order == 1 else [gr.id for gr in grads]
    pieced = [i for i in g.topo_order(probed)
              if (op := REGISTRY.get(g[i].op)) is not None and op.branch is not None]
    for i in pieced:
        for j in g[i].inputs:
            g.outputs[f"__x:{j}"] = j
    backend = get_backend("numpy")
    vars64 = {k: np.array(v, dtype=np.float64) for k, v in variables.items()}
    outs = list(g.outputs)
    plan = Plan(g, dims, backend, vars64, outputs=outs, apply_updates=False)
    rng = np.random.default_rng(seed + 1)
    retry_rng = np.random.default_rng(seed + 2)  # retries leave the first draws unchanged
    base_feeds = dict(feeds)

    def run(extra: Mapping[str, Any] | None = None) -> Result:
        plan.rng = backend.make_rng(seed)
        res = plan.run({**base_feeds, **(extra or {})})
        return {k: np.array(r) if k.startswith("__x:") else np.array(r, dtype=np.float64)
                for k, r in zip(outs, res)}

    crossed = _crossing_finder(g, pieced, dims)
    p0 = {n: vars64[n].copy() for n in names}

    def move_to(k: int) -> None:
        """The point of attempt k: the given values, then ever larger random nudges."""
        for n in names:
            vars64[n][...] = p0[n]
            if k:
                scale = nudge * 10 ** (k - 1) * (1 + float(np.sqrt(np.mean(p0[n] ** 2))))
                vars64[n] += scale * retry_rng.standard_normal(p0[n].shape)

    def probe(n: str, u: np.ndarray, extra: Mapping[str, Any] | None = None,
              ) -> tuple[Result, Result]:
        """The outputs at the current point moved by ±εu along parameter n."""
        p = vars64[n].copy()
        vars64[n][...] = p + eps * u
        plus = run(extra)
        vars64[n][...] = p - eps * u
        minus = run(extra)
        vars64[n][...] = p
        return plus, minus

    directions_v = {n: _unit(rng, np.shape(vars64[n])) for n in names}
    vfeeds = {f"__v:{n}": directions_v[n] for n in names} if order == 2 else {}
    base0 = run() if order == 1 else {}
    checks = []
    for n in names:
        errs: list[float] = []
        kinks: list[str] = []
        moved = skipped = 0
        for _ in range(directions if order == 1 else 1):
            u = _unit(rng, p0[n].shape) if order == 1 else directions_v[n]
            for k in range(retries + 1):
                move_to(k)
                if k:
                    u = _unit(retry_rng, p0[n].shape)
                if order == 1:
                    base = run() if k else base0
                    plus, minus = probe(n, u)
                    fd = (plus["__f"] - minus["__f"]) / (2 * eps)
                    an = float(np.sum(base[f"__g:{n}"] * u))
                    err = abs(fd - an) / max(abs(fd), abs(an), 1e-5)  # floor: FD noise
                else:
                    # H·w for w = u on parameter n and zero elsewhere, against the central
                    # difference of every parameter's gradient along w
                    w = {m: np.zeros_like(a) for m, a in vfeeds.items()}
                    w[f"__v:{n}"] = u
                    base = run(w)
                    plus, minus = probe(n, u, w)
                    err = max(_rel(base[f"__hv:{m}"],
                                   (plus[f"__g:{m}"] - minus[f"__g:{m}"]) / (2 * eps))
                              for m in names)
                hit = crossed(base, plus, minus)
                kinks += [h for h in hit if h not in kinks]
                if not hit:
                    errs.append(err)
                    moved += k > 0
                    break
            else:
                skipped += 1
        move_to(0)
        checks.append(ParamCheck(n, max(errs) if errs else None, len(errs) + skipped,
                                 moved, skipped, tuple(kinks)))
    return checks


def _crossing_finder(g: Graph, pieced: list[int], dims: Mapping[str, int],
                     ) -> Callable[..., list[str]]:
    """A function of several evaluations' results naming the piecewise ops ("relu at
    x.dl:7:13") whose piece differs between them; a gradient node is named by its forward op."""
    rules = []
    for i in pieced:
        n = g[i]
        src = g[n.of] if n.of is not None and n.of in g.nodes else n
        label = f"{src.op} at {src.loc}" if src.loc is not None else src.op
        rules.append((REGISTRY[n.op].branch, n.inputs, concrete_attrs(n.attrs, dims), label))

    def crossed(*results: Result) -> list[str]:
        found: list[str] = []
        for branch, ins, attrs, label in rules:
            if label in found:
                continue
            pieces = [branch(np, *[r[f"__x:{j}"] for j in ins], **attrs) for r in results]
            if pieces[0] is not None and not all(np.array_equal(pieces[0], p)
                                                 for p in pieces[1:]):
                found.append(label)
        return found
    return crossed
