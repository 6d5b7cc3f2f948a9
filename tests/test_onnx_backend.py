"""The ONNX backend node tests (`onnx.backend.test`, pinned by the `onnx` extra) run through
`dsl.onnx.backend.DslBackend`: each test's model is imported as a spec, compiled and run by
dslrun's kernels, and its outputs compared with ONNX's reference outputs.

Only node tests whose nodes all map to dslrun (`IMPORT_TABLE`, plus Constant) are collected;
the CUDA variants and every other category are dropped. `EXCLUDED` lists the collected tests
that are skipped, each pattern with its reason: what dslrun does not have (element types,
3-D windows, ...), rejected by the importer with that reason when run.
"""

from __future__ import annotations

import re
import unittest

import pytest

onnx = pytest.importorskip("onnx", reason="the ONNX backend tests need the onnx extra")

from onnx.backend.test import BackendTest  # noqa: E402

from dsl.onnx.backend import DslBackend  # noqa: E402
from dsl.onnx.import_ops import IMPORT_TABLE  # noqa: E402

MAPPED = set(IMPORT_TABLE) | {"Constant"}

# test-name pattern -> why dslrun skips it
EXCLUDED: dict[str, str] = {
    r"_(u?int8|u?int16|uint32|uint64|string|bfloat16|float8e\w+|u?int4|float4\w*)(_|$)":
        "an element type dslrun has no dtype for (it has f16 f32 f64 i32 i64 bool)",
    r"^test_(cast|castlike)_.*(BFLOAT16|FLOAT8|INT4|UINT4|FLOAT4|STRING|INT2|UINT2)":
        "an element type dslrun has no dtype for",
    r"^test_(cast|castlike)_.*_expanded": "a zero-size tensor (CastLike's 'like' input is "
                                          "f32[0]); dslrun dims are positive",
    r"_empty_set": "a zero-size tensor; dslrun dims are positive",
    r"^test_identity_(sequence|opt)": "sequence and optional values (dslrun has tensors)",
    r"_select_last_index": "ArgMax select_last_index = 1 (dslrun's argmax takes the first)",
    r"^test_(maxpool|averagepool)_(1d|3d)": "1-D and 3-D pooling (dslrun pools 2-D windows)",
    r"^test_(maxpool|averagepool)_2d_ceil": "ceil_mode = 1 (dslrun's windows floor)",
    r"^test_(maxpool|averagepool)_2d_dilations": "dilated pooling",
    r"^test_(maxpool|averagepool)_2d_pads_(cpu|count)": "padding wider than half the window "
                                                        "(dslrun refuses it, as PyTorch)",
    r"^test_maxpool_with_argmax": "MaxPool's second output (the argmax indices)",
    r"^test_layer_normalization": "LayerNormalization's mean and inverse-std outputs "
                                  "(the tests ask for all three)",
    r"^test_batchnorm_.*training_mode": "training-mode BatchNormalization (batch statistics, "
                                        "running-statistics outputs)",
    r"^test_(training_)?dropout_.*mask": "Dropout's mask output",
    r"^test_training_dropout": "training-mode Dropout (random masks)",
    r"^test_gather_negative_indices": "negative indices computed at run time (dslrun's take "
                                      "checks indices are in [0, n))",
    r"^test_reshape_allowzero": "Reshape allowzero = 1 with a zero dim (a zero-size tensor)",
}


class NodeTests(BackendTest):
    """The node tests of the mapped op types only, on the CPU."""

    def _add_model_test(self, model_test, kind: str) -> None:  # noqa: ANN001
        if kind != "Node" or model_test.model is None:
            return
        if {n.op_type for n in model_test.model.graph.node} <= MAPPED:
            super()._add_model_test(model_test, kind)


def _collect() -> dict:
    runner = NodeTests(DslBackend, __name__)
    items = runner._test_items["NodeModel"]
    for name in [n for n in items if n.endswith("_cuda")]:
        del items[name]
    for name, item in items.items():
        for pattern, reason in EXCLUDED.items():
            if re.search(pattern, name):
                item.func = unittest.skip(f"excluded: {reason}")(item.func)
                break
    return runner.test_cases


globals().update(_collect())


def test_run_node_types_its_outputs_for_the_checker() -> None:
    import numpy as np
    from onnx import helper

    from dsl.onnx import OnnxError
    from dsl.onnx.backend import node_model

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    add = helper.make_node("Add", ["a", "b"], ["y"])
    model = node_model(add, [a, a])
    onnx.checker.check_model(model, full_check=True)
    (y,) = model.graph.output
    assert y.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in y.type.tensor_type.shape.dim] == [2, 3]
    (out,) = DslBackend.run_node(add, [a, a])
    np.testing.assert_array_equal(out, a + a)
    # an op shape inference does not know is typed from outputs_info, else refused clearly
    odd = helper.make_node("Mystery", ["a"], ["y"], domain="example.org")
    typed = node_model(odd, [a], outputs_info=[(np.float64, (2, 3))])
    assert typed.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    with pytest.raises(OnnxError, match="no type for output 'y' of the Mystery node"):
        node_model(odd, [a])


def test_run_node_pairs_arrays_with_the_inputs_present() -> None:
    """An omitted optional input ("") takes no array: Clip(x, "", max) clips from above only,
    whether the caller passes a placeholder for the omitted min or not."""
    import numpy as np
    from onnx import helper

    from dsl.onnx import OnnxError

    x = np.array([-3.0, 0.5, 4.0], dtype=np.float32)
    hi = np.array(1.0, dtype=np.float32)
    clip = helper.make_node("Clip", ["x", "", "max"], ["y"])
    for inputs in ([x, hi], [x, None, hi]):
        (out,) = DslBackend.run_node(clip, inputs)
        np.testing.assert_array_equal(out, np.minimum(x, hi))
    with pytest.raises(OnnxError, match="takes 2 inputs"):
        DslBackend.run_node(clip, [x])
