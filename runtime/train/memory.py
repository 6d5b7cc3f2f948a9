"""Will a run fit: the bytes it needs, estimated before anything is allocated and checked
against the memory the process can get, so that a spec with `--set H=100000000` is one
sentence and not NumPy's allocation error (or the kernel's OOM killer) after minutes of
drawing weights.

The estimate (`MemoryEstimate`) has four parts: the parameters, the state buffers (optimizer
moments, running statistics), the values the plans of a step hold (every graph a run plans
— each training phase and the forward graph of evaluation — at the run's batch size, from the
node types with the symbolic dims bound, `graph_value_bytes`; the first training step peaks
higher, `FIRST_STEP_FACTOR`) and the data set. The limit (`memory_limit`) is the memory
available now (MemAvailable, or what the cgroup still allows) plus the data already loaded, or
`--max-memory SIZE` (`parse_size`: `8G`, `512M`, `1.5GiB`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtime.errors import UserError
from runtime.ir import Graph, IRError, TensorType, TupleType
from runtime.program import Program
from runtime.train.runner import Runner, TrainError

if TYPE_CHECKING:  # runtime.train.data reads available_bytes from here
    from runtime.train.data import Dataset

__all__ = ["MemoryEstimate", "ResourceError", "available_bytes", "batch_feeds",
           "body_peak_bytes", "check_fits", "data_bytes", "estimate_run", "estimate_training",
           "graph_value_bytes", "human_bytes", "memory_limit", "parse_size", "step_part",
           "variable_bytes"]

VARIABLE_OPS = ("param", "state")  # counted as parameters and state, not as step values
# A NumPy training plan's first step holds every value of its plain step while it builds the
# buffer-reusing step (runtime.plan.buffers), which checks each out= kernel on new buffers:
# the run's peak, measured (tracemalloc) at 3.6 times the plain values for mlp_digits with
# H = 8000 (7.0 GiB for 2.0 GiB) and 4.9 times for a 64-1500-1500-10 MLP at batch 64
# (241 MiB for 49 MiB).
FIRST_STEP_FACTOR = 5.0
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


class ResourceError(UserError):
    """The run needs more memory than the machine (or `--max-memory`) allows."""


def available_bytes(meminfo: str | Path = "/proc/meminfo",
                    cgroup: str | Path = "/sys/fs/cgroup") -> int | None:
    """Memory the process can still get: MemAvailable on Linux, lowered to what a cgroup
    (v2 `memory.max` - `memory.current`, or v1 `memory.limit_in_bytes` - `memory.usage_in_bytes`)
    still allows; None when unknown."""
    have: int | None = None
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        have = None
    if have is None:
        try:
            have = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            have = None
    room = _cgroup_room(Path(cgroup))
    if room is not None:
        have = room if have is None else min(have, room)
    return have


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _cgroup_room(root: Path) -> int | None:
    for limit, usage in (("memory.max", "memory.current"),
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        cap = _read_int(root / limit)
        if cap is not None and cap < 2**60:  # v1 writes a huge number for "no limit"
            used = _read_int(root / usage) or 0
            return max(0, cap - used)
    return None


def parse_size(text: str) -> int:
    """Bytes of a size such as `8G`, `512M`, `1.5GiB`, `2e9` (binary units: K = 1024);
    ValueError for anything else."""
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(?:([kKmMgGtT])(?:i?[bB])?|[bB])?",
                     text.strip())
    if m is None:
        raise ValueError(f"cannot read the size {text!r}; give a number of bytes with a unit, "
                         "such as 8G or 512M")
    value = float(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"the size {text!r} must be at least one byte")
    return int(value)


def human_bytes(n: float) -> str:
    """`1.5 GiB`, `12 MiB`, `640 KiB`, `200 B`."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if unit in ("TiB", "GiB") else f"{n / size:.0f} {unit}"
    return f"{int(n)} B"


def _type_bytes(t: TensorType | TupleType, dims: Mapping[str, int]) -> int:
    items = t.items if isinstance(t, TupleType) else (t,)
    total = 0
    for item in items:
        try:
            shape = item.concrete(dims)
        except IRError:  # a dim no input binds: its size is not known before running
            continue
        total += math.prod(shape) * item.np_dtype().itemsize
    return total


def variable_bytes(types: Iterable[TensorType]) -> int:
    """Bytes of host arrays for variables of these (static) types."""
    return sum(_type_bytes(t, {}) for t in types)


def _order(graph: Graph) -> list[int]:
    ends = [*graph.outputs.values(), *graph.updates.values()]
    return graph.topo_order(ends) if ends else graph.topo_order()


def graph_value_bytes(graph: Graph, dims: Mapping[str, int]) -> tuple[int, int]:
    """(values, temporaries) of a plan of `graph` with `dims` bound. `values`: every value its
    plain step makes (a plan keeps each in its slot until the next step overwrites it;
    variables excluded, they are counted once for the run). `temporaries`: the most a node
    with a body (a loop, a fused kernel) holds while it runs, `body_peak_bytes`."""
    values = temporaries = 0
    for nid in _order(graph):
        node = graph[nid]
        if node.op not in VARIABLE_OPS:
            values += _type_bytes(node.type, dims)
            temporaries = max([temporaries, *(body_peak_bytes(r, dims) for r in node.regions)])
    return values, temporaries


def body_peak_bytes(body: Graph, dims: Mapping[str, int]) -> int:
    """The most bytes of a body's values alive at once: a value lives from its node to its
    last use (the body's results to the end), and nested bodies add their own peak."""
    order = _order(body)
    last = {nid: len(order) for nid in [*body.outputs.values(), *body.updates.values()]}
    for k, nid in enumerate(order):
        for i in body[nid].inputs:
            last[i] = max(last.get(i, k), k)
    frees: dict[int, list[int]] = {}
    for nid, k in last.items():
        frees.setdefault(k, []).append(nid)
    live = peak = 0
    size: dict[int, int] = {}
    for k, nid in enumerate(order):
        node = body[nid]
        if node.op != "arg":  # the body's inputs are the enclosing plan's values
            size[nid] = _type_bytes(node.type, dims)
            inner = max((body_peak_bytes(r, dims) for r in node.regions), default=0)
            peak = max(peak, live + size[nid] + inner)
            live += size[nid]
        for done in frees.get(k, ()):
            live -= size.pop(done, 0)
    return peak


@dataclass
class MemoryEstimate:
    """Bytes a run needs, by part (in the order printed), and the batch of the step values."""

    parts: dict[str, int] = field(default_factory=dict)
    batch: int | None = None

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def breakdown(self) -> str:
        """`parameters 1.5 GiB + state 3.0 GiB + ... = 6.1 GiB`."""
        shown = [f"{name} {human_bytes(b)}" for name, b in self.parts.items() if b]
        return " + ".join(shown) + f" = {human_bytes(self.total)}"


def memory_limit(max_memory: int | None, resident: int = 0) -> tuple[int | None, str]:
    """The bytes a run may use and where that number comes from: `--max-memory`, else the
    memory available now plus `resident` (what the process already holds and the estimate
    counts, such as the loaded data set)."""
    if max_memory is not None:
        return max_memory, "the limit given by --max-memory"
    have = available_bytes()
    if have is None:
        return None, ""
    return have + resident, "the memory available on this machine"


def step_part(batch: int | None) -> str:
    """The name of the step-values part of an estimate."""
    return f"step values at batch {batch}" if batch is not None else "step values"


def check_fits(estimate: MemoryEstimate, what: str, max_memory: int | None = None,
               resident: int = 0) -> None:
    """ResourceError when the estimate of `what` exceeds `memory_limit`, with the breakdown."""
    limit, source = memory_limit(max_memory, resident)
    if limit is None or estimate.total <= limit:
        return
    advice = "make the model smaller" + (" or the batch smaller" if estimate.batch else "")
    if max_memory is None:
        advice += ", or give --max-memory SIZE (such as 8G) if you know it fits"
    raise ResourceError(
        f"{what} needs about {human_bytes(estimate.total)} ({estimate.breakdown()}), more than "
        f"the {human_bytes(limit)} of {source}; {advice}")


def data_bytes(splits: Iterable[Mapping[str, np.ndarray] | None]) -> int:
    """Bytes of the arrays of the data splits given."""
    return sum(int(np.asarray(a).nbytes) for split in splits if split for a in split.values())


def _stand_in(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A read-only array of `shape` that allocates nothing (binds dims like a fed array)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def batch_feeds(arrays: Mapping[str, np.ndarray] | None, rows: int | None,
                defaults: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stand-ins for a step's fed arrays: the data fields with `rows` rows (all when None),
    the input defaults, `step` and `epoch`."""
    feeds = {k: _stand_in(np.shape(v), np.asarray(v).dtype) for k, v in defaults.items()}
    for k, v in (arrays or {}).items():
        n = v.shape[0] if rows is None else min(rows, v.shape[0])
        feeds[k] = _stand_in((n, *v.shape[1:]), v.dtype)
    feeds["step"] = feeds["epoch"] = _stand_in((), np.dtype(np.float64))
    return feeds


def estimate_run(variables: Iterable[tuple[str, TensorType]],
                 graphs: Iterable[tuple[Graph, Mapping[str, int], bool]], batch: int | None,
                 data: int) -> MemoryEstimate:
    """The estimate of a run: `variables` as (role, type); the graphs it plans, each with its
    bound dims and whether it is a NumPy training plan (whose first step also builds the
    buffer-reusing step, `FIRST_STEP_FACTOR`); the batch size of the step values; the bytes
    of its data."""
    est = MemoryEstimate(batch=batch)
    by_role = {"param": 0, "state": 0}
    for role, t in variables:
        by_role[role] = by_role.get(role, 0) + variable_bytes([t])
    est.parts["parameters"] = by_role.pop("param")
    est.parts["optimizer and other state"] = sum(by_role.values())
    step = 0.0
    for g, dims, reused in graphs:
        values, temporaries = graph_value_bytes(g, dims)
        step += values * (FIRST_STEP_FACTOR if reused else 1) + temporaries
    est.parts[step_part(batch)] = int(step)
    est.parts["data"] = data
    return est


def estimate_training(program: Program, phases: Iterable[Runner], evaluation: Runner,
                      arrays: Mapping[str, np.ndarray] | None,
                      defaults: Mapping[str, np.ndarray], dataset: Dataset | None,
                      batch: int | None, reused: bool) -> MemoryEstimate:
    """The estimate of a training run: its variables; the values of each phase's step on
    `batch` rows of the training `arrays` (with the input `defaults`) and of an evaluation
    (at `batch` rows, else the largest split); its data. `reused`: the training plans build a
    buffer-reusing step (NumPy)."""
    splits = (dataset.train, dataset.valid, dataset.test) if dataset is not None else ()
    eval_rows = batch or max((len(next(iter(a.values()))) for a in splits if a), default=None)
    graphs = []
    for r, n, train in [*((r, batch, True) for r in phases), (evaluation, eval_rows, False)]:
        try:
            dims = r.dims(batch_feeds(arrays, n, defaults))
        except TrainError:  # an input nothing binds: reported where the graph is run
            continue
        graphs.append((r.graph, dims, train and reused))
    return estimate_run(((v.role, v.type) for v in program.variables.values()), graphs,
                        batch if arrays is not None else None, data_bytes(splits))
