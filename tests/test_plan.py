"""The execution plan's fast path against its plain interpreter, and the kernel tables.

- Every shipped spec trains a few steps with the buffer-reusing step (out= kernels, shared
  buffers, updates written in place) to the same bytes as the plain loop of kernels
  (`bench/verify_plan.py`'s `compare`, run here on small batches).
- Every op of the registry has a row in each backend's kernel table: an out= form or the
  reason it keeps its plain kernel; no row names an op that does not exist.
- Building the fast path never swallows an error: no handler in `runtime/plan` or
  `runtime/backends` catches everything without raising, and a form that fails shows.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from verify_plan import compare  # noqa: E402

from dsl.compiler import compile_file, shipped_specs  # noqa: E402
from runtime.backends import KernelTable  # noqa: E402
from runtime.backends.cupy_backend import KERNELS as CUPY_KERNELS  # noqa: E402
from runtime.ops import REGISTRY  # noqa: E402
from runtime.plan.out_kernels import NUMPY_KERNELS  # noqa: E402

SPECS = sorted({str(p) for p in shipped_specs().values()})
BATCH = 16  # small, and not below what a spec indexes (rnn.dl reads 16 rows)
STEPS = 3  # the first step is plain; the fast step runs the others


@pytest.mark.parametrize("path", SPECS, ids=[Path(p).relative_to(ROOT / "specs").as_posix()
                                             for p in SPECS])
def test_fast_plan_equals_plain_interpreter(path: str, one_blas_thread: None) -> None:
    if not compile_file(path).program.phases:
        pytest.skip("no training step (procedures only)")
    c = compare(path, "float32", steps=STEPS, batch=BATCH, evaluate=False)
    assert c.same_losses, "losses differ"
    assert c.same_vars, "variables differ after training"


@pytest.mark.parametrize("name, table", [("numpy", NUMPY_KERNELS), ("cupy", CUPY_KERNELS)])
def test_every_op_has_a_kernel_table_row(name: str, table: KernelTable) -> None:
    missing = table.uncovered(REGISTRY)
    assert not missing, (
        f"{name}: ops with neither an out= form nor a reason to run plain: {missing}; add "
        "each to the backend's table (NumPy: runtime/plan/out_kernels.py NUMPY_KERNELS)")
    both = set(table.out) & set(table.plain)
    assert not both, f"{name}: ops with a form and a reason to run plain: {sorted(both)}"
    stale = (set(table.out) | set(table.plain)) - set(REGISTRY)
    assert not stale, f"{name}: rows for ops that are not registered: {sorted(stale)}"
    for op in REGISTRY:
        reason = table.reason(op)
        assert reason is None or reason.strip(), f"{name}: {op} has an empty reason"


def test_numpy_table_has_forms_for_the_common_ops() -> None:
    for op in ("add", "mul", "matmul", "relu", "sigmoid", "softmax", "where",
               "fused_elementwise"):
        assert NUMPY_KERNELS.reason(op) is None, op


def _swallows(handler: ast.ExceptHandler) -> bool:
    broad = handler.type is None or (isinstance(handler.type, ast.Name)
                                      and handler.type.id in ("Exception", "BaseException"))
    return broad and not any(isinstance(n, ast.Raise) for n in ast.walk(handler))


@pytest.mark.parametrize("package", ["runtime/plan", "runtime/backends"])
def test_no_broad_except_falls_back_silently(package: str) -> None:
    found = [f"{p.relative_to(ROOT)}:{h.lineno}" for p in sorted((ROOT / package).glob("*.py"))
             for h in ast.walk(ast.parse(p.read_text()))
             if isinstance(h, ast.ExceptHandler) and _swallows(h)]
    assert not found, f"broad except without a raise: {found}"


def test_a_failing_out_form_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    import dsl

    def broken(call: object) -> None:
        raise RuntimeError("broken out= form")

    monkeypatch.setitem(NUMPY_KERNELS.out, "matmul", broken)  # type: ignore[index]
    m = dsl.load(str(ROOT / "specs" / "mlp_digits.dl"))
    with pytest.raises(RuntimeError, match="broken out= form"):
        m.fit(steps=2, batch=8, final_eval=False)


def test_fast_step_is_used_and_reuses_buffers() -> None:
    import dsl

    m = dsl.load(str(ROOT / "specs" / "mlp_digits.dl"))
    m.fit(steps=3, batch=8, final_eval=False)
    (plan,) = [p for r in m.trainer._phases for p in r.plans.values()]
    assert plan.fast is not None and plan.fast.kernels > 0 and plan.fast.inplace > 0


def test_nodes_share_an_out_form_only_when_everything_it_depends_on_is_equal() -> None:
    # `spec_key`: one form per key while building a plan (a deep network has thousands of
    # equal nodes); attributes that compare equal but compute differently get other keys
    import numpy as np

    from runtime.ir import Node, TensorType
    from runtime.plan.out_kernels import spec_key

    t = TensorType("f32", (2, 3))
    a, b = np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)

    def key(attrs: dict, args: list, res: object, zero: list | None = None) -> object:
        node = Node(0, "full", (), attrs, t)
        return spec_key(node, attrs, {}, args, res, zero or [False] * len(args))

    assert key({"value": 0.0}, [a], b) == key({"value": 0.0}, [a.copy()], b.copy())
    assert key({"value": 0.0}, [a], b) != key({"value": -0.0}, [a], b)
    assert key({"value": 1}, [a], b) != key({"value": True}, [a], b)
    assert key({"value": 1}, [a], b) != key({"value": 1}, [a], b, [True])
    assert key({"value": 1}, [a], b) != key({"value": 1}, [a.T.copy().T], b)  # strides
    assert key({"value": 1}, [a], a) != key({"value": 1}, [a], b)  # result is an operand
    assert key({"value": 1}, [[1, 2]], b) is None  # not an array: no form


# ----------------------------------------------------------------- the memory plan


def _phase_graphs(name: str) -> list:
    from dsl.compiler import compile_file

    c = compile_file(str(ROOT / "specs" / f"{name}.dl"))
    return [(ph.graph, [ph.objective, *(n for n, k in ph.graph.output_kinds.items()
                                        if k == "lr")]) for ph in c.program.phases]


@pytest.mark.parametrize("name", ["mlp_digits", "bench/lstm", "gan", "resnet_small"])
def test_memory_plan_is_a_pure_function_of_the_graph(name: str) -> None:
    from runtime.ops import to_text
    from runtime.plan.assign import plan_memory

    for g, outputs in _phase_graphs(name):
        before = to_text(g)
        a, b = plan_memory(g, NUMPY_KERNELS, outputs), plan_memory(g, NUMPY_KERNELS, outputs)
        assert a == b and a.text(g) == b.text(g)
        assert to_text(g) == before


@pytest.mark.parametrize("name", ["mlp_digits", "bench/lstm", "bench/lenet", "gan",
                                  "transformer_classifier"])
def test_values_sharing_a_buffer_are_never_live_together(name: str) -> None:
    from runtime.plan.assign import plan_memory

    for g, outputs in _phase_graphs(name):
        mp = plan_memory(g, NUMPY_KERNELS, outputs)
        pos = {i: p for p, i in enumerate(mp.order)}
        # a value's storage is live from its kernel to the last read of it or of any value
        # that may be a view of it (plain kernels); updates are read at the end
        last = {i: p for p, i in enumerate(mp.order)}
        for i in mp.order:
            for j in g[i].inputs:
                if j in last:
                    last[j] = max(last[j], pos[i])
        for nid in g.updates.values():
            if nid in last:
                last[nid] = len(mp.order)
        holder = {i: {i} if i in mp.buffer else set() for i in mp.order}
        for i in mp.order:  # plain values may be views of their operands' storage
            if mp.holding[i] == "plain":
                holder[i] = set().union(*[holder.get(j, set()) for j in g[i].inputs])
        end = {b: pos[b] for b in mp.buffer}
        for i in mp.order:
            for b in holder[i]:
                end[b] = max(end[b], last[i])
        by_buffer: dict[int, list[int]] = {}
        for i, b in mp.buffer.items():
            by_buffer.setdefault(b, []).append(i)
        for b, users in by_buffer.items():
            spans = sorted((pos[i], end[i]) for i in users)
            for (_s0, e0), (s1, _e1) in zip(spans, spans[1:]):
                assert e0 < s1, f"{name}: buffer b{b} holds two live values"
            assert all(g[i].type == mp.buffers[b] for i in users)
        assert set(mp.in_place) <= set(g.updates.values())
        assert mp.committed >= set(mp.in_place)


@pytest.mark.parametrize("name", ["bench/mlp_small", "bench/lstm", "bench/lenet",
                                  "bench/transformer", "mlp_digits", "gan", "lstm",
                                  "quadratic_optimizers"])
def test_memory_plan_agrees_with_the_running_step(name: str) -> None:
    """The run-time step writes in place a subset of the planned updates (all of them on the
    bench workloads) and uses at most the planned out= kernels: it only drops a form whose
    operands do not fit it (a `where` without a zero, variables sharing memory)."""
    import dsl
    from runtime.plan.assign import Holding, plan_memory

    m = dsl.load(str(ROOT / "specs" / f"{name}.dl"))
    m.fit(steps=2, batch=16, final_eval=False)
    for r in m.trainer._phases:
        for p in r.plans.values():
            mp = plan_memory(p.graph, NUMPY_KERNELS, p.output_names)
            planned = set(mp.in_place.values())
            ran = {n for n, _arr in p.fast.inplace_vars}
            assert ran <= planned
            if name.startswith("bench/"):
                assert ran == planned
                assert p.fast.kernels == sum(1 for h in mp.holding.values()
                                             if h != Holding.PLAIN)
            assert p.fast.kernels <= sum(1 for h in mp.holding.values() if h != Holding.PLAIN)


def test_planned_stage_prints_the_plan_and_parses_back() -> None:
    from dsl.compiler import compile_file
    from runtime.ir_text import parse_text

    c = compile_file(str(ROOT / "specs" / "mlp_digits.dl"))
    text = c.text("planned")
    assert "# memory plan" in text and "in place into classifier.dense1.W" in text
    assert "# buffers:" in text
    parsed = parse_text(text)
    assert len(parsed.nodes) == len(c.program.phases[0].graph.nodes)


def test_chain_runs_members_on_inputs_and_earlier_results() -> None:
    """A fused kernel's members as one straight-line function: operand positions count the
    inputs, then each earlier member's result; the buffer it was made for comes back."""
    import numpy as np

    from runtime.plan.codegen import chain

    out = np.empty(3)
    fns = [np.multiply, lambda a, b: np.add(a, b, out=out)]
    kernel = chain(fns, 2, [(0, 1), (2, 0)], out)  # out = x * y + x
    x, y = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    assert kernel(x, y) is out
    np.testing.assert_array_equal(out, x * y + x)
    again = chain([np.subtract, lambda a, b: np.add(a, b, out=out)], 2, [(0, 1), (2, 0)], out)
    assert again(x, y) is out  # the same shape of chain, other functions bound
    np.testing.assert_array_equal(out, (x - y) + x)
