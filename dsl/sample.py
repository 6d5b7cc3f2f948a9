"""`dslrun sample SPEC [PROCEDURE]`: run a procedure with trained parameters and save what it
returns.

The parameters come from `--checkpoint` or the latest run of the spec's model
(`runs/<model>/latest`); a spec with parameters and no checkpoint is an error saying how to get
one, a spec without parameters needs none. `--set NAME=VALUE` sets a procedure argument (or,
for other names, a const as everywhere). Each returned value's shape and summary statistics are
printed (token ids of a text data set also decoded to text), and all of them are written to
`DIR/<procedure>.npz` (DIR: `--out`, else the run directory of the checkpoint, else
`runs/<model>`), with a picture of them in `DIR/<procedure>.png` (`runtime.train.pictures`:
images as a grid, 2-D points over the training data, series as lines; `--no-plots`: none).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["sample"]


def _summary(v: np.ndarray) -> str:
    if v.size == 0:
        return "(empty)"
    if v.dtype.kind not in "fiub":
        return ""
    f = v.astype(np.float64)
    return (f"mean {f.mean():.6g}  std {f.std():.6g}  min {f.min():.6g}  "
            f"max {f.max():.6g}")


def _print_text(name: str, ids: np.ndarray, vocab: Any, rows: int = 8) -> None:
    """Token ids of a text data set, decoded with its vocabulary: one block per row."""
    for r, row in enumerate(ids.reshape(-1, ids.shape[-1])[:rows]):
        label = name if ids.ndim == 1 else f"{name}[{r}]"
        print(f"--- {label} (decoded) ---")
        print(vocab.decode(row))
    if ids.ndim == 2 and ids.shape[0] > rows:
        print(f"--- ({ids.shape[0] - rows} more rows in the .npz) ---")


def sample(args: argparse.Namespace, compile_spec: Any, sets: Any) -> int:
    """The command; `compile_spec(args, overrides)` and `sets(args.set)` come from the CLI."""
    from dsl.api import Model
    from dsl.procedures import find
    from runtime.train import runs
    from runtime.train.checkpoint import save_arrays

    if args.json:
        runs.check_file_target(args.json, "--json")
    if args.out:
        runs.check_dir_target(args.out, "--out")
    given = sets(args.set)
    d_names = _procedure_params(args.spec, args.procedure)
    c = compile_spec(args, {k: v for k, v in given.items() if k not in d_names})
    p = c.program
    d = find(c.procedures, args.procedure, p.name)
    proc_args = {k: v for k, v in given.items() if k in d_names}
    model = Model(c)
    ckpt = None
    if args.checkpoint:
        ckpt = runs.resolve_checkpoint(args.checkpoint)
    elif p.param_count():
        run, note = runs.find_run("runs", p.name)  # an error saying how to get one if none
        ckpt = run.checkpoint
        if note:
            print(f"note: {note}", file=sys.stderr)
    if ckpt is not None:
        model.load(ckpt, weights_only=True)
    seed = args.seed if args.seed is not None else p.train.seed
    out = model.run(d.name, seed=seed, **proc_args)
    source = f"checkpoint {ckpt}" if ckpt is not None else "no parameters"
    print(f"{p.name}: {d.name} ({source}, seed {seed})")
    width = max(len(k) for k in out) if out else 0
    vocab = getattr(model.dataset, "vocab", None) if p.data is not None else None
    for k, v in out.items():
        shape = "[" + ", ".join(str(s) for s in v.shape) + "]"
        print(f"  {k.ljust(width)}  {v.dtype.name}{shape}  {_summary(v)}")
        if vocab is not None and v.dtype.kind in "iu" and 1 <= v.ndim <= 2:
            _print_text(k, v, vocab)
    target_dir = Path(args.out) if args.out else (
        ckpt.parent if ckpt is not None else Path("runs") / p.name)
    path = save_arrays(target_dir / f"{d.name}.npz", out)
    print(f"saved: {path}")
    picture = None
    if not getattr(args, "no_plots", False):
        from runtime.train.pictures import draw_samples

        def training_points() -> Any:
            ds = model.dataset if p.data is not None else None
            return ds.train.get("x") if ds is not None else None

        picture = draw_samples(out, target_dir / f"{d.name}.png", f"{p.name}: {d.name}",
                               training_points)
        if picture is not None:
            print(f"picture: {picture}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"spec": args.spec, "procedure": d.name, "seed": seed, "file": str(path),
             "picture": str(picture) if picture is not None else None,
             "checkpoint": str(ckpt) if ckpt is not None else None,
             "values": {k: {"shape": list(v.shape), "dtype": v.dtype.name,
                            "summary": _summary(v)} for k, v in out.items()}},
            indent=2) + "\n")
    return 0


def _procedure_params(spec: str, name: str | None) -> set[str]:
    """The argument names of the procedure to run (from the cached parse): `--set` gives
    those to the procedure, the rest to consts."""
    from dsl import ast as A
    from dsl.cache import parse_cached
    from dsl.compiler import display_path, read_spec, resolve_spec

    path = resolve_spec(spec)
    procs = [s for s in parse_cached(read_spec(path), display_path(path)).body
             if isinstance(s, A.ProcedureDef)]
    chosen = [d for d in procs if d.name == name] if name else procs[:1]
    return {q.name for d in chosen for q in d.params}
