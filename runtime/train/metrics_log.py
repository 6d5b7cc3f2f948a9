"""`metrics.csv`: one row per logged training step and one per evaluation of a run.

Columns: `step`, `epoch` (epochs completed, fractional), `split`, `kind` (`step` for a
training row, `eval` for an evaluation), `seconds` (since this `fit` started), then every
objective and metric, then the learning rate(s). A training row (split `train`) holds each
objective averaged over the steps since the previous training row and the learning rate of its
step; an evaluation row holds the objectives and metrics on its split (`train`, `valid` or
`test`). Cells without a value are empty.

Values have 7 significant digits in float32 runs (what float32 holds) and all of them in
float64 runs. Every row is flushed when written, so the file follows a running training. A run
resumed from a checkpoint at step N keeps the rows up to step N and continues after them (rows
logged after the checkpoint, by a run killed later, are dropped); a run starting at step 0
starts a new file.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from runtime.train.runs import METRICS_NAME, RunDirError

__all__ = ["METRICS_NAME", "MetricsLog", "read_metrics"]

FIXED = ("step", "epoch", "split", "kind", "seconds")


def _cell(v: float | None, digits: int | None) -> str:
    if v is None:
        return ""
    return repr(float(v)) if digits is None else f"{float(v):.{digits}g}"


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a metrics.csv as dicts (an unreadable or malformed line is skipped)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        if None in row or any(v is None for v in row.values()):
            continue  # a line cut short (a run killed while writing it)
        rows.append(row)
    return rows


class MetricsLog:
    """Appends rows to `path` with the given value columns (objectives, metrics, rates)."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str],
                 resume_step: int, digits: int | None = None) -> None:
        """`digits`: significant digits of the values (None: all, for float64 runs)."""
        self.path = Path(path)
        self.digits = digits
        # a value named like a fixed column (a metric `split`) gets a trailing underscore
        self.names = list(dict.fromkeys(columns))
        self.columns = [*FIXED, *(c + "_" if c in FIXED else c for c in self.names)]
        kept: list[dict[str, str]] = []
        if resume_step > 0:
            for row in read_metrics(self.path):
                try:
                    if int(row["step"]) <= resume_step:
                        kept.append(row)
                except (KeyError, ValueError):
                    continue
        self._file: IO[str] | None = None
        self._open(kept)

    def _open(self, kept: list[dict[str, str]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, self.columns, restval="", extrasaction="ignore")
                w.writeheader()
                w.writerows(kept)
            os.replace(tmp, self.path)
            self._file = open(self.path, "a", newline="")
        except OSError as e:
            raise RunDirError(f"cannot write {self.path}: {e.strerror or e}") from e
        self._writer = csv.writer(self._file)

    def _write(self, step: int, epoch: float, split: str, kind: str, seconds: float,
               values: Mapping[str, float | None]) -> None:
        if self._file is None:
            return
        row = [str(step), f"{epoch:.6g}", split, kind, f"{seconds:.3f}"]
        row += [_cell(values.get(c), self.digits) for c in self.names]
        self._writer.writerow(row)
        self._file.flush()

    def step_row(self, step: int, epoch: float, seconds: float,
                 values: Mapping[str, float | None]) -> None:
        """A training row: objectives averaged since the last one, learning rates."""
        self._write(step, epoch, "train", "step", seconds, values)

    def eval_row(self, step: int, epoch: float, split: str, seconds: float,
                 values: Mapping[str, float | None]) -> None:
        """An evaluation row on `split`."""
        self._write(step, epoch, split, "eval", seconds, values)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
