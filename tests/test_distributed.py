"""Data-parallel training over MPI (`runtime.train.distributed`): `mpirun -n 2 dslrun` gives
the parameters of one process on the same global batches, resumes, and a failing rank stops
the job with a message instead of hanging. Needs mpi4py and an `mpirun` (the `mpi` extra)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="distributed training needs mpi4py (pip install '.[mpi]')")

BIN = Path(sys.executable).parent
MPIRUN = shutil.which("mpirun", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
DSLRUN = shutil.which("dslrun", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
needs_mpirun = pytest.mark.skipif(
    MPIRUN is None or DSLRUN is None,
    reason="no mpirun (pip install '.[mpi]' brings Open MPI's) or no dslrun script")

SPEC = str(Path(__file__).resolve().parents[1] / "specs" / "mlp_digits.dl")
TRAIN = ["--dtype", "float64", "--quiet", "--no-plots", "--batch", "64"]
# Open MPI on one machine: loopback TCP, as root in containers, more ranks than cores
ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMPI_MCA_btl": "self,tcp", "OMPI_MCA_btl_tcp_if_include": "lo",
       "OMPI_MCA_rmaps_base_oversubscribe": "1", "PRTE_MCA_rmaps_default_mapping_policy":
       ":oversubscribe", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def run(args: list[str], ranks: int | None, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = args if ranks is None else [MPIRUN, "--oversubscribe", "-n", str(ranks), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ENV})


def params(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "checkpoint.npz") as z:
        return {k: z[k] for k in z.files if k.startswith("var/")}


def assert_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-10, err_msg=k)


@needs_mpirun
def test_two_ranks_equal_one_process_and_resume(tmp_path: Path) -> None:
    one = run([DSLRUN, SPEC, *TRAIN, "--steps", "20", "--out", str(tmp_path / "one")], None)
    assert one.returncode == 0, one.stderr
    two = run([DSLRUN, SPEC, *TRAIN, "--steps", "20", "--out", str(tmp_path / "two")], 2)
    assert two.returncode == 0, two.stderr
    ref = params(tmp_path / "one")
    assert_close(ref, params(tmp_path / "two"))
    # rank 0 alone writes the run: one metrics.csv with one row per logged step
    lines = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert len(lines) == len(set(lines))
    # 12 steps, then --resume to 20 under mpirun: the same parameters again
    half = run([DSLRUN, SPEC, *TRAIN, "--steps", "12", "--out", str(tmp_path / "half")], 2)
    assert half.returncode == 0, half.stderr
    more = run([DSLRUN, SPEC, "--quiet", "--no-plots", "--steps", "20", "--resume",
                str(tmp_path / "half")], 2)
    assert more.returncode == 0, more.stderr
    assert_close(ref, params(tmp_path / "half"))


@needs_mpirun
def test_clipping_and_weight_decay_apply_to_the_averaged_gradient(tmp_path: Path) -> None:
    spec = tmp_path / "small.dl"
    spec.write_text(SMALL)  # adamw with weight_decay and clip_norm (which binds here)
    args = [DSLRUN, str(spec), "--dtype", "float64", "--quiet", "--no-plots", "--out"]
    one = run([*args, str(tmp_path / "one")], None)
    assert one.returncode == 0, one.stderr
    two = run([*args, str(tmp_path / "two")], 2)
    assert two.returncode == 0, two.stderr
    assert_close(params(tmp_path / "one"), params(tmp_path / "two"))


@needs_mpirun
def test_a_failing_rank_stops_the_others(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dl"
    bad.write_text("model bad\ninput x: f32[B, 3\n")
    script = (f'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then exec "{DSLRUN}" "{bad}" --distributed; '
              f'else exec "{DSLRUN}" "{SPEC}" --distributed --steps 100000 --quiet --no-plots '
              f'--out "{tmp_path / "run"}"; fi')
    r = run(["sh", "-c", script], 2, timeout=60)
    assert r.returncode != 0
    assert "missing ']'" in r.stderr
    assert "distributed run stopped: rank 1 of 2 failed" in r.stderr


@needs_mpirun
def test_a_killed_rank_stops_the_others(tmp_path: Path) -> None:
    script = (f'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then sleep 2; kill -9 $$; '
              f'else exec "{DSLRUN}" "{SPEC}" --distributed --steps 100000 --quiet --no-plots '
              f'--out "{tmp_path / "run"}"; fi')
    r = run(["sh", "-c", script], 2, timeout=60)
    assert r.returncode != 0
    assert "rank 1" in r.stderr and "signal 9" in r.stderr


SMALL = """
model small
data digits(test_fraction = 0.2, seed = 0)
input x: f32[B, 64]
input y: i64[B]
param W: [64, 10] = xavier_normal
param b: [10] = zeros as bias
state n: [] = zeros
n = n + 1
objective loss = cross_entropy(x @ W + b, y)
optimizer adamw(lr = 1e-2, weight_decay = 0.1, clip_norm = 0.5) minimize loss
train { batch = 50, steps = 12, seed = 0 }
"""


def test_split_step_in_one_process_equals_the_plain_step() -> None:
    """One rank of the split step (gradients -> allreduce -> update, clipping and weight
    decay after it) trains as the single step graph does, with a short last batch; the state
    update that needs no gradient runs in the gradient half."""
    from mpi4py import MPI

    import dsl
    from runtime.train import distributed
    from runtime.train.loop import Trainer

    prog = dsl.compile(SMALL, dtype="float64").program
    plain = Trainer(prog)
    split = Trainer(prog)
    distributed.attach(split, MPI.COMM_SELF)
    gg, ug = distributed.split_phase(prog.phases[0], ["loss"])
    assert set(gg.updates) == {"n"} and "W" in ug.updates and "opt.W.m" in ug.updates
    assert {ug[i].name for i in ug.nodes if ug[i].op == "input"} >= {"W.grad", "b.grad"}
    a, b = plain.fit(evaluate=False), split.fit(evaluate=False)
    np.testing.assert_allclose(a.losses["loss"], b.losses["loss"], rtol=1e-12)
    for k, v in plain.get_variables().items():
        np.testing.assert_allclose(split.get_variables()[k], v, rtol=0, atol=1e-12, err_msg=k)


def test_batcher_shards_cover_each_global_batch_once() -> None:
    from runtime.train.data import Batcher, DataError

    x = np.arange(23)
    for sampling in ("shuffle", "sequential", "with_replacement"):
        whole = [b["x"].copy() for b in Batcher({"x": x}, 5, seed=3, sampling=sampling).epoch()]
        parts = [[b["x"].copy() for b in Batcher({"x": x}, 5, seed=3, sampling=sampling,
                                                  shard=(r, 3)).epoch()] for r in range(3)]
        assert len(whole) == 5 and all(len(p) == 5 for p in parts)
        for k, batch in enumerate(whole):
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), batch)
    with pytest.raises(DataError, match="smaller than the number of processes"):
        Batcher({"x": x}, 2, shard=(0, 3))


class _OtherRankHasOneRow:
    """Rank 0 of 2 in one process: the other rank's share of every batch is one row with a
    zero gradient (what the allreduce adds to this rank's buffer)."""

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 2

    def Allreduce(self, _send: object, buf: np.ndarray, op: object = None) -> None:
        buf[-1] += 1.0


@pytest.mark.filterwarnings("error")  # no "Mean of empty slice" from a step on no rows
def test_a_rank_without_rows_adds_nothing_and_keeps_its_state_finite() -> None:
    pytest.importorskip("mpi4py", reason="the split step needs mpi4py (the mpi extra)")
    import dsl
    from runtime.train import distributed
    from runtime.train.loop import Trainer

    spec = SMALL.replace("state n: [] = zeros\nn = n + 1\n",
                         "state mu: [64] = zeros\nmu = 0.9 * mu + 0.1 * mean(x, axis = 0)\n")
    prog = dsl.compile(spec, dtype="float64").program
    n_train = len(Trainer(prog).dataset.train["y"])
    trainer = Trainer(prog, batch=n_train - 1, steps=2)  # step 2: one row, none for rank 0
    distributed.attach(trainer, _OtherRankHasOneRow())
    before = trainer.get_variables()
    trainer.fit(evaluate=False, final_eval=False)
    after = trainer.get_variables()
    assert all(np.all(np.isfinite(v)) for v in after.values())
    assert not np.array_equal(before["mu"], after["mu"])  # step 1 had rows: it moved


def test_early_stop_is_refused_in_a_distributed_run() -> None:
    pytest.importorskip("mpi4py", reason="the split step needs mpi4py (the mpi extra)")
    import dsl
    from runtime.train import distributed
    from runtime.train.loop import Trainer
    from runtime.train.runner import TrainError

    prog = dsl.compile(SMALL.replace("seed = 0 }", "seed = 0, early_stop = 2 }"),
                       dtype="float64").program
    with pytest.raises(TrainError, match="early_stop is not supported in a distributed run"):
        distributed.attach(Trainer(prog), _OtherRankHasOneRow())
