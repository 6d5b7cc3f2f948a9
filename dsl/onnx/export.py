"""Export: a compiled spec's evaluation-mode forward graph (after the optimization passes) as
an ONNX model, its variables (trained or initial) as initializers.

What is exported: the spec's `output`s; without any, the prediction feeding its first metric
(else first objective): the logits an `argmax`, `softmax_cross_entropy` or `sigmoid_bce` reads,
or the metric's value when none does. Graph inputs are the spec inputs those need; symbolic dims
become named ONNX dims. Each node goes through `dsl.onnx.ops.EXPORT_TABLE`; a fused elementwise
node is written as its body and a run-time loop as an ONNX Loop (`dsl.onnx.control`). An op
with no row fails with the reason (`UNSUPPORTED`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from dsl.compiler import Compiled, compile_file, shipped_specs
from dsl.errors import DslError
from dsl.onnx import OPSET, OnnxError
from dsl.onnx.control import emit_loop, loop_unsupported
from dsl.onnx.emit import Emitter, value_info
from dsl.onnx.ops import EXPORT_TABLE, STRUCTURAL, UNSUPPORTED
from runtime.errors import UserError
from runtime.ir import LEAF_OPS, Graph, Node, TensorType
from runtime.ops import REGISTRY
from runtime.ops.fused import FUSED

IR_VERSION = 10  # ONNX 1.16's IR, which onnxruntime 1.18 and later read
# ops whose first input is the prediction a metric or loss judges (logits, scores)
PREDICTION_HEADS = ("argmax", "softmax_cross_entropy", "sigmoid_bce")


@dataclass
class Export:
    """An exported model and what it holds."""

    model: onnx.ModelProto
    outputs: dict[str, TensorType]
    inputs: dict[str, TensorType]
    chosen: str  # why these outputs: "the spec's outputs", "the logits feeding metric 'acc'"
    weights: str  # "checkpoint PATH" or "initial weights (no checkpoint)"
    nodes: dict[str, int] = field(default_factory=dict)  # output -> forward-graph node


def _resolve_head(g: Graph, nid: int) -> int | None:
    """The prediction input of the first head op the value `nid` depends on (searching fused
    bodies, whose `arg` k is the fused node's input k)."""
    for i in g.topo_order([nid]):
        n = g[i]
        if n.op in PREDICTION_HEADS:
            return n.inputs[0]
        if n.op == FUSED:
            body = n.regions[0]
            for j in body.topo_order(body.results()):
                m = body[j]
                if m.op in PREDICTION_HEADS and body[m.inputs[0]].op == "arg":
                    return n.inputs[body[m.inputs[0]].attrs["index"]]
    return None


def choose_outputs(compiled: Compiled, names: list[str] | None = None
                   ) -> tuple[dict[str, int], str]:
    """The outputs to export (name -> forward node) and why those."""
    p = compiled.program
    g = p.forward
    if names:
        missing = [n for n in names if n not in g.outputs]
        if missing:
            from dsl.errors import did_you_mean

            raise OnnxError(f"export: the forward graph has no output '{missing[0]}'"
                            + did_you_mean(missing[0], list(g.outputs)))
        return {n: g.outputs[n] for n in names}, "the outputs asked for"
    if p.outputs:
        return {n: g.outputs[n] for n in p.outputs if n in g.outputs}, "the spec's outputs"
    for kind, pool in (("metric", p.metrics), ("objective", p.objectives)):
        for name in pool:
            if name not in g.outputs:
                continue
            head = _resolve_head(g, g.outputs[name])
            if head is not None:
                return {"logits": head}, f"the logits feeding {kind} '{name}'"
            return {name: g.outputs[name]}, f"the value of {kind} '{name}'"
    raise OnnxError(f"export: {p.name} has no output, metric or objective to export")


def unsupported(g: Graph, targets: list[int]) -> list[tuple[str, str]]:
    """(op, reason) of each op the export table cannot write, in the part of `g` (and of the
    fused and loop bodies) the targets need, in the order they are first met."""
    found: dict[str, str] = {}

    def walk(graph: Graph, ids: list[int]) -> None:
        for i in graph.topo_order(ids):
            n = graph[i]
            why = loop_unsupported(n) if n.op == "loop" else None
            if why:
                found.setdefault("loop", why)
            elif n.op in (FUSED, "loop"):
                walk(n.regions[0], n.regions[0].results())
            elif n.op not in EXPORT_TABLE and n.op not in (*STRUCTURAL, *LEAF_OPS):
                where = f" (first at {n.loc})" if n.loc is not None else ""
                found.setdefault(n.op, UNSUPPORTED.get(n.op, "no ONNX mapping") + where)
    walk(g, targets)
    return list(found.items())


def _const_value(g: Graph, i: int) -> np.ndarray:
    n = g[i]
    v = g.consts.get(i)
    return np.asarray(v if v is not None else n.attrs["value"], dtype=n.type.np_dtype())


def _emit_graph(em: Emitter, g: Graph, ids: list[int], names: dict[int, Any],
                values: Mapping[str, np.ndarray]) -> None:
    """Emit the nodes `ids` need (leaves already in `names` are used as they are)."""
    for i in g.topo_order(ids):
        if i in names:
            continue
        n = g[i]
        if n.op in ("param", "state"):
            arr = np.asarray(values[n.name], dtype=n.type.np_dtype())
            names[i] = em.typed(em.initializer(arr, n.name), n.type.dtype, n.type.shape)
        elif n.op == "const":
            names[i] = em.typed(em.const(_const_value(g, i), n.type.dtype), n.type.dtype,
                                n.type.shape)
        elif n.op == FUSED:  # its body, with arg k bound to input k
            body = n.regions[0]
            inner = {a: names[n.inputs[body[a].attrs["index"]]] for a in body.args()}
            _emit_graph(em, body, body.results(), inner, values)
            names[i] = inner[body.results()[0]]
        elif n.op == "loop":  # its results, read by `item`
            names[i] = emit_loop(em, n, [names[j] for j in n.inputs], values, _emit_graph)
        elif n.op == "item":
            names[i] = em.typed(names[n.inputs[0]][n.attrs["index"]], n.type.dtype,
                                n.type.shape)
        else:
            names[i] = _emit_node(em, n, [names[j] for j in n.inputs])


def _emit_node(em: Emitter, n: Node, ins: list[str]) -> str:
    row = EXPORT_TABLE.get(n.op)
    if row is None:
        reason = UNSUPPORTED.get(n.op, "no ONNX mapping")
        raise OnnxError(f"export: op '{n.op}' cannot be written in ONNX: {reason}")
    full = replace(n, attrs={**REGISTRY[n.op].attrs, **n.attrs})
    return em.typed(row(em, full, ins), n.type.dtype, n.type.shape)


def export_graph(g: Graph, outputs: Mapping[str, int], values: Mapping[str, np.ndarray],
                 name: str, doc: str = "") -> onnx.ModelProto:
    """The ONNX model computing `outputs` (name -> node of `g`) with `values` as the
    initializers of the params and state."""
    bad = unsupported(g, list(outputs.values()))
    if bad:
        raise OnnxError("export: cannot be written in ONNX: "
                        + "; ".join(f"op '{op}': {reason}" for op, reason in bad))
    em = Emitter()
    for out in outputs:
        em.fresh(out)  # output names are kept as given
    order = g.topo_order(list(outputs.values()))
    names: dict[int, str] = {}
    inputs = []
    for i in order:
        n = g[i]
        if n.op == "input":
            names[i] = em.typed(em.fresh(n.name), n.type.dtype, n.type.shape)
            inputs.append(value_info(names[i], n.type.dtype, n.type.shape))
            for axis, d in enumerate(n.type.shape):
                if isinstance(d, str):
                    em.dim_sources.setdefault(d, (names[i], axis))
    _emit_graph(em, g, list(outputs.values()), names, values)
    outs = []
    for out, nid in outputs.items():
        t = g[nid].type
        em.nodes.append(helper.make_node("Identity", [names[nid]], [out]))
        outs.append(value_info(out, t.dtype, t.shape))
    graph = helper.make_graph(em.nodes, name, inputs, outs, em.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="dslrun", ir_version=IR_VERSION, doc_string=doc)
    onnx.checker.check_model(model, full_check=True)
    return model


def _values(compiled: Compiled, checkpoint: str | None) -> tuple[dict[str, np.ndarray], str]:
    p = compiled.program
    if checkpoint is None:
        return {k: v.value for k, v in p.variables.items()}, "initial weights (no checkpoint)"
    from dsl.api import Model
    from runtime.train.runs import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    model = Model(compiled)
    model.load(path)
    return model.trainer.get_variables(), f"checkpoint {path}"


def export_compiled(compiled: Compiled, checkpoint: str | None = None,
                    outputs: list[str] | None = None) -> Export:
    """Export a compiled spec (see the module docstring)."""
    chosen_ids, why = choose_outputs(compiled, outputs)
    values, weights = _values(compiled, checkpoint)
    g = compiled.program.forward
    doc = f"{compiled.program.name} exported by dslrun ({why}; {weights})"
    model = export_graph(g, chosen_ids, values, compiled.program.name, doc)
    ins = {n.name: n.type for i in g.topo_order(list(chosen_ids.values()))
           if (n := g[i]).op == "input"}
    outs = {k: g[v].type for k, v in chosen_ids.items()}
    return Export(model, outs, ins, why, weights, dict(chosen_ids))


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write `model` to `path` (the directory must exist)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise OnnxError(f"cannot write {path}: the directory {path.parent} does not exist")
    onnx.save_model(model, str(path))
    return path


def coverage(names: list[str] | None = None) -> list[tuple[str, str]]:
    """(spec, "ok: ..." or "cannot: op 'x': reason") for each shipped spec (or the given ones)
    as `dslrun export --list` prints them."""
    rows = []
    if names is None:  # each file once, bench ones as bench/NAME
        root = Path(str(resources.files("specs")))
        names = [n for n, p in shipped_specs().items()
                 if p.relative_to(root).with_suffix("").as_posix() == n]
    for spec in names:
        try:
            c = compile_file(spec)
            ids, why = choose_outputs(c)
        except (DslError, UserError) as e:
            rows.append((spec, f"cannot: {str(e).splitlines()[0].removeprefix('export: ')}"))
            continue
        bad = unsupported(c.program.forward, list(ids.values()))
        if bad:
            rows.append((spec, "cannot: " + "; ".join(f"op '{op}': {why}" for op, why in bad)))
        else:
            rows.append((spec, f"ok: {', '.join(ids)} ({why})"))
    return rows


def describe(result: Export, path: Any) -> str:
    """The summary `dslrun export` prints."""
    ins = ", ".join(f"{k}: {t}" for k, t in result.inputs.items()) or "none"
    outs = ", ".join(f"{k}: {t}" for k, t in result.outputs.items())
    return (f"wrote {path}: opset {OPSET}\n  inputs:  {ins}\n  outputs: {outs} ({result.chosen})"
            f"\n  weights: {result.weights}")


def reference_feeds(compiled: Compiled, inputs: Mapping[str, TensorType], rows: int = 16
                    ) -> tuple[dict[str, np.ndarray], str]:
    """A batch for the exported inputs: the first `rows` of the data's test split (else train),
    and the inputs' defaults; and a description of it."""
    from dsl.api import Model

    p = compiled.program
    feeds: dict[str, np.ndarray] = {}
    where = "the input defaults"
    ds = Model(compiled).dataset
    if ds is not None:
        split_name = "test" if ds.split("test") is not None else "train"
        split = ds.split(split_name)
        for k in inputs:
            if k in split:
                feeds[k] = np.asarray(split[k][:rows])
        where = f"{min(rows, len(next(iter(split.values()))))} rows of the {split_name} split"
    for k in inputs:
        if k not in feeds and k in p.input_defaults:
            feeds[k] = np.asarray(p.input_defaults[k])
    missing = [k for k in inputs if k not in feeds]
    if missing:
        raise OnnxError(f"export: no data for input '{missing[0]}' to verify with")
    return {k: v.astype(inputs[k].np_dtype()) for k, v in feeds.items()}, where


def dslrun_outputs(compiled: Compiled, outputs: Mapping[str, int], feeds: Mapping[str, Any],
                   checkpoint: str | None = None) -> dict[str, np.ndarray]:
    """The values dslrun computes for forward nodes `outputs` (name -> node id)."""
    from dsl.api import Model
    from runtime.ir import OutputKind
    from runtime.train.runs import resolve_checkpoint

    model = Model(compiled)
    if checkpoint is not None:
        model.load(resolve_checkpoint(checkpoint))
    g = compiled.program.forward.copy()
    g.outputs = dict(outputs)
    g.output_kinds = {k: OutputKind.OUTPUT for k in outputs}
    return model.trainer.run_graph(g, feeds, compiled.program.train.seed, "the exported graph")


def run_onnx(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs onnxruntime computes for `model` on `feeds` (by output name)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxError("checking an export needs onnxruntime: pip install -e '.[onnx]'") \
            from None
    try:
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        wanted = {i.name for i in sess.get_inputs()}
        return dict(zip(names, sess.run(None, {k: v for k, v in feeds.items() if k in wanted})))
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors share no public base class
        raise OnnxError(f"onnxruntime cannot run the exported model: {e}") from None


def difference(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> float:
    """The largest |ours - theirs| / (1 + |ours|) over every output (0 for equal integers)."""
    worst = 0.0
    for k, v in ours.items():
        a = np.asarray(v, dtype=np.float64)
        b = np.asarray(theirs[k], dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        both_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
        err = np.where(both_inf, 0.0, np.abs(a - b) / (1.0 + np.abs(a)))
        worst = max(worst, float(np.max(np.nan_to_num(err, nan=np.inf), initial=0.0)))
    return worst


def verify(compiled: Compiled, result: Export, checkpoint: str | None = None
           ) -> tuple[float, str]:
    """Run the export with onnxruntime and the forward graph with dslrun on a batch of the
    spec's data: the largest difference (`difference`) and which batch."""
    feeds, where = reference_feeds(compiled, result.inputs)
    ours = dslrun_outputs(compiled, result.nodes, feeds, checkpoint)
    return difference(ours, run_onnx(result.model, feeds)), where
