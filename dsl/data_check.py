"""What `dslrun check` knows about the data before anything trains.

`check_data(program, dataset)` compares the data set's fields with the declared inputs they
feed (dtype kind, rank, every static dimension, the dims they share), the class labels with
the class count of the logits they are compared with (`softmax_cross_entropy`, `one_hot`) and
the indices of a gather (`take`: embedding ids, `x[t]`) with the size of the axis they index,
so that a classifier whose last layer is narrower than the number of classes is a spec error,
not an IndexError or a silently wrong loss in the middle of training. The messages point at the
`input` declaration and name the data set's shapes, with a note at the `data` line.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsl.ast import Span
from dsl.errors import DataErr
from runtime.ir import Graph, TensorType, at_loc
from runtime.program import Program

__all__ = ["check_data"]

_RUN_INPUTS = ("step", "epoch")  # fed by the trainer, never by the data


def _shapes(arrays: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items())


def check_data(program: Program, dataset: Any, given: bool = False) -> None:
    """Raise DataErr when `dataset` (a `runtime.train.data.Dataset`) cannot feed `program`'s
    inputs. `given`: the arrays came from the Python API, not from the spec's `data` line."""
    spans: dict[str, Span] = program.meta.get("input_spans", {})
    data_span: Span | None = program.meta.get("data_span")
    label = "the data given" if given else dataset.info.get("name", "the data set")
    splits = {"train": dataset.train, "test": dataset.test}
    notes = () if given or data_span is None else (
        f"the data set is declared at {data_span.file}:{data_span.line}:{data_span.col}",)
    for split, arrays in splits.items():
        if not arrays:
            continue
        for field, arr in arrays.items():
            t = program.inputs.get(field)
            if t is None or field in _RUN_INPUTS:
                continue
            problem = _mismatch(t, np.asarray(arr))
            if problem:
                raise DataErr(f"input '{field}' is {t}, but {problem} in the {split} split of "
                              f"{label} ({_shapes(arrays)})", spans.get(field), notes)
    for graph in (program.forward, *(ph.graph for ph in program.phases)):
        _check_labels(graph, dataset, label, spans, notes)


def _mismatch(t: TensorType, arr: np.ndarray) -> str:
    """Why `arr` (all samples: the batch dim is free) cannot feed an input of type `t`."""
    if arr.ndim != t.rank:
        return f"its field has shape {tuple(arr.shape)} ({arr.ndim} axes, not {t.rank})"
    for k, (d, s) in enumerate(zip(t.shape, arr.shape)):
        if isinstance(d, int) and d != s:
            return f"axis {k} of its field has size {s}, not {d}"
    if not t.is_float and arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            return "its field holds non-integer values"
    if t.dtype == "bool" and arr.dtype.kind not in "biu":
        return f"its field is {arr.dtype}"
    return ""


def _label_input(graph: Graph, nid: int) -> str | None:
    """The data input a label operand comes straight from (through casts), or None."""
    node = graph[nid]
    while node.op == "cast":
        node = graph[node.inputs[0]]
    return node.name if node.op == "input" else None


def _check_labels(graph: Graph, dataset: Any, label: str, spans: dict[str, Span],
                  notes: tuple[str, ...]) -> None:
    for node in graph.nodes.values():
        if node.op == "softmax_cross_entropy":
            logits, labels = node.inputs
            classes = graph[logits].type.shape[-1]
            what = f"the logits they are compared with are {graph[logits].type}"
        elif node.op == "one_hot":
            labels = node.inputs[0]
            classes = node.attrs.get("depth")
            what = f"one_hot has depth {classes}"
        elif node.op == "take":
            table, labels = node.inputs
            t = graph[table].type
            axis = node.attrs.get("axis", 0) % t.rank
            classes = t.shape[axis]
            name = graph[table].name
            what = (f"they index axis {axis} of "
                    + (f"'{name}' {t}" if graph[table].op in ("param", "state") else f"{t}"))
        else:
            continue
        field = _label_input(graph, labels)
        if field is None or not isinstance(classes, int):
            continue  # (a gather along a symbolic axis, `take(x, idx)` of a batch, has no size)
        kind = "indices" if node.op == "take" else "labels"
        valid = (f"{classes} entries, indices 0 to {classes - 1}" if node.op == "take"
                 else f"{classes} classes, labels 0 to {classes - 1}")
        for split, arrays in (("train", dataset.train), ("test", dataset.test)):
            if not arrays or field not in arrays or arrays[field].size == 0:
                continue
            y = np.asarray(arrays[field])
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= classes:
                where = at_loc(node.loc)
                raise DataErr(
                    f"the {kind} '{field}' of {label} go from {lo} to {hi} ({split} split), "
                    f"but {what}{where}: {valid}", spans.get(field), notes)


def missing_input(program: Program, e: Any) -> DataErr:
    """A `runtime.train.runner.MissingInput` at the input's declaration, with the two fixes."""
    span = program.meta.get("input_spans", {}).get(e.name)
    return DataErr(f"{e}; add a data line whose set has the field '{e.name}', or give the "
                   f"input a default value (input {e.name}: ... = value)", span)
