"""dslrun's language: parser, AST, errors, lowering, prelude, the Python API and the CLI.

    import dsl
    model = dsl.load("mlp_digits")      # or dsl.compile(spec_text)
    model.fit(epochs=5)
    print(model.evaluate())

The API is imported on first use, so `dsl.parser` and the CLI start without the runtime.
"""

from typing import Any

__all__ = ["DslError", "Error", "Model", "compile", "from_onnx", "load"]


def __getattr__(name: str) -> Any:
    if name in ("Model", "compile", "load"):
        from dsl import api

        return getattr(api, name)
    if name == "from_onnx":  # the onnx extra: an ONNX model as a spec, with its weights
        from dsl.onnx import require_onnx

        require_onnx()
        from dsl.onnx.importer import from_onnx

        return from_onnx
    if name == "DslError":
        from dsl.errors import DslError

        return DslError
    if name == "Error":  # the base of DslError and of every run-time error a user can cause
        from runtime.errors import UserError

        return UserError
    raise AttributeError(f"module 'dsl' has no attribute {name!r}")
