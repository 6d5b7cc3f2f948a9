"""Private helpers shared by the passes: canonical attribute keys, full attributes, type
re-inference, constant values and cleanup of nodes a rewrite left without users.

These are IR conveniences that `runtime.ir` does not (yet) offer; they use only the public
`Graph` API (`nodes`, `users`, `remove`, `consts`, `outputs`, `updates`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from runtime.ir import Graph, Node, TensorType
from runtime.ops import REGISTRY

VARIABLE_OPS = ("input", "param", "state")  # leaves with an identity: never merged/removed


def canon(v: Any) -> Any:
    """A hashable canonical form of an attribute value.

    Lists and tuples compare equal, floats compare by `repr` (so NaN equals NaN and -0.0 differs
    from 0.0), bools, ints and floats stay distinct (True != 1 != 1.0), NumPy scalars are plain.
    """
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, np.ndarray):
        return ("nd", str(v.dtype), v.shape, np.ascontiguousarray(v).tobytes())
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, int):
        return ("i", v)
    if isinstance(v, float):
        return ("f", repr(v))
    if isinstance(v, str):
        return ("s", v)
    if v is None:
        return ("n",)
    if isinstance(v, (list, tuple)):
        return ("t", tuple(canon(x) for x in v))
    if isinstance(v, dict):
        return ("d", tuple(sorted((str(k), canon(x)) for k, x in v.items())))
    return ("r", repr(v))


def full_attrs(op: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """`attrs` with the op's registered defaults filled in."""
    opdef = REGISTRY.get(op)
    return {**(opdef.attrs if opdef else {}), **attrs}


def attrs_key(op: str, attrs: dict[str, Any]) -> Any:
    return canon(full_attrs(op, attrs))


def infer_type(op: str, attrs: dict[str, Any], types: Iterable[TensorType],
               regions: tuple = ()) -> Any:
    """The op's shape rule applied to input types (raises on unknown ops or bad operands)."""
    return REGISTRY[op].infer(full_attrs(op, attrs), tuple(types), regions)


def is_random(op: str) -> bool:
    opdef = REGISTRY.get(op)
    return bool(opdef and opdef.random)


def const_value(g: Graph, nid: int) -> np.ndarray | None:
    """The value of a `const` node in its declared dtype (None when only its hash is known)."""
    n = g.nodes[nid]
    if n.op != "const" or nid not in g.consts:
        return None
    return np.asarray(g.consts[nid], dtype=n.type.np_dtype())


def const_key(g: Graph, n: Node) -> Any:
    """Identity of a constant's content: dtype, shape and bytes (or the printed hash)."""
    arr = const_value(g, n.id)
    if arr is None:
        return ("const", n.type, canon(n.attrs.get("value")))
    arr = np.ascontiguousarray(arr)
    return ("const", n.type, arr.shape, arr.tobytes())


def drop_orphans(g: Graph, candidates: Iterable[int]) -> int:
    """Remove candidates (and, transitively, their inputs) that have no users and are neither
    outputs, updates nor input/param/state leaves. Returns how many nodes were removed."""
    roots: set[int] | None = None  # made when first needed (a scan of the outputs, updates)
    work = list(candidates)
    removed = 0
    while work:
        nid = work.pop()
        n = g.nodes.get(nid)
        if n is None or n.op in VARIABLE_OPS or g.n_users(nid):
            continue
        if roots is None:
            roots = set(g.outputs.values()) | set(g.updates.values())
        if nid in roots:
            continue
        g.remove(nid)
        removed += 1
        work.extend(set(n.inputs))
    return removed
