"""Data sets read from the user's files: `npz` and `csv`. A name ending in .npz or .csv is the
file's path, the names `npz` and `csv` take it from the option `path`; a relative path is
resolved against the spec's folder (`options["_base_dir"]`). Both take `test_fraction` (0) and
`seed` (0): a seeded split, stratified when `y` holds integer labels.

* npz: every array becomes a field named by its key; float arrays are cast to the dtype,
  integer arrays to int64 and bool arrays to the dtype. Pickled objects are never loaded.
* csv: numeric cells, optional header row naming the columns. `target` (last column; a name
  or an index) becomes `y`, the other columns `x`. `task` ("auto"): y is int64 when every
  target value is an integer unless `task = "regression"`; `task = "classification"` demands
  integers. `header` ("auto": the first row is a header when none of its cells is a number).

`resolve_path` is shared with the text loader.

This module must not import `dsl`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from runtime.train.data.dataset import DataError, Dataset, class_info
from runtime.train.data.registry import Options, did_you_mean, register
from runtime.train.data.splits import split_by_options
from runtime.train.npz import NpzError, read_npz

__all__ = ["resolve_path"]


def resolve_path(opts: Options) -> Path:
    """The file named by the option `path`, which must exist and be a regular file."""
    p = opts.as_str("path")
    if p is None:
        raise DataError(f"data set '{opts.dataset}' needs the option 'path' naming the file")
    path = Path(p).expanduser()
    base = opts.given.get("_base_dir")
    if not path.is_absolute() and base:
        path = Path(base) / path
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if not path.is_file():
        raise DataError(f"data file {path} is not a regular file")
    return path


@register("npz", path=None, test_fraction=0.0, seed=0)
def _load_npz(opts: Options, dtype: np.dtype) -> Dataset:
    """A NumPy .npz file (`path`): every array becomes a field named by its key; float arrays
    get the float dtype, integer ones int64. Pickled objects are never loaded."""
    path = resolve_path(opts)
    try:
        arrays = read_npz(path)
    except NpzError as e:
        raise DataError(f"data file {path} cannot be read: {e}") from e
    if not arrays:
        raise DataError(f"data file {path} holds no arrays; it needs at least one")
    n = None
    for key, a in arrays.items():
        if a.ndim == 0:
            raise DataError(
                f"data file {path}: array '{key}' is a scalar, but every array "
                "needs a first (sample) dimension"
            )
        if n is None:
            n, first = a.shape[0], key
        elif a.shape[0] != n:
            raise DataError(
                f"data file {path}: arrays '{first}' and '{key}' have different first "
                f"dimensions ({n} and {a.shape[0]} samples)"
            )
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)):
                raise DataError(f"data file {path}: array '{key}' contains NaN or infinity")
            arrays[key] = np.ascontiguousarray(a, dtype=dtype)
        elif a.dtype.kind == "b":
            arrays[key] = np.ascontiguousarray(a, dtype=dtype)
        elif a.dtype.kind in "iu":
            if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
                raise DataError(f"data file {path}: array '{key}' has values too large for int64")
            arrays[key] = np.ascontiguousarray(a, dtype=np.int64)
        else:
            raise DataError(
                f"data file {path}: array '{key}' has dtype {a.dtype}, but only "
                "float, integer and bool arrays are supported"
            )
    if n == 0:
        raise DataError(f"data file {path} holds no samples (the arrays have length 0)")
    y = arrays.get("y")
    strata = y if y is not None and y.dtype == np.int64 and y.ndim == 1 else None
    train, test = split_by_options(arrays, opts, strata)
    info: dict[str, Any] = {"path": str(path), "fields": list(arrays)}
    if strata is not None:
        info.update(class_info(strata))
    if "x" in arrays:
        info["n_features"] = int(np.prod(arrays["x"].shape[1:]))
    return Dataset(train, test, info)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


@register("csv", path=None, target=None, task="auto", header="auto", test_fraction=0.0, seed=0)
def _load_csv(opts: Options, dtype: np.dtype) -> Dataset:
    """A CSV file of numbers (`path`), with an optional header row: the `target` column
    (the last by default; a name or an index) is y, the others x. y is int64 when every target
    is an integer unless `task = "regression"`."""
    path = resolve_path(opts)
    task = opts.choice("task", ("auto", "classification", "regression"))
    header_opt = opts.raw("header")
    if header_opt != "auto" and not isinstance(header_opt, bool):
        raise opts.bad("header", 'true, false or "auto"', header_opt)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(i, row) for i, row in enumerate(csv.reader(f), start=1)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"data file {path} cannot be read: {e}") from e
    rows = [(i, [c.strip() for c in row]) for i, row in rows if any(c.strip() for c in row)]
    if not rows:
        raise DataError(f"data file {path} is empty")
    has_header = (
        header_opt if isinstance(header_opt, bool) else not any(_is_number(c) for c in rows[0][1])
    )
    names: list[str] | None = None
    if has_header:
        names = rows[0][1]
        rows = rows[1:]
        if not rows:
            raise DataError(f"data file {path} has a header but no data rows")
    width = len(names) if names is not None else len(rows[0][1])
    values = np.empty((len(rows), width), dtype=np.float64)
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(
                f"data file {path}: row {line} has {len(row)} columns, but the "
                f"{'header' if names is not None else 'first row'} has {width}"
            )
        try:
            values[r] = [float(c) for c in row]
        except ValueError:
            for c, cell in enumerate(row):
                if not _is_number(cell):
                    col = f"column {c + 1}" + (f" ('{names[c]}')" if names else "")
                    what = "is empty" if cell == "" else f"'{cell}' is not a number"
                    raise DataError(f"data file {path}: row {line}, {col}: {what}") from None
            raise
        if not np.all(np.isfinite(values[r])):
            c = int(np.flatnonzero(~np.isfinite(values[r]))[0])
            col = f"column {c + 1}" + (f" ('{names[c]}')" if names else "")
            raise DataError(f"data file {path}: row {line}, {col}: '{row[c]}' is not finite")
    if width < 2:
        raise DataError(
            f"data file {path} has {width} column; it needs a target column and at "
            "least one feature column"
        )
    t = _target_column(opts, names, width, path)
    y = values[:, t]
    x = np.delete(values, t, axis=1)
    integral = bool(np.all(y == np.round(y)))
    if task == "classification" and not integral:
        bad = int(np.flatnonzero(y != np.round(y))[0])
        raise DataError(
            f'data file {path}: task = "classification" needs integer targets, but '
            f"row {rows[bad][0]} has {rows[bad][1][t]}"
        )
    classify = integral and task != "regression"
    info: dict[str, Any] = {
        "path": str(path),
        "columns": None if names is None else [c for i, c in enumerate(names) if i != t],
        "target": names[t] if names is not None else t,
        "n_features": int(x.shape[1]),
    }
    if classify:
        yi = y.astype(np.int64)
        train, test = split_by_options({"x": x, "y": yi}, opts, strata=yi)
        info.update(class_info(yi))
    else:
        train, test = split_by_options({"x": x, "y": y}, opts, strata=None)
        info["task"] = "regression"
    for part in (train, test):
        if part is not None:
            part["x"] = np.ascontiguousarray(part["x"], dtype=dtype)
            if not classify:
                part["y"] = np.ascontiguousarray(part["y"], dtype=dtype)
    return Dataset(train, test, info)


def _target_column(opts: Options, names: list[str] | None, width: int, path: Path) -> int:
    target = opts.raw("target")
    if target is None:
        return width - 1
    if isinstance(target, str):
        if names is None:
            raise DataError(
                f"data file {path} has no header row, so option 'target' must be a column "
                f"index, not the name '{target}'"
            )
        hits = [i for i, c in enumerate(names) if c == target]
        if not hits:
            hint = did_you_mean(target, names)
            raise DataError(
                f"data file {path} has no column named '{target}'{hint}; columns: "
                f"{', '.join(names)}"
            )
        if len(hits) > 1:
            raise DataError(f"data file {path} has {len(hits)} columns named '{target}'")
        return hits[0]
    t = opts.as_int("target")
    assert t is not None
    if not -width <= t < width:
        raise DataError(
            f"option 'target' = {t} is out of range for data file {path}, which has {width} columns"
        )
    return t % width
