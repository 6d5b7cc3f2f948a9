"""Checkpoint files: variables and run state in one `.npz`, written atomically.

A checkpoint holds every variable as an array under `var/<name>` and a JSON document under
`__meta__` (a 0-d unicode array) with the step counter, the data position, the executor's
random generator state and facts about the program: its table of `variables` (role, dtype,
shape) and its `fingerprint` (the optimizers). `saved_fingerprint` joins the two into what
`fingerprint_diff` compares with the program a checkpoint is resumed into, so a variable's
name and type are recorded once. Nothing is pickled: `load_checkpoint` reads with
`allow_pickle=False`.

`save_checkpoint` writes to a temporary file in the target directory, fsyncs it and renames it
over the target, so a crash or Ctrl-C during a save leaves the previous checkpoint intact.
Whether the variables fit a program is checked by `Trainer.load`, not here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from runtime.dtypes import NUMPY_NAMES
from runtime.errors import UserError
from runtime.program import Program
from runtime.train.npz import NpzError, read_npz

__all__ = ["CheckpointError", "FORMAT", "check_fingerprint", "fingerprint", "fingerprint_diff",
           "load_checkpoint", "program_meta", "save_arrays", "save_checkpoint",
           "saved_fingerprint", "variable_table"]

FORMAT = "dslrun.checkpoint/1"
META_KEY = "__meta__"
VAR_PREFIX = "var/"


class CheckpointError(UserError):
    """A checkpoint cannot be written, read, or does not fit the program (one sentence)."""


def save_checkpoint(path: str | os.PathLike[str], variables: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any]) -> Path:
    """Write `variables` (host arrays) and the JSON-serializable `meta` to `path` atomically;
    returns the path. `meta` gets a "format" entry unless it has one."""
    path = Path(path)
    meta = {"format": FORMAT, **meta}
    try:
        text = json.dumps(meta, allow_nan=True, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the checkpoint metadata is not JSON-serializable: {e}") from e
    arrays: dict[str, np.ndarray] = {META_KEY: np.array(text)}
    for name, value in variables.items():
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise CheckpointError(f"variable {name!r} holds Python objects and cannot be saved")
        arrays[VAR_PREFIX + name] = arr
    return save_arrays(path, arrays, "checkpoint")


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray],
                what: str = "file") -> Path:
    """Write `arrays` to the `.npz` file `path` atomically (a temporary file in the same
    directory, fsynced, renamed over the target; nothing pickled); returns the path."""
    path = Path(path)
    directory = path.parent
    for name, arr in arrays.items():
        if np.asarray(arr).dtype.hasobject:
            raise CheckpointError(f"{name!r} holds Python objects and cannot be saved")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise CheckpointError(f"cannot write {what} {path}: {e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write {what} {path}: {e}") from e
        raise
    _fsync_dir(directory)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable where the platform allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint: (variables by name, meta). Raises CheckpointError for a missing file,
    a file that is not a dslrun checkpoint `.npz`, or unreadable contents."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a directory, not a file")
    try:
        arrays = read_npz(path)
    except NpzError as e:
        raise CheckpointError(f"{path} is not a checkpoint (.npz) file: {e}") from e
    if META_KEY not in arrays:
        raise CheckpointError(f"{path} is an .npz file but not a dslrun checkpoint: it has "
                              f"no {META_KEY} entry")
    raw = arrays[META_KEY]
    variables = {k[len(VAR_PREFIX):]: v for k, v in arrays.items() if k.startswith(VAR_PREFIX)}
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise CheckpointError(f"checkpoint {path} has a malformed {META_KEY} entry")
    try:
        meta = json.loads(str(raw))
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata: {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} has malformed metadata")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')!r}; this "
                              f"version of dslrun reads {FORMAT!r}")
    return variables, meta


def variable_table(program: Program) -> dict[str, dict[str, Any]]:
    """The table of variables a checkpoint of `program` stores under "variables": each
    variable's role, NumPy dtype name and shape, the one record of its name and type."""
    return {k: {"role": str(v.role), "dtype": v.type.np_dtype().name,
                "shape": [int(d) for d in v.type.shape]}
            for k, v in program.variables.items()}


def fingerprint(variables: Mapping[str, Any], optimizers: list[str] | None) -> dict[str, Any]:
    """The fingerprint `fingerprint_diff` compares: parameter and state names with their types
    (`f32[64,10]`), read from a table of variables (`variable_table`), and the optimizers
    (`adam minimize loss`; None: not recorded)."""
    out: dict[str, Any] = {"params": {}, "state": {},
                           "optimizers": None if optimizers is None else list(optimizers)}
    for name, v in variables.items():
        if isinstance(v, dict) and v.get("role") in ("param", "state"):
            dt = NUMPY_NAMES.get(str(v.get("dtype")), str(v.get("dtype")))
            shape = ",".join(str(d) for d in v.get("shape") or [])
            out["params" if v["role"] == "param" else "state"][name] = f"{dt}[{shape}]"
    return out


def program_meta(program: Program) -> dict[str, Any]:
    """What a checkpoint says about the program that wrote it: its "variables"
    (`variable_table`) and, under "fingerprint", what that table does not say: the
    optimizers (`saved_fingerprint` joins the two)."""
    return {"variables": variable_table(program),
            "fingerprint": {"optimizers": list(program.meta.get("optimizers") or [])}}


def saved_fingerprint(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint of a checkpoint's meta: its variables' types from its table of
    variables, its optimizers from its "fingerprint" entry (checkpoints that repeat the types
    there: as written; older checkpoints without one: no optimizers)."""
    fp = meta.get("fingerprint")
    if isinstance(fp, dict) and "params" in fp:
        return {"params": {}, "state": {}, "optimizers": None, **fp}
    optimizers = fp.get("optimizers") if isinstance(fp, dict) else None
    return fingerprint(meta.get("variables") or {}, optimizers)


def fingerprint_diff(saved: Mapping[str, Any], mine: Mapping[str, Any],
                     limit: int = 6) -> list[str]:
    """What differs between a checkpoint's fingerprint and this program's, one phrase each
    (at most `limit`, then a count of the rest)."""
    out: list[str] = []
    opt_have, opt_want = saved.get("optimizers"), mine.get("optimizers")
    if opt_have is not None and list(opt_have) != list(opt_want or []):
        out.append(f"the optimizers are {'; '.join(opt_have) or 'none'} in the checkpoint and "
                   f"{'; '.join(opt_want or []) or 'none'} in this spec")
    for kind, what in (("params", "parameter"), ("state", "state variable")):
        have, want = saved.get(kind) or {}, mine.get(kind) or {}
        for name in want:
            if name not in have:
                out.append(f"{what} '{name}' ({want[name]}) is not in the checkpoint")
            elif have[name] != want[name]:
                out.append(f"{what} '{name}' is {have[name]} in the checkpoint and "
                           f"{want[name]} in this spec")
        out.extend(f"{what} '{name}' ({have[name]}) is only in the checkpoint"
                   for name in have if name not in want)
    if len(out) > limit:
        out = [*out[:limit], f"and {len(out) - limit} more differences"]
    return out


def check_fingerprint(path: str | os.PathLike[str], meta: Mapping[str, Any],
                      program: Program) -> None:
    """CheckpointError listing what differs when the checkpoint `path` (with `meta`) was
    written by a spec whose fingerprint is not `program`'s."""
    differ = fingerprint_diff(saved_fingerprint(meta), saved_fingerprint(program_meta(program)))
    if differ:
        by = meta.get("source") or meta.get("program") or "another spec"
        raise CheckpointError(
            f"checkpoint {path} was written by {by}, which differs from this spec: "
            + "; ".join(differ) + " (a checkpoint continues the spec that wrote it; "
            "--init-from takes the parameters that fit)")
