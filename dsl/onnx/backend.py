"""An `onnx.backend` backed by dslrun: a model is imported as a spec (`dsl.onnx.importer`),
compiled to a dslrun graph and run by dslrun's plan and kernels, so the ONNX backend node tests
(`onnx.backend.test`) check the import table and the registry's kernels against ONNX's
reference outputs.

Inputs that must be compile-time constants (a Reshape's shape fed as a graph input, see
`import_ops.STATIC_INPUTS`) are fixed from the values given to `run`: the spec is compiled per
distinct value of those, once per other call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from dsl.onnx import OnnxError
from dsl.onnx.import_ops import STATIC_INPUTS
from dsl.onnx.importer import import_model, set_initial


def static_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs that feed an input position the import table needs at compile time."""
    out = set()
    for node in model.graph.node:
        for k in STATIC_INPUTS.get(node.op_type, ()):
            if k < len(node.input) and node.input[k]:
                out.add(node.input[k])
    return out


def node_model(node: onnx.NodeProto, arrays: list[np.ndarray],
               outputs_info: Any = None) -> onnx.ModelProto:
    """The one-node model `run_node` runs: inputs typed from `arrays` (one per input the node
    names; an omitted optional input, "", has none), outputs from ONNX shape inference (else
    from `outputs_info`, (numpy dtype, shape) per output), as the checker in `prepare`
    requires."""
    graph_inputs = [helper.make_tensor_value_info(
        name, numpy_helper.from_array(a).data_type, list(a.shape))
        for name, a in zip([n for n in node.input if n], arrays)]
    outs = [o for o in node.output if o]
    model = helper.make_model(helper.make_graph(
        [node], "node", graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outs]))
    try:  # not strict: an output it cannot type is left untyped
        inferred = shape_inference.infer_shapes(model).graph.output
    except shape_inference.InferenceError:  # a domain or op it does not know
        inferred = []
    typed = {vi.name: vi for vi in inferred if vi.type.tensor_type.elem_type}
    given = dict(zip(outs, outputs_info or ()))
    for out in model.graph.output:
        if out.name in typed:
            out.CopyFrom(typed[out.name])
        elif out.name in given:
            dtype, shape = given[out.name]
            out.CopyFrom(helper.make_tensor_value_info(
                out.name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape)))
        else:
            raise OnnxError(f"run_node: ONNX shape inference gives no type for output "
                            f"'{out.name}' of the {node.op_type} node (an op it does not know, "
                            "or inputs it rejects); give outputs_info")
    return model


class DslBackendRep(BackendRep):
    """A prepared model: compiled on the first `run` (and again when fixed inputs change)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        inits = {t.name for t in model.graph.initializer}
        self.input_names = [vi.name for vi in model.graph.input if vi.name not in inits]
        self.fixed = static_inputs(model) & set(self.input_names)
        self._compiled: dict[tuple, Any] = {}

    def _program(self, feeds: dict[str, np.ndarray]) -> Any:
        from dsl.api import compile as compile_text

        fixed = {k: np.asarray(feeds[k]) for k in sorted(self.fixed)}
        key = tuple((k, a.dtype.str, a.shape, a.tobytes()) for k, a in fixed.items())
        if key not in self._compiled:
            imported = import_model(self.model, "onnx_node", "<backend test>",
                                    static=fixed)
            model = compile_text(imported.text)
            set_initial(model, imported.weights)
            self._compiled[key] = (imported, model)
        return self._compiled[key]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        if isinstance(inputs, dict):
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            feeds = {k: np.asarray(v) for k, v in zip(self.input_names, inputs)}
        imported, model = self._program(feeds)
        outs = list(imported.outputs.values())
        given = {imported.inputs[k]: v for k, v in feeds.items() if k in imported.inputs}
        values = model.trainer.predict(given, outputs=outs)
        return tuple(values[imported.outputs[o.name]] for o in self.model.graph.output)


class DslBackend(Backend):
    """dslrun as an ONNX backend (CPU: NumPy)."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU",
                **kwargs: Any) -> DslBackendRep:
        super().prepare(model, device, **kwargs)  # the checker
        return DslBackendRep(model)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Any = None, **kwargs: Any) -> tuple[Any, ...]:
        """One node with these inputs (numpy arrays, in the node's input order): one per
        input, or one per input that is not omitted ("" in `node.input`)."""
        given, names = list(inputs), list(node.input)
        present = [n for n in names if n]
        if len(given) == len(names):  # a placeholder for each omitted input: dropped
            given = [a for n, a in zip(names, given) if n]
        elif len(given) != len(present):
            raise OnnxError(f"run_node: the {node.op_type} node takes {len(present)} inputs "
                            f"({', '.join(present) or 'none'}), {len(given)} were given")
        arrays = [np.asarray(v) for v in given]
        return cls.prepare(node_model(node, arrays, outputs_info), device).run(arrays)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = DslBackend.prepare
run_model = DslBackend.run_model
run_node = DslBackend.run_node
supports_device = DslBackend.supports_device
