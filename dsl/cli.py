"""The `dslrun` command line: train (default), check, graph, params, eval, check-grad, bench.

Every user mistake ends with one message (`file:line:col: error: ...` plus the source line and
a caret where there is a position) and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _usage_error(msg: str) -> Exception:
    """A mistake in the flags: reported like a spec error without a position, exit 1."""
    from dsl.errors import DslError

    return DslError(msg)


def _sets(items: list[str]) -> dict[str, str]:
    """`--set NAME=VALUE` flags; each VALUE is read by the type of what it replaces."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise _usage_error(f"--set needs NAME=VALUE, got '{it}'")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="a spec file or the name of a shipped spec")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a const or an input default")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=None)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dslrun", description="Train and inspect dslrun specs.")
    sub = ap.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train a spec (the default command)")
    _common(t)
    g = t.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int)
    g.add_argument("--epochs", type=int)
    t.add_argument("--batch", type=int)
    t.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    t.add_argument("--out", default=None, help="directory for the checkpoint (runs/<model>)")
    t.add_argument("--resume", metavar="CKPT", help="continue exactly from a checkpoint")
    t.add_argument("--init-from", metavar="CKPT", help="load weights only (fine-tuning)")
    t.add_argument("--json", metavar="PATH")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--nan-check", action="store_true",
                   help="run node by node and stop at the first non-finite value")
    c = sub.add_parser("check", help="parse, lower and infer shapes")
    _common(c)
    gr = sub.add_parser("graph", help="print a graph stage")
    _common(gr)
    gr.add_argument("--stage", choices=("forward", "grad", "step", "optimized"),
                    default="optimized")
    gr.add_argument("--format", choices=("text", "dot"), default="text")
    gr.add_argument("--dump-after", metavar="PASS")
    gr.add_argument("--locs", action="store_true", help="print source positions")
    pa = sub.add_parser("params", help="list parameters and state")
    _common(pa)
    e = sub.add_parser("eval", help="evaluate a checkpoint")
    _common(e)
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--split", choices=("test", "train"), default="test")
    e.add_argument("--json", metavar="PATH")
    e.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    cg = sub.add_parser("check-grad", help="finite-difference check of the spec's gradients")
    _common(cg)
    cg.add_argument("--order", type=int, choices=(1, 2), default=1)
    cg.add_argument("--tol", type=float, default=1e-4)
    b = sub.add_parser("bench", help="compile time and median step time")
    _common(b)
    b.add_argument("--steps", type=int, default=50)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    b.add_argument("--json", metavar="PATH")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMAND_FUNCS and not argv[0].startswith("-"):
        argv = ["train", *argv]
    ap = _parser()
    args = ap.parse_args(argv)
    if args.command is None:
        ap.print_help()
        return 2
    try:
        return COMMAND_FUNCS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        status = _report(e, args)
        if status is None:
            raise
        return status


def _report(e: Exception, args: argparse.Namespace) -> int | None:
    """Print a user-facing error and give the exit status; None for a bug (re-raised). The
    exception classes are imported here, on the error path, so that `check` starts fast."""
    from dsl.errors import DslError
    from runtime.errors import UserError
    from runtime.plan import NonFiniteError
    from runtime.train.loop import TrainingDiverged, TrainingInterrupted

    if isinstance(e, DslError):
        print(e.format(), file=sys.stderr)
        return 1
    if isinstance(e, TrainingInterrupted):
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    if isinstance(e, TrainingDiverged):
        print(f"error: {e}{_last_checkpoint(e, args)}", file=sys.stderr)
        return 1
    if isinstance(e, NonFiniteError):
        print(_non_finite(e), file=sys.stderr)
        return 1
    if isinstance(e, UserError):
        print(f"error: {e}", file=sys.stderr)
        return 1
    return None


def _last_checkpoint(e: Any, args: argparse.Namespace) -> str:
    """Where the last good state of a diverged run is: the checkpoint this run wrote last, or
    the one left from before (a diverged run never overwrites a checkpoint)."""
    from runtime.train.checkpoint import CheckpointError, load_checkpoint

    path = getattr(e.result, "checkpoint", None) if getattr(e, "result", None) else None
    if path is None:
        out = getattr(args, "_out_dir", None)
        path = out / "checkpoint.npz" if out is not None and (out / "checkpoint.npz").is_file() \
            else None
    if path is None:
        return "; no checkpoint was written"
    try:
        step = load_checkpoint(path)[1].get("step")
    except CheckpointError:
        return f"; the last checkpoint is {path}"
    return f"; the last good checkpoint is {path} (step {step})"


def _non_finite(e: Any) -> str:
    """A `--nan-check` finding, formatted like a compile error at the node's spec position."""
    from dsl.ast import Span
    from dsl.errors import RunErr

    loc = e.loc
    if loc is None or loc.line <= 0:
        return f"error: {e}"
    return RunErr(e.what, Span(loc.file, loc.line, loc.col, loc.line, loc.col + 1)).format()


def _check_pass_name(args: argparse.Namespace) -> None:
    from runtime.passes import PIPELINE

    name = getattr(args, "dump_after", None)
    names = [n for n, _ in PIPELINE]
    if name is not None and name not in names:
        from dsl.errors import did_you_mean

        raise _usage_error(f"--dump-after: unknown pass '{name}'" + did_you_mean(name, names)
                           + f"; the passes are: {', '.join(names)}")


def _compile(args: argparse.Namespace, dtype: str | None = None,
             optimize: bool = True) -> Any:
    from dsl.compiler import DTYPE_NAMES, compile_file

    _check_pass_name(args)
    dt = DTYPE_NAMES[dtype or args.dtype]
    c = compile_file(args.spec, overrides=_sets(args.set), dtype=dt, seed=args.seed,
                     dump_after=getattr(args, "dump_after", None), optimize=optimize)
    for w in c.warnings:
        print(w.format(), file=sys.stderr)
    return c


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    arr = np.asarray(v)
    if arr.ndim == 0:
        return f"{float(arr):.6g}" if arr.dtype.kind == "f" else str(arr.item())
    if arr.size <= 12:
        return np.array2string(arr, precision=6, separator=", ")
    return f"array{list(arr.shape)} mean={arr.mean():.6g} min={arr.min():.6g} max={arr.max():.6g}"


def cmd_check(args: argparse.Namespace) -> int:
    c = _compile(args, optimize=False)  # checking needs no optimization passes
    p = c.program
    print(f"{p.name}: ok")
    inputs = [f"{n}: {t}" for n, t in p.inputs.items() if n not in ("step", "epoch")]
    print("inputs:  " + (", ".join(inputs) or "none"))
    outs = [f"{k} {n}" for k, names in (("objective", p.objectives), ("metric", p.metrics),
                                         ("output", p.outputs)) for n in names]
    print("outputs: " + ", ".join(outs))
    n_train = p.param_count(trainable_only=True)
    n_all = p.param_count()
    extra = f" ({n_all - n_train} frozen)" if n_all != n_train else ""
    print(f"parameters: {n_all}{extra}")
    if p.data is not None:
        print(f"data: {p.data[0]}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from runtime.ir import to_dot

    c = _compile(args)
    if args.dump_after:
        for name, text in c.dumps.items():
            if len(c.dumps) > 1:
                print(f"# phase: {name}")
            print(text, end="")
        return 0
    if args.format == "dot":
        for _name, g in c.stages[args.stage]:
            print(to_dot(g), end="")
        return 0
    print(c.text(args.stage, locs=args.locs), end="")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from runtime.train.progress import format_table

    c = _compile(args)
    rows = []
    for name, v in c.program.variables.items():
        status = ("trainable" if v.trainable else "frozen") if v.role == "param" else "state"
        rows.append((name, str(v.type), str(v.size), v.kind, v.init, status))
    print(format_table(rows, ("name", "type", "size", "kind", "init", "role")))
    print(f"total parameters: {c.program.param_count()} "
          f"(trainable {c.program.param_count(trainable_only=True)})")
    return 0


def _data_free_outputs(model: Any) -> dict[str, np.ndarray]:
    """Values of the outputs that need no data input (printed after training)."""
    p = model.program
    g = p.forward
    data_inputs = {i for i, n in g.nodes.items() if n.op == "input"
                   and n.name not in p.input_defaults}
    names = []
    for n in p.outputs:
        anc = g.topo_order([g.outputs[n]])
        if not data_inputs.intersection(anc):
            names.append(n)
    return model.trainer.predict({}, outputs=names) if names else {}


def cmd_train(args: argparse.Namespace) -> int:
    from dsl.api import Model
    from runtime.train.progress import Progress, format_table

    if args.resume and args.init_from:
        raise _usage_error("--resume and --init-from exclude each other")
    c = _compile(args)
    p = c.program
    out_dir = Path(args.out) if args.out else Path("runs") / p.name
    args._out_dir = out_dir
    model = Model(c, backend=args.backend, out_dir=out_dir if p.phases else None,
                  batch=args.batch)
    if args.resume:
        model.load(args.resume)
        if not args.quiet:
            print(f"resumed from {args.resume} at step {model.trainer.step}", file=sys.stderr)
    elif args.init_from:
        model.load(args.init_from, weights_only=True)
    t0 = time.perf_counter()
    result = None
    if p.phases:
        progress = Progress(quiet=args.quiet)
        result = model.fit(steps=args.steps, epochs=args.epochs, nan_check=args.nan_check,
                           progress=progress)
    seconds = time.perf_counter() - t0
    metrics: dict[str, float] = {}
    if result is not None:
        split = "test" if "test" in result.metrics else "train"
        metrics = dict(result.metrics.get(split, {}))
    outputs = _data_free_outputs(model) if p.outputs else {}
    if not args.quiet:
        rows = [(k, _fmt(v)) for k, v in metrics.items()]
        if result is not None:
            rows = [("steps", str(result.step)), ("loss first", _fmt(result.loss_first)),
                    ("loss final", _fmt(result.loss_final))] + rows
        rows += [(k, _fmt(v)) for k, v in outputs.items()]
        title = f"{p.name}: " + (f"{split} split" if result is not None else "outputs")
        print(title)
        print(format_table(rows, ("name", "value")))
        if result is not None and result.checkpoint:
            print(f"checkpoint: {result.checkpoint}")
    if args.json:
        data = {
            "spec": args.spec, "steps": result.step if result else 0,
            "epochs": result.epochs if result else 0,
            "loss_first": result.loss_first if result else None,
            "loss_final": result.loss_final if result else None,
            "metrics": metrics, "params": p.param_count(), "seconds": seconds,
            "checkpoint": result.checkpoint if result else None,
            "outputs": {k: np.asarray(v).tolist() for k, v in outputs.items()
                        if np.asarray(v).size <= 1000},
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from dsl.api import Model
    from runtime.train.progress import format_table

    c = _compile(args)
    model = Model(c, backend=args.backend)
    model.load(args.checkpoint)
    metrics = model.evaluate(split=args.split)
    print(format_table([(k, _fmt(v)) for k, v in metrics.items()], ("name", "value")))
    if args.json:
        Path(args.json).write_text(json.dumps({"spec": args.spec, "metrics": metrics},
                                              indent=2) + "\n")
    return 0


def cmd_check_grad(args: argparse.Namespace) -> int:
    from dsl.api import Model
    from runtime.gradcheck import check_gradients
    from runtime.train.progress import format_table

    c = _compile(args, dtype="float64")
    p = c.program
    model = Model(c)
    feeds, dims = _one_batch(model)
    worst_all = 0.0
    rows = []
    objectives = p.meta.get("minimized") or p.objectives
    graph = c.stages["step" if p.phases else "forward"][0][1]
    if not objectives:
        raise _usage_error("check-grad: the spec has no objective")
    params = [n for n, v in p.variables.items() if v.role == "param" and v.trainable]
    values = {n: v.value.astype(np.float64) for n, v in p.variables.items()}
    for obj in objectives:
        if obj not in graph.outputs:
            continue
        res = check_gradients(graph, obj, params, values, feeds, dims, order=args.order,
                              seed=p.train.seed)
        for n, err in res.items():
            rows.append((obj, n, f"{err:.2e}", "ok" if err <= args.tol else "FAIL"))
            worst_all = max(worst_all, err)
    print(format_table(rows, ("objective", "parameter", "rel. error", "")))
    kind = "Hessian-vector products" if args.order == 2 else "gradients"
    verdict = "pass" if worst_all <= args.tol else "FAIL"
    print(f"{kind}: worst relative error {worst_all:.2e} (tolerance {args.tol:g}): {verdict}")
    return 0 if worst_all <= args.tol else 1


def _one_batch(model: Any) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """A small batch of training data (or the defaults) and the dims it binds."""
    p = model.program
    feeds: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in p.input_defaults.items()}
    ds = model.dataset
    if ds is not None:
        n = min(16, len(next(iter(ds.train.values()))))
        for k, v in ds.train.items():
            if k in p.inputs:
                feeds[k] = np.asarray(v[:n])
    from runtime.train.loop import bind_dims

    fed = [(name, t) for name, t in p.inputs.items() if name in feeds]
    return feeds, bind_dims(fed, feeds, "check-grad")


def cmd_bench(args: argparse.Namespace) -> int:
    from dsl.api import Model

    t0 = time.perf_counter()
    c = _compile(args)
    compile_ms = (time.perf_counter() - t0) * 1000
    model = Model(c, backend=args.backend)
    if not c.program.phases:
        raise _usage_error("bench: the spec has no training step")
    model.fit(steps=args.warmup, final_eval=False)
    stamps: list[float] = []

    def on_step(step: int, losses: dict[str, float]) -> None:
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    model.fit(steps=args.warmup + args.steps, on_step=on_step, final_eval=False)
    times = np.diff([start, *stamps]) * 1000
    data = {"spec": args.spec, "compile_ms": round(compile_ms, 3),
            "step_ms_median": round(float(np.median(times)), 4),
            "steps": int(len(times))}
    print(json.dumps(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


COMMAND_FUNCS = {"train": cmd_train, "check": cmd_check, "graph": cmd_graph,
                 "params": cmd_params, "eval": cmd_eval, "check-grad": cmd_check_grad,
                 "bench": cmd_bench}

if __name__ == "__main__":
    sys.exit(main())
