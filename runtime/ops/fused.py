"""`fused_elementwise`: several elementwise ops run as one kernel (made by the fusion pass,
`runtime.passes.fuse`).

The node owns one region, its body: an `arg` leaf {index=k} per input and the member nodes
(ordinary elementwise ops) computing its one result. The shape rule re-infers every member's
type through the body from the input types, so `verify_graph` checks fused nodes too. The
kernel is compiled once per plan (the `compile` hook) into generated code that calls the
members' own kernels in the body's order, so values are bit-identical to the unfused graph,
and drops each intermediate after its last use. There is no VJP: fusion is a lowering for
graphs that are already differentiated.
"""

from __future__ import annotations

import functools
from typing import Any

from runtime.ir import Graph, TensorType
from runtime.ops.registry import REGISTRY, OpDef, ShapeError, register

FUSED = "fused_elementwise"


def _fused_shape(attrs: dict[str, Any], *types: Any, regions: tuple[Graph, ...]) -> TensorType:
    if len(regions) != 1:
        raise ShapeError(f"{FUSED}: needs one body region, has {len(regions)}")
    body = regions[0]
    args = body.args()
    arg_types = [body[a].type for a in args]
    if arg_types != list(types):
        raise ShapeError(f"{FUSED}: the body takes ({', '.join(map(str, arg_types))}) but the "
                         f"inputs are ({', '.join(map(str, types))})")
    results = body.results()
    if len(results) != 1:
        raise ShapeError(f"{FUSED}: the body yields {len(results)} results, not one")
    typ: dict[int, Any] = dict(zip(args, types))
    for i in body.topo_order(results):
        n = body[i]
        if n.op == "const":
            typ[i] = n.type
        elif n.op != "arg":
            opdef = REGISTRY.get(n.op)
            if opdef is None:
                raise ShapeError(f"{FUSED}: unknown op {n.op!r} in the body")
            typ[i] = opdef.infer({**opdef.attrs, **n.attrs}, [typ[j] for j in n.inputs],
                                 n.regions)
    return typ[results[0]]


def _fused_compile(ctx: Any, node: Any, attrs: dict[str, Any]) -> Any:
    """The kernel of a fused node: generated code calling each member's kernel (made by the
    plan, `ctx.kernel`) in the body's order, deleting each intermediate after its last use."""
    body = node.regions[0]
    (result,) = body.results()
    var = {a: f"a{k}" for k, a in enumerate(body.args())}
    params = ", ".join(var.values())
    steps = [i for i in body.topo_order([result]) if body[i].op != "arg"]
    last: dict[int, int] = {}
    for k, i in enumerate(steps):
        for j in body[i].inputs:
            last[j] = k
    ns: dict[str, Any] = {}
    lines = [f"def {FUSED}({params}):"]
    for k, i in enumerate(steps):
        n = body[i]
        var[i] = f"v{k}"
        if n.op == "const":
            ns[var[i]] = ctx.backend.asarray(body.consts[i], dtype=n.type.np_dtype())
            continue
        ns[f"f{k}"] = ctx.kernel(n)[0]
        lines.append(f"    v{k} = f{k}({', '.join(var[j] for j in n.inputs)})")
        dead = sorted({var[j] for j in n.inputs if last[j] == k and body[j].op not in
                       ("arg", "const")})
        if dead and i != result:
            lines.append(f"    del {', '.join(dead)}")
    lines.append(f"    return {var[result]}")
    exec(_code("\n".join(lines)), ns)
    return ns[FUSED]


@functools.lru_cache(maxsize=1024)
def _code(source: str) -> Any:
    """The compiled kernel source (fused nodes of a deep network repeat a few shapes of
    body: compiling each anew was a third of building its plan)."""
    return compile(source, f"<{FUSED}>", "exec")


register(OpDef(FUSED, _fused_shape, None, None, elementwise=True, regions=True,
               compile=_fused_compile,
               doc="several elementwise ops run as one kernel: its body region (made by the "
                   "fusion pass, runtime.passes.fuse)"))
