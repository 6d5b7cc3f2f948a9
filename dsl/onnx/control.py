"""Run-time loops as ONNX `Loop` nodes (see `runtime.ops.control` for our `loop`).

Our loop's inputs are the initial carries, the sequences it slices along their first axis and
the captured outer values; its body's args are the iteration index `t`, the carries, one slice
of each sequence and the captured values; its results are the next carries and the values to
stack. An ONNX Loop body gets (iteration k, condition, carries) and returns (condition,
carries, values to stack); it reads outer values by name, so a slice is `Gather(seq, k')` in
the body, and `t = start + k'`, with k' = k, or n-1-k for a reversed loop, whose stacked values
are then flipped. Loops with a run-time trip count (`dynamic`) or a stop flag (`until`) are not
written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from onnx import helper

from dsl.onnx import OnnxError
from dsl.onnx.emit import INT64_MAX, INT64_MIN, Emitter, value_info
from runtime.ir import Graph, Node

EmitGraph = Callable[[Emitter, Graph, list[int], dict[int, str], Mapping[str, np.ndarray]],
                     None]


def loop_unsupported(node: Node) -> str | None:
    """Why this loop cannot be written, or None."""
    if node.attrs.get("dynamic"):
        return "a run-time trip count (dynamic loop)"
    if node.attrs.get("until"):
        return "a stop condition (loop ... until)"
    return None


def emit_loop(em: Emitter, node: Node, ins: list[str], values: Mapping[str, np.ndarray],
              emit_graph: EmitGraph) -> list[str]:
    """The ONNX names of the loop's results (final carries, then the stacked values)."""
    why = loop_unsupported(node)
    if why:
        raise OnnxError(f"export: op 'loop': {why} is not exported")
    a = node.attrs
    n_carry, n_seq = int(a["n_carry"]), int(a["n_seq"])
    length, start, reverse = a["length"], int(a["start"]), bool(a["reverse"])
    body = node.regions[0]
    args = body.args()
    results = body.results()
    count = em.node("Squeeze", [em.dim(length)], name="trip_count")
    sub = em.child()
    k = sub.typed(sub.fresh("k"), "i64", ())
    cond_in = sub.typed(sub.fresh("cond"), "bool", ())
    kk = k  # k' = k, or n - 1 - k
    if reverse:
        kk = sub.node("Sub", [sub.node("Sub", [count, sub.const(1, "i64")]), k], name="k_rev")
    t = sub.node("Add", [kk, sub.const(start, "i64")], name="t") if start else kk
    sub_inputs = [value_info(k, "i64", ()), value_info(cond_in, "bool", ())]
    inner: dict[int, str] = {args[0]: sub.typed(t, "i64", ())}
    carries = ins[:n_carry]
    for j, arg in enumerate(args[1:1 + n_carry]):
        typ = body[arg].type
        name = sub.typed(sub.fresh(f"carry{j}"), typ.dtype, typ.shape)
        sub_inputs.append(value_info(name, typ.dtype, typ.shape))
        inner[arg] = name
    for j, arg in enumerate(args[1 + n_carry:1 + n_carry + n_seq]):
        typ = body[arg].type
        inner[arg] = sub.typed(sub.node("Gather", [ins[n_carry + j], kk], name=f"slice{j}",
                                        axis=0), typ.dtype, typ.shape)
    for j, arg in enumerate(args[1 + n_carry + n_seq:]):
        inner[arg] = ins[n_carry + n_seq + j]  # captured: read from the outer graph
    emit_graph(sub, body, results, inner, values)
    outs = [sub.node("Identity", [cond_in], name="cond_out")]
    sub_outputs = [value_info(outs[0], "bool", ())]
    for r in results:
        typ = body[r].type
        out = sub.node("Identity", [inner[r]], name="result")
        outs.append(out)
        sub_outputs.append(value_info(out, typ.dtype, typ.shape))
    graph = helper.make_graph(sub.nodes, em.fresh("loop_body"), sub_inputs, sub_outputs)
    true = em.const(True, "bool")
    got = em.node_multi("Loop", [count, true, *carries], len(results), "loop", body=graph)
    if reverse:  # stacked values in the order of t
        got = got[:n_carry] + [em.node("Slice", [v, em.ints([INT64_MAX]), em.ints([INT64_MIN]),
                                                  em.ints([0]), em.ints([-1])], name="flip")
                               for v in got[n_carry:]]
    return got
