"""ONNX interchange: export a spec's evaluation-mode forward graph (`export`), import an ONNX
graph as a spec (`importer`), and an `onnx.backend` backed by dslrun's runtime (`backend`).

The `onnx` package (and `onnxruntime` for checking) come from the `onnx` extra:
`pip install -e '.[onnx]'`. Nothing here is imported by the rest of dslrun unless asked for.
"""

from __future__ import annotations

from runtime.errors import UserError

OPSET = 18  # the ONNX opset every exported model declares and the importer reads


class OnnxError(UserError):
    """An ONNX export or import that cannot be done: names the op (and the spec or node)."""


def require_onnx() -> None:
    """Raise OnnxError saying how to install the extra when the `onnx` package is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise OnnxError("ONNX support needs the onnx package: pip install -e '.[onnx]' "
                        "(or pip install 'dslrun[onnx]')") from None
