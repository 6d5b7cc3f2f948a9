"""The step profile (`runtime.train.profile`, `dslrun bench --profile`): its op counts are the
plan's, every kernel is timed once per call (loop bodies at every iteration), the FLOPs
follow the cost table (a matrix product 2mnk), the GEMM list covers convolutions, and the
peak-RSS meter sees memory touched inside its block."""

from __future__ import annotations

import collections
import json
import mmap

import numpy as np
import pytest
from conftest import spec

import dsl
from dsl.cli import main as cli_main
from runtime.ops import REGISTRY
from runtime.train import profile as prof


def test_every_op_has_a_cost_row() -> None:
    assert sorted(set(REGISTRY) - set(prof.OP_COSTS)) == []
    assert sorted(set(prof.OP_COSTS) - set(REGISTRY)) == []


def _profiled(name: str, steps: int = 2) -> tuple[prof.OpProfile, list, list]:
    with prof.recording_regions() as regions:
        model = dsl.load(spec(f"bench/{name}"))
        model.fit(steps=2, final_eval=False)
    plans = prof.training_plans(model.trainer)
    p = prof.profile_steps(
        plans, regions, lambda on_step: model.fit(steps=2 + steps, on_step=on_step,
                                                  final_eval=False), steps, step_ms=10.0)
    return p, plans, regions


def _label_counts(graph_instrs: list) -> collections.Counter:
    return collections.Counter(prof.op_label(g, i.nid) for g, instrs in graph_instrs
                               for i in instrs)


def test_profile_counts_are_the_plans_and_each_kernel_runs_once_per_step() -> None:
    p, plans, regions = _profiled("mlp_small")
    assert regions == []
    (plan,) = plans
    assert plan.fast is not None  # the buffer-reusing step (and its commit) was profiled
    rows = {r.op: r for r in p.rows}
    assert {k: r.instrs for k, r in rows.items()} == dict(_label_counts([(plan.graph,
                                                                         plan.instrs)]))
    assert {k: r.calls for k, r in rows.items()} == {k: float(r.instrs) for k, r in rows.items()}
    # 64-256-256-10 at batch 128: forward and weight gradients, input gradients of layers 2, 3
    b = 128
    fwd = 2 * b * (64 * 256 + 256 * 256 + 256 * 10)
    assert rows["matmul"].flops == 2 * fwd + 2 * b * (256 * 256 + 256 * 10)
    # bias + relu fused, two layers: elementwise, one per element and member
    assert rows["fused_elementwise[add,relu]"].flops == 2 * 2 * b * 256
    assert sum(g.flops * n for g, n in p.gemms.items()) == rows["matmul"].flops
    assert p.kernel_ms == pytest.approx(sum(r.ms for r in p.rows))
    shares = sum(p.share(r.ms) for r in p.rows) + p.share(p.overhead_ms)
    assert shares == pytest.approx(100.0)
    assert all(r.ms >= 0 for r in p.rows)


def test_loop_bodies_are_counted_at_every_iteration() -> None:
    p, plans, regions = _profiled("lstm", steps=1)
    (plan,) = plans
    assert len(regions) == 2  # the forward loop and the backward loop
    main = _label_counts([(plan.graph, plan.instrs)])
    body = _label_counts([(rp.region, rp.instrs) for rp in regions])
    assert {r.op: r.instrs for r in p.rows} == dict(main + body)
    t = 32
    assert sum(r.calls for r in p.rows) == sum(main.values()) + t * sum(body.values())
    assert {r.op: r.calls for r in p.rows}["loop"] == 2
    # the per-step GEMMs of the body: h @ W_hh [64, 128] @ [128, 512] at every step
    assert p.gemms.get(prof.Gemm(1, 64, 128, 512), 0) >= t


def test_conv_gemms_are_im2col_products() -> None:
    p, _, _ = _profiled("lenet", steps=1)
    rows = {r.op: r for r in p.rows}
    # conv1: [64, 1, 28, 28] * [6, 1, 5, 5], padding 2: 64*28*28 positions x 25 x 6
    assert p.gemms[prof.Gemm(1, 64 * 28 * 28, 25, 6)] == 1
    # conv2: [64, 6, 14, 14] * [16, 6, 5, 5]: 64*10*10 positions x 150 x 16
    assert p.gemms[prof.Gemm(1, 64 * 10 * 10, 150, 16)] == 1
    assert rows["conv2d"].flops == 2 * (64 * 784 * 25 * 6 + 64 * 100 * 150 * 16)
    assert rows["conv2d_grad_weight"].flops == rows["conv2d"].flops
    assert prof.gemm_bound_ms({prof.Gemm(1, 64, 64, 64): 3.0}, repeat=3) > 0


def test_peak_rss_sees_memory_touched_in_the_block() -> None:
    size = 64 * 2**20
    with prof.PeakRss() as m, mmap.mmap(-1, size) as pages:  # fresh pages, not a reused heap
        a = np.frombuffer(pages, dtype=np.uint8)
        a[::4096] = 1  # touch every page: 64 MiB resident
        touched = int(a[::4096].sum())
        del a
    assert touched == size // 4096
    if m.method != "VmHWM":
        pytest.skip("no /proc/self/clear_refs here: ru_maxrss growth only")
    assert m.increase >= 48 * 2**20


def test_bench_profile_prints_the_table_and_memory(tmp_path, capsys) -> None:
    out = tmp_path / "b.json"
    assert cli_main(["bench", spec("bench/mlp_small"), "--steps", "3", "--warmup", "2",
                     "--profile", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "overhead (step - kernels)" in text and "matmul" in text
    data = json.loads(out.read_text())
    assert data["gemm_ms"] > 0 and data["plan_peak_bytes"] > 0
    assert data["rss_increase_bytes"] >= 0 and data["rss_method"] in ("VmHWM", "ru_maxrss")
    assert {o["op"] for o in data["profile"]["ops"]} >= {"matmul", "softmax_cross_entropy"}
