"""What a checkpoint may restore into a run, checked before anything is changed.

`check_restore` reads a loaded checkpoint against the program and the run (`Trainer.load`):
the same spec (the fingerprint), every variable present with its shape and dtype, a valid step
counter, a generator state the backend can take and a data position that fits this run's data.
It returns what to write (`Restore`); the trainer writes it only when everything fits, so a
checkpoint that does not fit changes nothing. `check_match` does the same for `--init-from`
over a `WeightMatch`.

This module must not import `dsl`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends import Backend
from runtime.program import Program
from runtime.train.checkpoint import CheckpointError, check_fingerprint
from runtime.train.data import Batcher, DataError
from runtime.train.runner import TrainError
from runtime.train.weights import WeightMatch

__all__ = ["Restore", "check_match", "check_restore"]


@dataclass
class Restore:
    """A checked checkpoint: the variables to copy, the step counter, the generator state
    (None: keep), the Batcher at its saved position and its batch (None: no data position)."""

    variables: Mapping[str, np.ndarray]
    step: int
    rng: Any
    batcher: Batcher | None
    batch: int | None
    best: Any


def _check_variables(path: str | Path, saved: Mapping[str, np.ndarray], program: Program,
                     variables: Mapping[str, Any]) -> None:
    progvars = program.variables
    missing = [k for k in progvars if k not in saved]
    if missing:
        raise CheckpointError(f"checkpoint {path} has no variable '{missing[0]}', which "
                              f"this program has ({len(missing)} missing in all)")
    extra = [k for k in saved if k not in progvars]
    if extra:
        raise CheckpointError(f"checkpoint {path} has a variable '{extra[0]}' that this "
                              "program does not have; it was written by another program")
    for k in progvars:
        have, want = saved[k], variables[k]
        if tuple(have.shape) != tuple(want.shape) or have.dtype != np.dtype(want.dtype):
            raise CheckpointError(
                f"variable '{k}' in checkpoint {path} is {have.dtype}{list(have.shape)}, "
                f"but this program's is {np.dtype(want.dtype)}{list(want.shape)}")


def check_restore(path: str | Path, saved: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                  program: Program, variables: Mapping[str, Any], backend: Backend,
                  make_batcher: Callable[[int | None], Batcher] | None) -> Restore:
    """The checkpoint `saved, meta` at `path` checked against this run (CheckpointError when
    something does not fit). `make_batcher(batch)` makes a Batcher over the run's training data
    (None: the run has none, and a saved data position is ignored)."""
    check_fingerprint(path, meta, program)
    _check_variables(path, saved, program, variables)
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"checkpoint {path} has no valid step counter")
    rng_state = meta.get("rng")
    if rng_state is not None:
        probe = backend.make_rng(0)
        try:
            probe.bit_generator.state = rng_state
        except (AttributeError, TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {path} has a random generator state "
                                  f"this backend cannot restore: {e}") from e
    batcher: Batcher | None = None
    b: int | None = None
    data_state = meta.get("batcher")
    if data_state is not None and make_batcher is not None:
        b = (meta.get("settings") or {}).get("batch")
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise CheckpointError(f"checkpoint {path} has a malformed batch size")
        try:
            batcher = make_batcher(b)
            batcher.set_state(data_state)
        except (TrainError, DataError) as e:
            raise CheckpointError(f"checkpoint {path} does not fit this run's data: "
                                  f"{e}") from e
    return Restore({k: saved[k] for k in program.variables}, step, rng_state, batcher, b,
                   meta.get("best"))


def check_match(path: str | Path, m: WeightMatch, strict: bool) -> None:
    """CheckpointError when `--init-from` would load nothing, or (`strict`) not exactly every
    parameter of the program."""
    if strict and not m.complete:
        if m.missing:
            raise CheckpointError(f"checkpoint {path} has no variable '{m.missing[0]}', "
                                  f"which this program has ({len(m.missing)} missing in all)")
        if m.unexpected:
            raise CheckpointError(f"checkpoint {path} has a variable '{m.unexpected[0]}' "
                                  "that this program does not have; it was written by "
                                  "another program")
        name, have, want = m.mismatched[0]
        raise CheckpointError(f"variable '{name}' in checkpoint {path} is {have}, but this "
                              f"program's is {want}")
    if not m.load:
        raise CheckpointError(f"checkpoint {path} has no parameter that fits this program "
                              f"({m.summary()})")
