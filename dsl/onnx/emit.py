"""An ONNX graph under construction: nodes, initializers and fresh names, built with
`onnx.helper` / `onnx.numpy_helper`, plus the helpers the export table shares (casts, constants,
run-time shape tensors for symbolic dims).

A symbolic dim such as `B` becomes a named ONNX dim (`dim_param`) on the graph inputs; where an
op needs its value (a reshape to [B, 64]), `dim` reads it once from the shape of an input that
has it (`Shape` + `Gather`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dsl.onnx import OnnxError
from runtime.dtypes import np_dtype
from runtime.ir import Dim

# our dtype names -> ONNX element types
ONNX_TYPES: dict[str, int] = {"f16": TensorProto.FLOAT16, "f32": TensorProto.FLOAT,
                              "f64": TensorProto.DOUBLE, "i32": TensorProto.INT32,
                              "i64": TensorProto.INT64, "bool": TensorProto.BOOL}
DTYPE_OF_ONNX: dict[int, str] = {v: k for k, v in ONNX_TYPES.items()}

INT64_MAX = int(np.iinfo(np.int64).max)
INT64_MIN = int(np.iinfo(np.int64).min)


class Emitter:
    """Collects the nodes and initializers of one ONNX graph."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._taken: set[str] = set()
        self._consts: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self.dim_sources: dict[str, tuple[str, int]] = {}  # symbol -> (input name, axis)
        self._dims: dict[str, str] = {}
        self.dtypes: dict[str, str] = {}  # value name -> our dtype
        self.shapes: dict[str, tuple[Dim, ...]] = {}  # value name -> our shape

    def typed(self, name: str, dtype: str, shape: Sequence[Dim]) -> str:
        """Record the type of value `name`; returns it."""
        self.dtypes[name] = dtype
        self.shapes[name] = tuple(shape)
        return name

    # ---------------------------------------------------------------- names and nodes
    def fresh(self, base: str) -> str:
        """A name not used yet in this graph, derived from `base`."""
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        return name

    def node(self, op_type: str, inputs: Sequence[str], name: str | None = None,
             **attrs: Any) -> str:
        """Append a node with one output; returns the output's name."""
        out = self.fresh(name or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def node_multi(self, op_type: str, inputs: Sequence[str], n_out: int, name: str,
                   **attrs: Any) -> list[str]:
        """Append a node with `n_out` outputs; returns their names."""
        outs = [self.fresh(f"{name}_{k}") for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs

    def child(self) -> Emitter:
        """An emitter for a subgraph (a Loop body): its own node list; names, constants (as
        initializers of the main graph, visible inside) and run-time dims shared with this
        one, so values are never shadowed and dims are read in the main graph."""
        sub = Emitter()
        sub._taken, sub._consts, sub.initializers = self._taken, self._consts, self.initializers
        sub.dtypes, sub.shapes = self.dtypes, self.shapes
        sub.dim = self.dim  # type: ignore[method-assign]
        return sub

    def initializer(self, value: np.ndarray, name: str) -> str:
        """An initializer holding `value` under (a fresh name derived from) `name`."""
        name = self.fresh(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def const(self, value: Any, dtype: str) -> str:
        """A constant of our dtype `dtype` (shared between uses of the same value)."""
        arr = np.asarray(value, dtype=np_dtype(dtype))
        key = (dtype, arr.tobytes(), arr.shape)
        if key not in self._consts:
            self._consts[key] = self.initializer(arr, "c")
        return self._consts[key]

    def ints(self, values: Sequence[int]) -> str:
        """A 1-D int64 constant (axes, pads, shapes)."""
        return self.const(list(values), "i64")

    def cast(self, name: str, src: str, dst: str) -> str:
        """`name` cast from dtype `src` to `dst` (itself when they agree)."""
        if src == dst:
            return name
        return self.node("Cast", [name], to=ONNX_TYPES[dst])

    # ---------------------------------------------------------------- shapes
    def dim(self, d: Dim) -> str:
        """A 1-element int64 tensor holding dim `d` (read at run time when symbolic)."""
        if isinstance(d, int):
            return self.ints([d])
        if d not in self._dims:
            source = self.dim_sources.get(d)
            if source is None:
                raise OnnxError(f"the symbolic dimension {d} is not a dimension of any input")
            inp, axis = source
            shape = self.node("Shape", [inp], name=f"shape_{inp}")
            self._dims[d] = self.node("Gather", [shape, self.ints([axis])], name=f"dim_{d}",
                                      axis=0)
        return self._dims[d]

    def shape(self, dims: Sequence[Dim]) -> str:
        """A 1-D int64 shape tensor for `dims` (symbols read at run time)."""
        if all(isinstance(d, int) for d in dims):
            return self.ints(list(dims))
        return self.node("Concat", [self.dim(d) for d in dims], name="shape", axis=0)


def value_info(name: str, dtype: str, shape: Sequence[Dim]) -> onnx.ValueInfoProto:
    """A graph input or output: element type and dims (a symbol is a named dim)."""
    return helper.make_tensor_value_info(name, ONNX_TYPES[dtype], list(shape))
