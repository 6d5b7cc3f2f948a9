"""The bodies of the `dslrun` commands (`cmd_train`, `cmd_check`, ... in `COMMAND_FUNCS`), the
helpers they share (compiling with the flags, `--set`, `--max-memory`, adopting a checkpoint's
run) and `report_error`: what a command raised, as the one message the user sees.

`dsl.cli` defines the arguments and dispatches to these. Everything past the standard library
and NumPy is imported inside the commands, so that `dslrun check` starts fast.
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


def report_error(e: Exception, args: argparse.Namespace) -> int | None:
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
        print(_non_finite(e) + _last_checkpoint(e, args).replace("; ", "\nnote: ", 1),
              file=sys.stderr)
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
    notes = tuple(f"input {line}" for line in e.inputs)
    return RunErr(e.what, Span(loc.file, loc.line, loc.col, loc.line, loc.col + 1),
                  notes).format()


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
    given = dtype or args.dtype
    dt = DTYPE_NAMES[given] if given is not None else None
    c = compile_file(args.spec, overrides=_sets(args.set), dtype=dt, seed=args.seed,
                     dump_after=getattr(args, "dump_after", None), optimize=optimize,
                     max_memory=_max_memory(getattr(args, "max_memory", None)))
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
    from dsl.summary import check_text, memory_row

    c = _compile(args, optimize=False)  # checking needs no optimization passes
    print(check_text(c, memory_row(c, _max_memory(args.max_memory))), end="")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from runtime.train.runs import check_file_target

    if args.format == "png" and not args.output:
        raise _usage_error("--format png writes a file: give -o FILE")
    if args.output:
        check_file_target(args.output, "-o")
    c = _compile(args)
    if args.dump_after:
        text = "".join((f"# phase: {name}\n" if len(c.dumps) > 1 else "") + dump
                       for name, dump in c.dumps.items())
    elif args.format == "text":
        text = c.text(args.stage, locs=args.locs)
    else:
        from dsl.render import render, stage_graphs
        from runtime.ir_dot import to_dot_many

        text = to_dot_many(stage_graphs(c, args.stage))
        if args.format != "dot":
            picture = render(text, args.format)
            if args.output:
                Path(args.output).write_bytes(picture)
                return 0
            text = picture.decode()
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
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


def _adopt_run(args: argparse.Namespace, run: Any, quiet: bool = False) -> None:
    """Take the overrides, dtype and seed of the run a checkpoint belongs to (its run.json)
    for what the command line does not give; an explicit flag that differs wins, with a note."""
    info = run.info()
    where = run.path / "run.json"
    given = _sets(args.set)
    saved = info.get("overrides") or {}
    notes = []
    for k, v in saved.items():
        text = ("true" if v else "false") if isinstance(v, bool) else (
            v if isinstance(v, str) else json.dumps(v))
        if k not in given:
            args.set = [f"{k}={text}", *args.set]
        elif given[k] != text:
            notes.append(f"--set {k}={given[k]} replaces {k}={text} of the run")
    for flag, key in (("dtype", "dtype"), ("seed", "seed")):
        mine, theirs = getattr(args, flag), info.get(key)
        if theirs is None:
            continue
        if mine is None:
            setattr(args, flag, theirs)
        elif mine != theirs:
            notes.append(f"--{flag} {mine} replaces {flag} {theirs} of the run")
    if notes and not quiet:
        print(f"note: {'; '.join(notes)} ({where})", file=sys.stderr)


def _model_name(spec: str) -> str:
    """The `model NAME` of a spec, from its (cached) parse: enough to find its runs."""
    from dsl import ast as A
    from dsl.cache import parse_cached
    from dsl.compiler import display_path, read_spec, resolve_spec

    path = resolve_spec(spec)
    body = parse_cached(read_spec(path), display_path(path)).body
    return next((s.name for s in body if isinstance(s, A.ModelDecl)), Path(spec).stem)


def _length_note(model: Any, args: argparse.Namespace) -> str | None:
    """A spec that says nothing about the run's length trains one epoch: say so, and how to
    train longer."""
    p = model.program
    if args.steps is not None or args.epochs is not None or p.train.steps is not None \
            or p.train.epochs is not None:
        return None
    per = model.trainer.steps_per_epoch(args.batch)
    full = per == 1 and model.trainer.settings.batch is None
    what = "1 full-batch step (one epoch)" if full else (
        f"one epoch ({per} step{'s' if per != 1 else ''})")
    return (f"note: the spec sets no length: training {what}; to train longer give "
            "train { steps = N } (or epochs = N) in the spec, or --steps N / --epochs N")


def _results_text(p: Any, result: Any, outputs: dict[str, Any]) -> str:
    """The final report: evaluation figures with one column per split (train, valid, test),
    the objective over the training steps, best and early stop, outputs, checkpoint."""
    from runtime.train.progress import format_table

    lines = []
    if result is not None:
        head = (f"{p.name}: step {result.step}, {result.epochs:.4g} epochs "
                f"({result.steps} steps in {result.seconds:.3g} s)")
        lines.append(head)
        splits = list(result.metrics)
        names = list(dict.fromkeys(n for s in splits for n in result.metrics[s]))
        if names:
            rows = [(n, *(_fmt(result.metrics[s][n]) if n in result.metrics[s] else ""
                          for s in splits)) for n in names]
            lines.append(format_table(rows, ("evaluation", *splits)).rstrip("\n"))
        for key, values in result.losses.items():
            if values:
                lines.append(f"{key} over the training steps (training mode): first "
                             f"{_fmt(values[0])}, last {_fmt(values[-1])}")
        b = result.best
        if b is not None and b.get("value") is not None:
            where = f" -> {b['path']}" if b.get("path") else ""
            lines.append(f"best {b['metric']} ({b['mode']}) on the {b['split']} split: "
                         f"{_fmt(b['value'])} at step {b['step']}{where}")
        if result.stopped == "early_stop" and b is not None:
            lines.append(f"stopped early at step {result.step}: {b['metric']} had not "
                         f"improved since step {b['step']}")
    if outputs:
        lines.append(format_table([(k, _fmt(v)) for k, v in outputs.items()],
                                  ("output", "value")).rstrip("\n"))
    if result is not None and result.checkpoint:
        lines.append(f"checkpoint: {result.checkpoint}")
    return "\n".join(lines)


def _max_memory(text: str | None) -> int | None:
    """`--max-memory SIZE` in bytes (None: the memory available decides)."""
    from runtime.train.memory import parse_size

    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as e:
        raise _usage_error(f"--max-memory: {e}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from runtime.train import distributed

    if not (args.distributed or distributed.launched()):
        return _train(args, None)
    session = distributed.Session()
    if session.rank:
        args.quiet, args.json = True, None  # rank 0 alone prints and writes
    try:
        status = _train(args, session)
    except BaseException as e:
        status = report_error(e, args) if isinstance(e, Exception) else 130
        if status is None:
            import traceback

            traceback.print_exc()
        session.abort(f"rank {session.rank} of {session.size} failed (its message is "
                      "above); stopping every rank", status or 1)
    session.barrier()
    return status


def _train(args: argparse.Namespace, session: Any) -> int:
    from dsl.api import Model, origin
    from runtime.train import runs
    from runtime.train.progress import Progress

    if args.resume and args.init_from:
        raise _usage_error("--resume and --init-from exclude each other")
    if args.init_strict and not args.init_from:
        raise _usage_error("--init-strict goes with --init-from CKPT")
    if args.json:  # a mistake in an output path must not cost a finished training
        runs.check_file_target(args.json, "--json")
    resume = runs.resolve_checkpoint(args.resume) if args.resume else None
    resumed_run = runs.run_of_checkpoint(resume) if resume is not None else None
    if args.out:
        runs.check_dir_target(args.out, "--out")
    elif resumed_run is not None:
        runs.check_dir_target(resumed_run.path, "the run directory of --resume")
    else:
        runs.check_dir_target("runs", "the runs directory")
    if resumed_run is not None:
        _adopt_run(args, resumed_run, args.quiet)
    dtype = args.dtype
    c = _compile(args, dtype=dtype)
    p = c.program
    if not p.phases and not p.outputs and c.procedures:  # nothing to train: run it
        first = next(iter(c.procedures))
        if not args.quiet:
            print(f"note: {p.name} has nothing to train; running its procedure '{first}' "
                  f"(dslrun sample {args.spec} [PROCEDURE] runs any of them)", file=sys.stderr)
        return cmd_sample(argparse.Namespace(**{**vars(args), "procedure": None,
                                                "checkpoint": None, "dtype": dtype}))
    model = Model(c, backend=args.backend, batch=args.batch,
                  max_memory=_max_memory(args.max_memory), plots=not args.no_plots)
    model.origin = origin(args.spec, _sets(args.set), dtype, args.seed)
    if session is not None and p.phases:
        from runtime.train.distributed import attach

        attach(model.trainer, session.comm)
    if resume is not None:
        model.load(resume)
        if not args.quiet:
            print(f"resumed from {args.resume} at step {model.trainer.step}", file=sys.stderr)
    elif args.init_from:
        match = model.init_from(args.init_from, strict=args.init_strict)
        if not args.quiet:
            print(f"init-from: {match.summary()}", file=sys.stderr)
    t0 = time.perf_counter()
    result = None
    if p.phases:
        total = model.trainer.target(args.steps, args.epochs)
        if model.trainer.step >= total:
            where = (f"the checkpoint {resume} is already at step {model.trainer.step}, and "
                     if resume is not None else "")
            print(f"nothing to train: {where}this run ends at step {total}; give a larger "
                  "--steps or --epochs to train on" + (" (dslrun eval shows its metrics)"
                                                       if resume is not None else ""),
                  file=sys.stderr)
            return 0
        note = _length_note(model, args)
        if note and not args.quiet:
            print(note, file=sys.stderr)
        out = args.out
        if out is None and resumed_run is not None:
            out = resumed_run.path  # a resumed run goes on in its own directory
        facts = {"command": ["dslrun", *sys.argv[1:]],
                 "resumed_from": str(resume) if resume else None, "init_from": args.init_from}
        if session is None or session.rank == 0:  # the other ranks write nothing
            run = model.start_run(out, **facts)
            args._out_dir = run.path
        progress = Progress(quiet=args.quiet)
        # rank 0 alone evaluates (its running statistics are the ones it saves)
        quiet_rank = {} if session is None or session.rank == 0 else {
            "evaluate": False, "final_eval": False}
        result = model.fit(steps=args.steps, epochs=args.epochs, nan_check=args.nan_check,
                           progress=progress, **quiet_rank)
    seconds = time.perf_counter() - t0
    outputs = _data_free_outputs(model) if p.outputs else {}
    if not args.quiet:
        print(_results_text(p, result, outputs))
    if args.json:
        by_split = result.metrics if result is not None else {}
        split = next((s for s in ("test", "valid", "train") if s in by_split), None)
        data = {
            "spec": args.spec, "steps": result.step if result else 0,
            "epochs": result.epochs if result else 0,
            "loss_first": result.loss_first if result else None,
            "loss_final": result.loss_final if result else None,
            "metrics": dict(by_split.get(split, {})) if split else {}, "split": split,
            "metrics_by_split": by_split, "params": p.param_count(), "seconds": seconds,
            "checkpoint": result.checkpoint if result else None,
            "run_dir": str(model.run_dir.path) if model.run_dir is not None else None,
            "stopped": result.stopped if result else None,
            "best": result.best if result else None,
            "lr": result.lr if result else {},
            "outputs": {k: np.asarray(v).tolist() for k, v in outputs.items()
                        if np.asarray(v).size <= 1000},
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from dsl.api import Model
    from runtime.train import runs
    from runtime.train.progress import format_table

    if args.json:
        runs.check_file_target(args.json, "--json")
    if args.checkpoint:
        ckpt = runs.resolve_checkpoint(args.checkpoint)
        run = runs.run_of_checkpoint(ckpt)
    else:
        run, note = runs.find_run("runs", _model_name(args.spec))
        ckpt = run.checkpoint
        if note:
            print(f"note: {note}", file=sys.stderr)
    if run is not None:
        _adopt_run(args, run)
    c = _compile(args, dtype=args.dtype)
    model = Model(c, backend=args.backend)
    meta = model.load(ckpt)
    split = args.split or model.default_split
    if args.split is None and split != "test":
        print(f"note: the data has no test split; reporting the {split} split",
              file=sys.stderr)
    metrics = model.evaluate(split=split)
    print(f"{c.program.name}: {split} split, checkpoint {ckpt} (step {meta.get('step')})")
    print(format_table([(k, _fmt(v)) for k, v in metrics.items()], ("name", split)), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"spec": args.spec, "checkpoint": str(ckpt), "step": meta.get("step"),
             "split": split, "metrics": metrics}, indent=2) + "\n")
    return 0


def cmd_check_grad(args: argparse.Namespace) -> int:
    from dsl.api import Model
    from runtime.gradcheck import gradient_report
    from runtime.train.progress import format_table

    c = _compile(args, dtype="float64")
    p = c.program
    model = Model(c)
    feeds, dims = _one_batch(model)
    errors: list[float] = []
    moved = skipped = 0
    kinks: list[str] = []
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
        for r in gradient_report(graph, obj, params, values, feeds, dims, order=args.order,
                                 seed=p.train.seed):
            # a probe across a kink measures no derivative: counted, never an error
            status = "kink" if r.error is None else "ok" if r.error <= args.tol else "FAIL"
            if r.skipped and r.error is not None:
                status += f" ({r.skipped}/{r.probes} probes at kinks)"
            rows.append((obj, r.name, "-" if r.error is None else f"{r.error:.2e}", status))
            errors += [] if r.error is None else [r.error]
            moved += r.moved
            skipped += r.skipped
            kinks += [k for k in r.kinks if k not in kinks]
    print(format_table(rows, ("objective", "parameter", "rel. error", "")))
    kind = "Hessian-vector products" if args.order == 2 else "gradients"
    worst = max(errors, default=0.0)
    verdict = "pass" if worst <= args.tol else "FAIL"
    note = ""
    if kinks:
        counts = [f"{k} probe{'s' if k > 1 else ''} {what}" for k, what in (
            (moved, "moved off kinks"), (skipped, "skipped at kinks")) if k]
        more = f" and {len(kinks) - 3} more" if len(kinks) > 3 else ""
        note = f" ({', '.join(counts)}: {', '.join(kinks[:3])}{more})"
    shown = f"{worst:.2e}" if errors else "- (every probe at a kink)"
    print(f"{kind}: worst relative error {shown} (tolerance {args.tol:g}): {verdict}{note}")
    return 0 if worst <= args.tol else 1


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
    from runtime.train import profile as prof
    from runtime.train.runs import check_file_target

    if args.json:
        check_file_target(args.json, "--json")
    t0 = time.perf_counter()
    c = _compile(args)
    compile_ms = (time.perf_counter() - t0 - c.data_seconds) * 1000  # data loading apart
    model = Model(c, backend=args.backend)
    if not c.program.phases:
        raise _usage_error("bench: the spec has no training step")
    with prof.recording_regions() as regions:  # the loop bodies, for the profile
        model.fit(steps=args.warmup, evaluate=False)
    stamps: list[float] = []

    def on_step(step: int, losses: dict[str, float]) -> None:
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    with prof.PeakRss() as rss:
        model.fit(steps=args.warmup + args.steps, on_step=on_step, evaluate=False)
    times = np.diff([start, *stamps]) * 1000
    step_ms = float(np.median(times))
    plans = prof.training_plans(model.trainer)
    # the kernels timed one by one over a few more steps (all of them with --profile)
    n_prof = args.steps if args.profile else 2
    done = model.trainer.step
    profile = prof.profile_steps(
        plans, regions, lambda on_step: model.fit(steps=done + n_prof, on_step=on_step,
                                                evaluate=False), n_prof, step_ms)
    gemm_ms = prof.gemm_bound_ms(profile.gemms) if args.backend == "numpy" else None
    data = {"spec": args.spec, "compile_ms": round(compile_ms, 3),
            "data_ms": round(c.data_seconds * 1000, 3),
            "step_ms_median": round(step_ms, 4), "steps": int(len(times)),
            "gemm_ms": None if gemm_ms is None else round(gemm_ms, 4),
            "plan_peak_bytes": max((prof.plan_peak_bytes(p) for p in plans), default=0),
            "rss_increase_bytes": rss.increase, "rss_method": rss.method}
    if args.profile:
        print(profile.text(), end="")
        data["profile"] = profile.as_dict()
    print(json.dumps({k: v for k, v in data.items() if k != "profile"}))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


def cmd_doc(args: argparse.Namespace) -> int:
    from dsl.reference import entry_text, reference_text

    print(reference_text() if args.name is None else entry_text(args.name), end="")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from dsl.reference import spec_summaries

    rows = spec_summaries()
    width = max(len(name) for name, _ in rows)
    for name, summary in rows:
        print(f"{name:<{width}}  {summary}".rstrip())
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from dsl.sample import sample

    return sample(args, _compile_with, _sets)


def _compile_with(args: argparse.Namespace, overrides: dict[str, str]) -> Any:
    """`_compile` with these overrides instead of all of `--set` (sample keeps a procedure's
    arguments for the procedure)."""
    _check_pass_name(args)
    from dsl.compiler import DTYPE_NAMES, compile_file

    c = compile_file(args.spec, overrides=overrides,
                     dtype=DTYPE_NAMES[args.dtype] if args.dtype else None, seed=args.seed)
    for w in c.warnings:
        print(w.format(), file=sys.stderr)
    return c


def cmd_export(args: argparse.Namespace) -> int:
    from dsl.onnx.commands import export_command
    from runtime.train import runs

    if args.checkpoint and args.spec:  # the overrides, dtype and seed of the checkpoint's run
        run = runs.run_of_checkpoint(runs.resolve_checkpoint(args.checkpoint))
        if run is not None:
            _adopt_run(args, run)
    return export_command(args, _compile)


def cmd_import(args: argparse.Namespace) -> int:
    from dsl.onnx.commands import import_command

    return import_command(args)


COMMAND_FUNCS = {"train": cmd_train, "check": cmd_check, "graph": cmd_graph,
                 "params": cmd_params, "eval": cmd_eval, "check-grad": cmd_check_grad,
                 "bench": cmd_bench, "sample": cmd_sample, "doc": cmd_doc, "list": cmd_list,
                 "export": cmd_export, "import": cmd_import}
