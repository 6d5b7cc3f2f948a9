"""Running one graph of a Program: what its fed arrays bind, and one compiled Plan per binding.

`Machine` is what every plan of a run shares: the program, the backend, the variables (one
backend array per program variable, so an update made by one plan is visible to all) and the
executor's random generator. `Runner` is one graph with fixed outputs and its plans by the
sizes of the symbolic dims; `Inputs` casts fed arrays to the declared input types and holds the
program's input defaults. The training loop (`loop.py`) and evaluation (`evaluation.py`) are
both built on these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.backends import Backend
from runtime.errors import UserError
from runtime.ir import Graph, TensorType, TupleType, attr_symbols
from runtime.plan import Plan
from runtime.program import Program

__all__ = ["TRAINER_INPUTS", "Inputs", "Machine", "MissingInput", "Runner", "TrainError",
           "bind_dims"]

TRAINER_INPUTS = ("step", "epoch")


class TrainError(UserError):
    """A training run cannot proceed (a user-facing sentence)."""


class MissingInput(TrainError):
    """A phase reads input `name`, which no data field and no default value feeds."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


def bind_dims(inputs: Iterable[tuple[str, TensorType]], feeds: Mapping[str, Any],
              label: str) -> dict[str, int]:
    """The symbolic dims bound by the arrays fed to `inputs` (of `label`, for messages);
    TrainError when an input is missing or a shape does not fit its type."""
    dims: dict[str, int] = {}
    where: dict[str, str] = {}
    for name, t in inputs:
        if name not in feeds:
            raise TrainError(f"{label} needs input '{name}' ({t}), but it is neither a "
                             "field of the data nor given a default value")
        shape = tuple(np.shape(feeds[name]))
        if len(shape) != t.rank:
            raise TrainError(f"input '{name}' of {label} has type {t}, but the fed "
                             f"array has shape {shape}")
        for d, s in zip(t.shape, shape):
            if isinstance(d, str):
                if d in dims and dims[d] != s:
                    raise TrainError(f"dimension {d} is {dims[d]} in input '{where[d]}' but "
                                     f"{s} in input '{name}' ({label})")
                dims.setdefault(d, int(s))
                where.setdefault(d, name)
            elif d != s:
                raise TrainError(f"input '{name}' of {label} has type {t}, but the fed "
                                 f"array has shape {shape}")
    return dims


@dataclass
class Machine:
    """What every plan of one run shares."""

    program: Program
    backend: Backend
    variables: dict[str, Any]
    rng: Any


class Runner:
    """One graph with fixed outputs: its inputs, the dims they bind, and its plans by dims."""

    def __init__(self, machine: Machine, graph: Graph, outputs: list[str],
                 apply_updates: bool, label: str) -> None:
        self.machine = machine
        self.graph = graph
        self.outputs = outputs
        self.apply_updates = apply_updates
        self.label = label
        targets = [graph.outputs[n] for n in outputs]
        if apply_updates:
            targets += list(graph.updates.values())
        order = graph.topo_order(targets) if targets else []
        self.inputs: list[tuple[str, TensorType]] = [
            (graph[i].name, graph[i].type) for i in order if graph[i].op == "input"]
        # A dim the graph uses only through a shape (noise sized by shape(x)[0] in a phase
        # that does not read x) is bound by the program input that declares it.
        used = set().union(*(attr_symbols(graph[i].attrs) for i in order))
        for i in order:
            t = graph[i].type
            for item in t.items if isinstance(t, TupleType) else (t,):
                used.update(d for d in item.shape if isinstance(d, str))
        unbound = used.difference(*(t.shape for _, t in self.inputs))
        for name, t in machine.program.inputs.items():
            if unbound.intersection(t.shape) and name not in TRAINER_INPUTS:
                self.inputs.append((name, t))
                unbound.difference_update(t.shape)
        self.keyed = [name for name, _ in self.inputs if name not in TRAINER_INPUTS]
        self.update_names = list(graph.updates) if apply_updates else []
        self.plans: dict[tuple[int, ...], Plan] = {}  # by the sizes of the symbolic dims
        self._backup: dict[str, Any] | None = None
        self._by_shapes: dict[tuple[Any, ...], Plan] = {}  # by the fed shapes, all checked

    def plan(self, feeds: Mapping[str, Any]) -> Plan:
        """The plan for the shapes of `feeds`; shapes not seen before are checked first."""
        try:
            key = tuple([feeds[n].shape for n in self.keyed])
        except (KeyError, AttributeError):  # missing, or not an array: `dims` says what
            key = tuple(np.shape(feeds[n]) if n in feeds else None for n in self.keyed)
        plan = self._by_shapes.get(key)
        if plan is None:
            dims = self.dims(feeds)
            plan = self.plans.get(tuple(dims.values()))
            if plan is None:
                m = self.machine
                plan = Plan(self.graph, dims, m.backend, m.variables, self.outputs,
                            apply_updates=self.apply_updates, rng=m.rng)
                self.plans[tuple(dims.values())] = plan
            self._by_shapes[key] = plan
        return plan

    def backup(self, variables: Mapping[str, Any], xp: Any) -> dict[str, Any]:
        """Copies of the variables this graph updates, in buffers kept from step to step (a
        later phase that diverges restores them)."""
        if self._backup is None:
            self._backup = {n: xp.empty_like(variables[n]) for n in self.update_names}
        for n, buf in self._backup.items():
            xp.copyto(buf, variables[n])
        return self._backup

    def dims(self, feeds: Mapping[str, Any]) -> dict[str, int]:
        return bind_dims(self.inputs, feeds, self.label)


class Inputs:
    """The program's inputs: declared types (for casting fed arrays) and default values."""

    def __init__(self, program: Program, runners: Iterable[Runner]) -> None:
        self.types: dict[str, TensorType] = dict(program.inputs)
        for r in runners:
            for name, tp in r.inputs:
                self.types.setdefault(name, tp)
        self.defaults = {k: self.cast(k, v) for k, v in program.input_defaults.items()
                         if k not in TRAINER_INPUTS}

    def cast(self, name: str, value: Any) -> np.ndarray:
        arr = np.asarray(value)
        t = self.types.get(name)
        if t is None:
            return arr
        return arr.astype(t.np_dtype(), copy=False)  # declared f32 follows the program dtype

    def data_fields(self, arrays: Mapping[str, np.ndarray] | None,
                    runners: Iterable[Runner]) -> dict[str, np.ndarray] | None:
        """The fields of `arrays` the given graphs read (cast once to their input dtypes)."""
        if arrays is None:
            return None
        used = {n for r in runners for n, _ in r.inputs}
        return {k: self.cast(k, v) for k, v in arrays.items()
                if k in used and k not in TRAINER_INPUTS}
