"""Numeric test helpers: build small graphs, run them on NumPy, and take finite differences.

- `new_graph()` / `add_input(b, name, dtype, shape)`: a fresh graph and named input leaves.
- `Runner(graph, outputs)`: a compiled `Plan` returning copies of the named outputs as a dict.
- `numeric_grad(f, feeds, wrt)`: central differences of a scalar function of named arrays.
- `assert_grad_close(analytic, numeric, ...)`: relative comparison scaled by the gradient size.
- `rng_for(*keys)`: a generator seeded from a stable hash of `keys` (test-order independent).
- `Row`, `Sampler`, `Joint`, `normal`: one row of an op table (shared by the op and conv tables).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.backends import get_backend
from runtime.ir import Graph, TensorType
from runtime.ops import Builder, Val
from runtime.plan import Plan

BACKEND = get_backend("numpy")


def rng_for(*keys: Any) -> np.random.Generator:
    """A generator whose seed depends only on `keys` (stable across runs and test order)."""
    return np.random.default_rng(zlib.crc32(repr(keys).encode()))


def new_graph() -> tuple[Graph, Builder]:
    g = Graph()
    return g, Builder(g)


def add_input(b: Builder, name: str, dtype: str, shape: tuple) -> Val:
    nid = b.graph.add("input", (), {}, TensorType(dtype, tuple(shape)), role="input", name=name)
    return b.val(nid)


class Runner:
    """Runs the named outputs of a graph; results are copies (safe to keep across runs)."""

    def __init__(self, graph: Graph, outputs: Iterable[str], dims: Mapping[str, int] | None = None,
                 seed: int | None = None) -> None:
        self.outputs = list(outputs)
        rng = BACKEND.make_rng(seed) if seed is not None else None
        self.plan = Plan(graph, dict(dims or {}), BACKEND, {}, outputs=self.outputs, rng=rng)

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        res = self.plan.run({k: np.array(v, copy=True) for k, v in feeds.items()})
        return {n: np.array(r, copy=True) for n, r in zip(self.outputs, res)}


def numeric_grad(f: Callable[[dict[str, np.ndarray]], float], feeds: Mapping[str, np.ndarray],
                 wrt: Iterable[str], eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Central differences of the scalar `f(feeds)` with respect to each array named in `wrt`.

    The step actually taken is read back from the perturbed arrays, so inputs stored in low
    precision (f32) still give the right quotient."""
    base = {k: np.array(v, copy=True) for k, v in feeds.items()}
    out: dict[str, np.ndarray] = {}
    for name in wrt:
        x = base[name]
        grad = np.zeros(x.shape, dtype=np.float64)
        for idx in np.ndindex(x.shape):
            orig = x[idx]
            x[idx] = orig + eps
            hi, fp = float(x[idx]), float(f(base))
            x[idx] = orig - eps
            lo, fm = float(x[idx]), float(f(base))
            x[idx] = orig
            grad[idx] = (fp - fm) / (hi - lo)
        out[name] = grad
    return out


def assert_grad_close(analytic: Any, numeric: Any, rtol: float = 1e-5, label: str = "") -> None:
    """`analytic` (None means zero) equals `numeric` within `rtol`, measured relative to the
    largest entry of the two (at least 1), the usual verify_grad convention."""
    numeric = np.asarray(numeric, dtype=np.float64)
    analytic = (np.zeros_like(numeric) if analytic is None
                else np.asarray(analytic, dtype=np.float64))
    assert analytic.shape == numeric.shape, (
        f"{label}: gradient shape {analytic.shape} != input shape {numeric.shape}")
    scale = max(1.0, float(np.max(np.abs(numeric), initial=0.0)),
                float(np.max(np.abs(analytic), initial=0.0)))
    err = float(np.max(np.abs(analytic - numeric), initial=0.0)) / scale
    assert err <= rtol, (f"{label}: relative gradient error {err:.3g} > {rtol:g}\n"
                         f"analytic:\n{analytic}\nnumeric:\n{numeric}")


# --------------------------------------------------------------------------- op-table rows

Sampler = Callable[[np.random.Generator, tuple], np.ndarray]


@dataclass(frozen=True)
class Joint:
    """Draws all inputs together (e.g. operands that must differ elementwise)."""

    fn: Callable[[np.random.Generator, list[tuple]], list[np.ndarray]]


def normal(scale: float = 1.0) -> Sampler:
    return lambda rng, shape: rng.standard_normal(shape) * scale


NORMAL = normal()


@dataclass(frozen=True)
class Row:
    op: str
    input_shapes: tuple[tuple[int, ...], ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: Sampler | tuple[Sampler, ...] | Joint = NORMAL
    reference: Callable[..., Any] | None = None  # reference(*inputs, **attrs) -> array
    dtypes: tuple[str, ...] | None = None  # per input; default f64
    variant: str = ""  # distinguishes several rows of one op
    nondiff: str | None = None  # why this row has no gradient (op nondiff / VJP gives None)
    novjp: str | None = None  # why the op has no VJP at all (differentiating it must raise)
    stats: tuple[float, float] | None = None  # random ops: expected mean and std
    # ops with regions: regions(input types) -> the regions of the node
    regions: Callable[[list[TensorType]], tuple[Graph, ...]] | None = None
    eps: float = 1e-6
    rtol: float = 1e-5

    @property
    def id(self) -> str:
        return f"{self.op}[{self.variant}]" if self.variant else self.op

    def input_dtypes(self) -> tuple[str, ...]:
        return self.dtypes or ("f64",) * len(self.input_shapes)


def row_params(rows: Iterable[Row]) -> list[Any]:
    import pytest

    return [pytest.param(r, id=r.id) for r in rows]


def sample_inputs(row: Row, key: str = "x") -> dict[str, np.ndarray]:
    """Inputs x0, x1, ... for a row, drawn from its domain with a generator keyed by its id."""
    rng = rng_for(row.id, key)
    shapes = [tuple(s) for s in row.input_shapes]
    if isinstance(row.domain, Joint):
        arrays = row.domain.fn(rng, shapes)
    else:
        samplers = row.domain if isinstance(row.domain, tuple) else (row.domain,) * len(shapes)
        arrays = [s(rng, shape) for s, shape in zip(samplers, shapes, strict=True)]
    return {f"x{i}": np.asarray(a).astype(TensorType(dt, ()).np_dtype())
            for i, (a, dt) in enumerate(zip(arrays, row.input_dtypes(), strict=True))}


def build_row(row: Row) -> tuple[Builder, list[Val], Val]:
    """A new graph with the row's inputs x0, x1, ... and its op applied to them."""
    _, b = new_graph()
    xs = [add_input(b, f"x{i}", dt, shape)
          for i, (dt, shape) in enumerate(zip(row.input_dtypes(), row.input_shapes, strict=True))]
    regions = row.regions([x.type for x in xs]) if row.regions else ()
    return b, xs, b.emit(row.op, *xs, regions=regions, **row.attrs)
