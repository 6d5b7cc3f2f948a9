"""Primitive ops. Importing this package registers every op in `REGISTRY`."""

from runtime.ops import elementwise, linalg, nn, random, reduce, shape_ops  # noqa: F401
from runtime.ops.builder import Builder, Val
from runtime.ops.registry import REGISTRY, OpDef, ShapeError, register, to_text

__all__ = ["REGISTRY", "Builder", "OpDef", "ShapeError", "Val", "register", "to_text"]
from runtime.ops import control, conv, fused, norm, pool  # noqa: E402, F401
