"""Run directories: where one training run keeps its files, and how later commands find them.

Layout (`root` is `runs` by default):

    runs/<model>/latest                  a text file: the id of the newest run started here
    runs/<model>/<run id>/checkpoint.npz the last checkpoint (written atomically)
                          best.npz       the best one by `keep_best` (when set)
                          metrics.csv    logged steps and evaluations (metrics_log.py)
                          run.json       what the run was: overrides, seed, dtype, versions ...
                          spec.dl        the spec's text (and its includes, see `write_spec`)
                          run.lock       held by the process writing the run (`RunLock`)

A run id is the UTC start time `YYYYmmdd-HHMMSS`, with `-02`, `-03` ... appended when that
name is taken, so ids sort by start time and two runs never share a directory. `latest` is a
plain file rather than a symbolic link so that it works everywhere (Windows, zip archives,
synced folders). `--out DIR` names a run directory directly; such runs do not touch `latest`.

`check_file_target` and `check_dir_target` say before a run starts whether an output path can
be written, so a mistake in a path never costs a finished training.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: RunLock falls back to the holder's pid
    fcntl = None  # type: ignore[assignment]

__all__ = ["RUN_INFO", "RunDir", "RunDirError", "RunLock", "check_dir_target", "check_file_target",
           "find_run", "latest_run", "new_run", "open_run", "resolve_checkpoint",
           "run_of_checkpoint", "versions"]

RUN_INFO = "run.json"
LATEST = "latest"
LOCK = "run.lock"
SPEC_NAME = "spec.dl"
CHECKPOINT_NAME = "checkpoint.npz"
BEST_NAME = "best.npz"
METRICS_NAME = "metrics.csv"
CURVES_NAME = "curves.png"
# the files a run writes atomically (through `.NAME.tmp` or `.NAME.<random>.tmp`)
RUN_FILES = (RUN_INFO, SPEC_NAME, CHECKPOINT_NAME, BEST_NAME, METRICS_NAME, CURVES_NAME)


class RunDirError(UserError):
    """An output path cannot be written, or a run directory cannot be found or read."""


class RunDir:
    """One run's directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock: RunLock | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.npz"

    @property
    def best(self) -> Path:
        return self.path / BEST_NAME

    def info(self) -> dict[str, Any]:
        """The run's `run.json` ({} when it has none)."""
        f = self.path / RUN_INFO
        if not f.is_file():
            return {}
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise RunDirError(f"cannot read {f}: {e}") from e
        if not isinstance(data, dict):
            raise RunDirError(f"{f} is not a run description (a JSON object)")
        return data

    def write_info(self, info: Mapping[str, Any]) -> Path:
        """Write `run.json` (replacing it atomically)."""
        return _write_text(self.path / RUN_INFO, json.dumps(info, indent=2, sort_keys=False,
                                                            default=_jsonable) + "\n")

    def write_spec(self, files: Mapping[str, str]) -> list[str]:
        """Snapshot the spec: `files` maps a path relative to the run directory (`spec.dl` for
        the main file, an include as written in the spec when it stays inside the directory)
        to its text. Returns the paths written."""
        written = []
        for rel, text in files.items():
            target = (self.path / rel).resolve()
            if self.path.resolve() not in target.parents:
                raise RunDirError(f"spec snapshot path {rel!r} leaves the run directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_text(target, text)
            written.append(rel)
        return written

    def lock(self) -> None:
        """Take the directory for this process (`run.lock`, see `RunLock`): RunDirError naming
        the process that holds it. Taking it again while held does nothing. Temporary files
        left in it by a killed run (a checkpoint being written) are removed."""
        if self._lock is None:
            self._lock = RunLock.acquire(self.path)
            for name in RUN_FILES:  # left by a killed writer: none is live now. Only
                for pattern in (f".{name}.tmp", f".{name}.*.tmp"):  # ours: --out may be
                    for tmp in self.path.glob(pattern):  # a directory with other files
                        with contextlib.suppress(OSError):
                            tmp.unlink()

    def unlock(self) -> None:
        """Give the directory back (the end of a `fit`)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def prepare_fresh(self) -> None:
        """A new run in this directory (step 0): drop a `best.npz` left by an earlier run
        here, which would not belong to this one."""
        try:
            self.best.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise RunDirError(f"cannot remove the old {self.best}: {e}") from e


class RunLock:
    """One process's hold on a run directory: an advisory lock (`flock`) on `run.lock`, whose
    text names the holder (pid, host, start time, command). The kernel drops the lock when
    its process dies, so a lock left by a killed run (its pid dead) never blocks the next;
    the file itself stays (emptied on release): removing it would let two processes lock two
    different files. Where `fcntl` is missing (Windows) the text alone decides: a holder
    whose pid is no longer alive on this host is stale."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, directory: Path) -> RunLock:
        path = directory / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"cannot create the lock file {path}: {e.strerror or e}") from e
        try:
            held = not _flock(fd, path) if fcntl is not None else _held_by_live_pid(path)
            if held:
                raise RunDirError(
                    f"the run directory {directory} is in use by another dslrun process "
                    f"({_describe_holder(path)}); wait for it to end or give another --out "
                    f"(two runs writing one directory would overwrite each other's "
                    f"checkpoints)")
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime()),
                                     "command": sys.argv}).encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError:
            pass  # closing the descriptor releases the lock anyway
        finally:
            os.close(self.fd)
            self.fd = None


def _flock(fd: int, path: Path) -> bool:
    """Whether this process got the lock of `fd` (without waiting)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks: the holder's pid decides
        return not _held_by_live_pid(path)
    return True


def _holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _held_by_live_pid(path: Path) -> bool:
    """The lock's text names another process that may be alive: on this host a live pid,
    on another host any (it cannot be checked from here)."""
    h = _holder(path)
    pid = h.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    if h.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _describe_holder(path: Path) -> str:
    h = _holder(path)
    if not h:
        return f"see {path}"
    cmd = " ".join(str(c) for c in h.get("command") or [])
    return (f"pid {h.get('pid')} on {h.get('host')}, since {h.get('started')}"
            + (f": {cmd}" if cmd else ""))


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return str(v)


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        raise RunDirError(f"cannot write {path}: {e.strerror or e}") from e
    return path


def versions() -> dict[str, str]:
    """The versions a run depends on: dslrun, numpy, python."""
    try:
        own = metadata.version("dslrun")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {"dslrun": own, "numpy": np.__version__, "python": platform.python_version()}


def new_run(root: str | os.PathLike[str], model: str, now: float | None = None) -> RunDir:
    """Create `root/model/<run id>` (a fresh id) and point `root/model/latest` at it."""
    base = Path(root) / model
    check_dir_target(base, "the runs directory")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create the runs directory {base}: {e.strerror or e}") from e
    for k in range(1, 10_000):
        name = stamp if k == 1 else f"{stamp}-{k:02d}"
        try:
            (base / name).mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise RunDirError(f"cannot create run directory {base / name}: "
                              f"{e.strerror or e}") from e
        _write_text(base / LATEST, name + "\n")
        return RunDir(base / name)
    raise RunDirError(f"cannot find a free run id under {base}")


def open_run(path: str | os.PathLike[str]) -> RunDir:
    """The run directory `path` (`--out DIR`), created when missing."""
    p = Path(path)
    check_dir_target(p, "--out")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create the run directory {p}: {e.strerror or e}") from e
    return RunDir(p)


def latest_run(root: str | os.PathLike[str], model: str) -> RunDir | None:
    """The run `root/model/latest` names (when it exists), else the newest run directory."""
    base = Path(root) / model
    try:
        name = (base / LATEST).read_text().strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    if name and "/" not in name and name not in (".", "..") and (base / name).is_dir():
        return RunDir(base / name)
    runs = sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []
    return RunDir(runs[-1]) if runs else None


def find_run(root: str | os.PathLike[str], model: str) -> tuple[RunDir, str | None]:
    """The run whose checkpoint `dslrun eval SPEC` reads: the latest run, or when that one has
    no checkpoint (it stopped before writing one) the newest that has; with a note saying
    so (None otherwise). RunDirError, saying how to get a run, when there is none."""
    base = Path(root) / model
    latest = latest_run(root, model)
    if latest is not None and latest.checkpoint.is_file():
        return latest, None
    runs = sorted((p for p in base.glob("*") if (p / "checkpoint.npz").is_file()),
                  reverse=True) if base.is_dir() else []
    if runs:
        note = None
        if latest is not None:
            note = (f"the latest run {latest.path} has no checkpoint; using {runs[0]}")
        return RunDir(runs[0]), note
    raise RunDirError(f"model '{model}' has no trained run under {base} to evaluate: train it "
                      "first (dslrun train SPEC), or give --checkpoint CKPT")


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint given as a file, a run directory (its checkpoint.npz) or a `latest` file
    (the checkpoint of the run it names)."""
    p = Path(path)
    if p.is_dir() and (p / "checkpoint.npz").is_file():
        return p / "checkpoint.npz"
    if p.name == LATEST and p.is_file() and p.stat().st_size < 256:
        name = p.read_text(errors="replace").strip()
        if name and (p.parent / name / "checkpoint.npz").is_file():
            return p.parent / name / "checkpoint.npz"
    return p


def run_of_checkpoint(path: str | os.PathLike[str]) -> RunDir | None:
    """The run directory a checkpoint file lies in (None when its directory has no run.json)."""
    d = Path(path).parent
    return RunDir(d) if (d / RUN_INFO).is_file() else None


# --------------------------------------------------------------------------- output paths

def _nearest_existing(p: Path) -> Path:
    q = p.absolute()
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def check_file_target(path: str | os.PathLike[str], what: str) -> None:
    """RunDirError unless a file can be written at `path`: its directory exists and is
    writable, and the path is not a directory (nor an existing read-only file)."""
    p = Path(path)
    parent = p.absolute().parent
    if p.is_dir():
        raise RunDirError(f"{what} {path}: is a directory; give a file path")
    if not parent.is_dir():
        thing = "is not a directory" if parent.exists() else "does not exist"
        raise RunDirError(f"{what} {path}: the directory {parent} {thing}; create it first "
                          "or give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"{what} {path}: the directory {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise RunDirError(f"{what} {path}: the file exists and is not writable")


def check_dir_target(path: str | os.PathLike[str], what: str) -> None:
    """RunDirError unless `path` is a writable directory or can be created as one."""
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise RunDirError(f"{what} {path}: exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise RunDirError(f"{what} {path}: the directory is not writable")
        return
    base = _nearest_existing(p)
    if not base.is_dir():
        raise RunDirError(f"{what} {path}: cannot be created, {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise RunDirError(f"{what} {path}: cannot be created, {base} is not writable")
