"""Data-parallel training over MPI: K processes, one shard of every global batch each.

The step of a phase is cut at its gradient nodes (`Phase.grads`, recorded by the compiler in
the phase's step graph `Phase.step`) into two graphs, each optimized by the pass pipeline and
run by its own plans:

    gradient graph: data -> objective, learning rates, raw gradients (+ forward state updates)
    allreduce:      one contiguous buffer [n * grads..., n * objective, n] summed over ranks,
                    divided by the summed n (n = this rank's rows), so the result is the
                    gradient of the global batch's mean objective
    update graph:   averaged gradients (inputs `<param>.grad`), step, epoch -> the optimizer's
                    updates, with clip_value, clip_norm and weight decay applied there, i.e.
                    after the allreduce

`SplitRunner` stands in for the trainer's `Runner` of a phase and its `SplitStep` for a `Plan`
(`compute` = gradients, allreduce, update values; `commit` = write them), so the training loop
(`loop.py`) runs the same code with one process or K. Every rank draws the same global batches
(`Batcher(shard=(rank, size))` keeps its rows), holds the same variables and applies the same
update; only rank 0 is given a run directory, so it alone writes logs, pictures and
checkpoints. `attach(trainer, comm)` wires a Trainer; `Session` is the CLI's handle
(`dslrun SPEC --distributed`, or any `mpirun -n K dslrun SPEC`), which aborts the whole job
(`MPI.COMM_WORLD.Abort`) when one rank fails, so the others never wait forever.

mpi4py is imported only here and only when a distributed run starts. This module must not
import `dsl`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from runtime.ir import Graph, OutputKind, Role
from runtime.passes import run_pipeline
from runtime.plan import Plan
from runtime.program import Phase
from runtime.train.runner import TRAINER_INPUTS, Runner, TrainError

__all__ = ["LAUNCHER_ENV", "Session", "SplitRunner", "attach", "launched", "split_phase"]

# set by MPI launchers in every process they start: Open MPI, MPICH/Hydra (PMI), Slurm's PMIx
LAUNCHER_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")


def launched() -> bool:
    """This process was started by an MPI launcher with more than one process."""
    for key in LAUNCHER_ENV:
        v = os.environ.get(key, "")
        if v.isdigit() and int(v) > 1:
            return True
    return False


def grad_name(param: str) -> str:
    return f"{param}.grad"


def split_phase(phase: Phase, outputs: list[str]) -> tuple[Graph, Graph]:
    """The gradient graph (outputs `outputs` and `<param>.grad`; the updates that need no
    gradient, such as batch-norm running statistics) and the update graph (inputs
    `<param>.grad`; the updates that do) of a phase, both optimized."""
    g = phase.step
    if g is None or not phase.grads:
        raise TrainError(f"phase '{phase.name}' exposes no gradients, so it cannot be trained "
                         "data-parallel")
    grad_ids = set(phase.grads.values())
    gg = g.copy()
    gg.outputs = {n: g.outputs[n] for n in outputs}
    gg.output_kinds = {n: g.output_kinds[n] for n in outputs}
    for p, gid in phase.grads.items():
        gg.outputs[grad_name(p)] = gid
        gg.output_kinds[grad_name(p)] = OutputKind.GRAD
    after = {v: nid for v, nid in g.updates.items()
             if nid in grad_ids or grad_ids & g.ancestors(nid)}
    gg.updates = {v: nid for v, nid in g.updates.items() if v not in after}
    ug = g.copy()
    feeds = {gid: ug.add("input", (), None, ug[gid].type, role=Role.INPUT, name=grad_name(p))
             for p, gid in phase.grads.items()}
    ug.redirect_many(feeds)
    ug.outputs, ug.output_kinds, ug.updates = {}, {}, after
    allowed = {grad_name(p) for p in phase.grads} | set(TRAINER_INPUTS)
    for nid in ug.topo_order(list(after.values())):
        n = ug[nid]
        if n.op == "input" and n.name not in allowed:
            raise TrainError(f"the update rule of phase '{phase.name}' reads the input "
                             f"'{n.name}' besides the gradients (through the objective or a "
                             "second derivative), so it differs between processes; train it "
                             "in one process")
    return run_pipeline(gg)[0], run_pipeline(ug)[0]


class SplitRunner:
    """A phase run as gradients -> allreduce -> update (the `Runner` interface the loop uses:
    `plan`, `update_names`, `backup`, `plans`, `inputs`, `keyed`, `label`)."""

    def __init__(self, runner: Runner, phase: Phase, lrs: list[str], comm: Any,
                 rows_of: str | None, seed: int, index: int = 0) -> None:
        gg, ug = split_phase(phase, [phase.objective, *lrs])
        m = runner.machine
        self.label = runner.label
        self.inputs, self.keyed = runner.inputs, runner.keyed
        self.update_names = runner.update_names
        self.backup = runner.backup
        self.grad_names = [grad_name(p) for p in phase.grads]
        self.grads = Runner(m, gg, [phase.objective, *lrs, *self.grad_names], True,
                            f"{runner.label} (gradients)")
        self.update = Runner(m, ug, [], True, f"{runner.label} (update)")
        self.comm = comm
        self.seed, self.index = seed, index  # the phase's place in the step: its own draws
        self.n_lr = len(lrs)
        self.backend = m.backend
        self.rows_of = rows_of  # the fed field whose rows count this rank's share
        types = [gg[gg.outputs[n]].type for n in self.grad_names]
        self.dtype = np.result_type(*[t.np_dtype() for t in types])
        sizes = [int(np.prod(t.shape, dtype=np.int64)) for t in types]
        # grads, learning rates, objective, rows: each rank adds its values times its rows
        self.buffer = np.empty(sum(sizes) + self.n_lr + 2, dtype=self.dtype)
        offs = np.cumsum([0, *sizes])
        self.views = {n: self.buffer[a:b].reshape(t.shape)
                      for n, a, b, t in zip(self.grad_names, offs, offs[1:], types)}
        self._steps: dict[int, SplitStep] = {}

    @property
    def plans(self) -> dict[Any, Plan]:
        return {**{("grad", *k): p for k, p in self.grads.plans.items()},
                **{("update", *k): p for k, p in self.update.plans.items()}}

    def plan(self, feeds: Mapping[str, Any]) -> SplitStep:
        gplan = self.grads.plan(feeds)
        step = self._steps.get(id(gplan))
        if step is None:
            step = self._steps[id(gplan)] = SplitStep(self, gplan)
        return step


class SplitStep:
    """One binding of a phase's step: `compute` (gradients, one allreduce, update values) and
    `commit` (write the updates), as `Plan.compute`/`Plan.commit`."""

    def __init__(self, owner: SplitRunner, gplan: Plan) -> None:
        self.owner = owner
        self.gplan = gplan
        self.uplan: Plan | None = None
        self.computed = False  # this rank ran the gradient step (it had rows)

    def compute(self, feeds: Mapping[str, Any], check_finite: bool = False) -> list[Any]:
        o = self.owner
        rows = float(len(feeds[o.rows_of])) if o.rows_of is not None else 1.0
        buf = o.buffer
        lrs = slice(len(buf) - 2 - o.n_lr, len(buf) - 2)
        self.computed = bool(rows)
        if rows:
            # random ops (dropout, noise) draw a stream of their own per rank, phase and
            # step, so shards and phases draw independently and a resumed run draws the
            # same again
            key = [o.seed, o.comm.Get_rank(), o.index, int(feeds.get("step", 0))]
            self.gplan.rng = o.backend.make_rng(
                int(np.random.SeedSequence(key).generate_state(1, np.uint32)[0]))
            outs = self.gplan.compute(feeds, check_finite)
            k = 1 + o.n_lr
            for name, g in zip(o.grad_names, outs[k:]):
                np.multiply(g, rows, out=o.views[name])
            buf[lrs] = [float(v) * rows for v in outs[1:k]]
            buf[-2] = float(outs[0]) * rows
        else:  # a short last batch left this rank no rows: it adds nothing and computes
            buf[:] = 0.0  # nothing (a step on no rows would make NaN batch statistics)
        buf[-1] = rows
        allreduce(o.comm, buf)  # the one collective of the step
        total = buf[-1]
        buf[:-1] /= total
        ufeeds = {n: feeds[n] for n in TRAINER_INPUTS if n in feeds}
        ufeeds.update(o.views)
        if self.uplan is None:
            self.uplan = o.update.plan(ufeeds)
        self.uplan.compute(ufeeds, check_finite)
        return [buf[-2], *buf[lrs]]

    def commit(self) -> None:
        if self.computed:
            self.gplan.commit()  # forward state updates (this rank's batch statistics)
        assert self.uplan is not None
        self.uplan.commit()


def allreduce(comm: Any, buf: np.ndarray) -> None:
    """Sum `buf` over every rank of `comm`, in place."""
    from mpi4py import MPI

    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)


def attach(trainer: Any, comm: Any) -> None:
    """Make `trainer` (a `runtime.train.loop.Trainer`, before its first batch) one rank of a
    data-parallel run over `comm`: its batcher keeps this rank's shard and every phase runs
    through a `SplitRunner`."""
    if trainer.settings.early_stop:
        raise TrainError("early_stop is not supported in a distributed run: every rank would "
                         "have to stop at the same step; train in one process, or drop "
                         "early_stop (keep_best works: rank 0 keeps best.npz)")
    if trainer.backend.xp is not np:
        raise TrainError(f"distributed training runs on the numpy backend, not "
                         f"{trainer.backend.name}")
    rows_of = next(iter(trainer.data_fields), None)
    seed = int(trainer.settings.seed)
    index = {id(ph): k for k, ph in enumerate(trainer.program.phases)}
    trainer.distribute((comm.Get_rank(), comm.Get_size()),
                       lambda r, ph, lrs: SplitRunner(r, ph, lrs, comm, rows_of, seed,
                                                      index[id(ph)]))


class Session:
    """This process's place in an MPI job (`comm`, `rank`, `size`), for the CLI. `abort`
    prints a message and stops every rank."""

    def __init__(self) -> None:
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise TrainError("distributed training needs mpi4py and an MPI library: pip "
                             "install 'dslrun[mpi]'") from e
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._hook = sys.excepthook
        sys.excepthook = self._excepthook

    def _excepthook(self, kind: Any, value: Any, tb: Any) -> None:
        self._hook(kind, value, tb)
        self.abort(f"rank {self.rank} of {self.size} failed with {kind.__name__}; stopping "
                   "every rank", 1)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, message: str, status: int) -> None:
        """Stop the whole job: print `message` (with this rank) and call MPI Abort."""
        print(f"error: distributed run stopped: {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        self.comm.Abort(status or 1)
