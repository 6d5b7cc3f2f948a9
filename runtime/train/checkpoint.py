"""Checkpoint files: variables and run state in one `.npz`, written atomically.

A checkpoint holds every variable as an array under `var/<name>` and a JSON document under
`__meta__` (a 0-d unicode array) with the step counter, the data position, the executor's
random generator state and facts about the program. Nothing is pickled: `load_checkpoint`
reads with `allow_pickle=False`.

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

from runtime.errors import UserError
from runtime.train.npz import NpzError, read_npz

__all__ = ["CheckpointError", "FORMAT", "load_checkpoint", "save_arrays", "save_checkpoint"]

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
