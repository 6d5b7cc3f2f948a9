"""The op registry: one `OpDef` per primitive (shape rule, forward over `xp`, VJP).

Forward kernels take the array module first: `forward(xp, *arrays, **attrs)`; random ops
take `(xp, rng, *arrays, **attrs)`. A VJP receives the output cotangent `g`, the output `out`
and the inputs as `Val`s (graph-building handles, see `runtime.ops.builder`) plus the
attributes, and returns one `Val | None` per input (None: no gradient flows there).

An op defined piecewise (relu, abs, maximum, comparisons, max pooling, ...) names the piece
each element is on: `branch(xp, *arrays, **attrs)` returns an array that changes exactly when
an input crosses a kink or switch (the sign of x for relu, each window's argmax for max
pooling). Finite-difference checks compare it on both sides of a probe (`runtime.gradcheck`).

`to_text` is the canonical graph text: `runtime.ir_text.to_text` with every attribute default
filled in from this registry (which `runtime.ops` fills completely when it is imported).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from runtime import ir_text
from runtime.ir import Graph, TensorType


class ShapeError(Exception):
    """An op's operands do not fit; the message names the op and both shapes."""


@dataclass(frozen=True)
class OpDef:
    name: str
    shape: Callable[..., TensorType]  # shape(attrs, *input_types) -> TensorType
    forward: Callable[..., Any]
    vjp: Callable[..., tuple] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    arity: int | None = None  # None: variadic
    random: bool = False
    elementwise: bool = False
    nondiff: bool = False  # the output carries no gradient (comparisons, argmax, ...)
    # operand positions read as integer indices (labels), whatever their dtype; a kernel
    # computes in the dtype of the others
    index_operands: frozenset[int] = frozenset()
    branch: Callable[..., Any] | None = None  # piecewise ops: the piece of each element
    # ops with regions (a loop's body): `shape(attrs, *types, regions=...)` sees them too
    regions: bool = False
    # a kernel that needs context (a generator, the plan of a region): compile(ctx, node,
    # attrs) -> fn(*arrays), called once when a plan is built (see `runtime.plan.PlanContext`)
    compile: Callable[..., Any] | None = None
    doc: str = ""

    def infer(self, attrs: dict[str, Any], types: Any, regions: tuple = ()) -> Any:
        """The result type for these attributes, input types and regions."""
        if self.regions:
            return self.shape(attrs, *types, regions=regions)
        return self.shape(attrs, *types)


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} registered twice")
    REGISTRY[op.name] = op
    return op


def defaults(name: str) -> dict[str, Any]:
    """The registered default attributes of op `name` (none for leaves and unknown ops)."""
    op = REGISTRY.get(name)
    return dict(op.attrs) if op else {}


def to_text(g: Graph, stage: str | None = None, passes: Iterable[str] = (),
            locs: bool = False) -> str:
    """The canonical text of `g` (`runtime.ir_text.to_text` with the registered defaults)."""
    return ir_text.to_text(g, stage, passes, locs, defaults=defaults)
