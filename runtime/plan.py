"""Compile a graph into a flat execution plan and run it.

`Plan` binds symbolic dims to sizes, orders the needed nodes once, resolves attributes and
binds each kernel to its backend and attributes, and allocates slots. A step is then one loop
over `(kernel, input slots, output slot)` triples: no graph walking, no shape inference, no
dict lookups. Parameters and state live in persistent buffers that updates overwrite in place.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.backends import Backend
from runtime.ir import LEAF_OPS, Graph, IRError, Loc
from runtime.ops import REGISTRY

SHAPE_ATTRS = ("shape", "size")


class NonFiniteError(Exception):
    """A node produced NaN or Inf (raised by `--nan-check` runs)."""

    def __init__(self, nid: int, op: str, loc: Loc | None, of_op: str | None,
                 of_loc: Loc | None, name: str | None) -> None:
        where = f" at {loc}" if loc else ""
        msg = f"non-finite value produced by node %{nid} ({op}){where}"
        if name:
            msg += f" [{name}]"
        if of_op is not None:
            msg += f"; it is part of the gradient of {of_op}" + (f" at {of_loc}" if of_loc else "")
        super().__init__(msg)
        self.nid, self.op, self.loc = nid, op, loc


@dataclass
class _Instr:
    fn: Any
    ins: tuple[int, ...]
    out: int
    nid: int


def _resolve_attrs(attrs: Mapping[str, Any], dims: Mapping[str, int]) -> dict[str, Any]:
    out = dict(attrs)
    for k in SHAPE_ATTRS:
        v = out.get(k)
        if isinstance(v, str):
            out[k] = dims[v]
        elif isinstance(v, tuple):
            out[k] = tuple(dims[d] if isinstance(d, str) else d for d in v)
    return out


class Plan:
    """One compiled graph for one binding of symbolic dims on one backend.

    `outputs` are the names in `graph.outputs` to return; when `apply_updates` is true the
    graph's updates are computed and written into the variable buffers after the step.
    """

    def __init__(self, graph: Graph, dims: Mapping[str, int], backend: Backend,
                 variables: dict[str, Any], outputs: list[str] | None = None,
                 apply_updates: bool = True, rng: Any = None) -> None:
        self.graph = graph
        self.backend = backend
        self.variables = variables  # name -> persistent backend array (updated in place)
        self.output_names = list(graph.outputs) if outputs is None else list(outputs)
        self.rng = rng
        targets = [graph.outputs[n] for n in self.output_names]
        upd = dict(graph.updates) if apply_updates else {}
        targets += list(upd.values())
        order = graph.topo_order(targets) if targets else []
        slot = {nid: k for k, nid in enumerate(order)}
        self.vals: list[Any] = [None] * len(order)
        self.feed_slots: list[tuple[str, int, tuple, Any]] = []
        self.var_slots: list[tuple[str, int]] = []
        self.instrs: list[_Instr] = []
        xp = backend.xp
        for nid in order:
            n = graph[nid]
            if n.op == "input":
                self.feed_slots.append((n.name, slot[nid], n.type.concrete(dims),
                                        n.type.np_dtype()))
            elif n.op in ("param", "state"):
                if n.name not in variables:
                    raise IRError(f"no value for variable {n.name!r}")
                self.var_slots.append((n.name, slot[nid]))
            elif n.op == "const":
                self.vals[slot[nid]] = backend.asarray(graph.consts[nid],
                                                       dtype=n.type.np_dtype())
            else:
                opdef = REGISTRY[n.op]
                attrs = _resolve_attrs(n.attrs, dims)
                if opdef.random:
                    fn = functools.partial(opdef.forward, xp, self._rng_proxy, **attrs)
                else:
                    special = backend.kernels.get(n.op)
                    fn = functools.partial(special or opdef.forward, xp, **attrs)
                self.instrs.append(_Instr(fn, tuple(slot[i] for i in n.inputs), slot[nid], nid))
        self.out_slots = [slot[graph.outputs[n]] for n in self.output_names]
        self.upd_slots = [(name, slot[nid]) for name, nid in upd.items()]
        leaf_slots = {slot[i] for i in order if graph[i].op in LEAF_OPS}
        self._upd_alias = {s for _, s in self.upd_slots if s in leaf_slots}
        self._steps = [(i.fn, i.ins, i.out) for i in self.instrs]

    @property
    def _rng_proxy(self) -> Any:
        return _RngProxy(self)

    def _load(self, feeds: Mapping[str, Any]) -> None:
        vals = self.vals
        for name, s in self.var_slots:
            vals[s] = self.variables[name]
        for name, s, _shape, dtype in self.feed_slots:
            try:
                v = feeds[name]
            except KeyError:
                raise IRError(f"no value fed for input {name!r}") from None
            vals[s] = self.backend.asarray(v, dtype=dtype)

    def run(self, feeds: Mapping[str, Any], check_finite: bool = False) -> list[Any]:
        """Run one step; returns the outputs in `self.output_names` order."""
        self._load(feeds)
        vals = self.vals
        if check_finite:
            self._run_checked()
        else:
            for fn, ins, out in self._steps:
                vals[out] = fn(*[vals[i] for i in ins])
        results = [vals[s] for s in self.out_slots]
        if self.upd_slots:
            new = [(name, vals[s].copy() if s in self._upd_alias else vals[s])
                   for name, s in self.upd_slots]
            copyto = self.backend.xp.copyto
            for name, v in new:
                copyto(self.variables[name], v)
        return results

    def _run_checked(self) -> None:
        xp = self.backend.xp
        vals = self.vals
        for ins in self.instrs:
            vals[ins.out] = v = ins.fn(*[vals[i] for i in ins.ins])
            if getattr(v, "dtype", None) is not None and v.dtype.kind == "f" and not bool(
                    xp.all(xp.isfinite(v))):
                n = self.graph[ins.nid]
                of = self.graph.nodes.get(n.of) if n.of is not None else None
                raise NonFiniteError(ins.nid, n.op, n.loc, of.op if of else None,
                                     of.loc if of else None, n.name)


class _RngProxy:
    """Forwards to the plan's current generator, so a restored generator takes effect."""

    __slots__ = ("plan",)

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self.plan.rng, name)
