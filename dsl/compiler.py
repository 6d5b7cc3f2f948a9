"""From spec text to a `runtime.program.Program`: parse, resolve includes, lower in train and
eval mode, assemble the training phases, and run the pass pipeline.

Stages, as printed by `dslrun graph --stage`: `forward` (eval-mode graph), `grad` (train-mode
forward plus the gradients of each objective), `step` (the training step: gradients and
update rules), `optimized` (the step after the pass pipeline).
"""

from __future__ import annotations

import functools
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dsl import ast as A
from dsl.cache import parse_cached
from dsl.data_check import check_data
from dsl.errors import (
    DataErr,
    DslError,
    DslWarning,
    NameErr,
    TypeErr,
    did_you_mean,
    register_source,
)
from dsl.lower import Lowered, OptUse, lower
from runtime.dtypes import COMPUTE_FLOATS, DEFAULT_FLOAT, np_dtype
from runtime.ir import Graph, with_gc_paused
from runtime.ops import Val, to_text
from runtime.passes import run_pipeline
from runtime.program import Phase, Program, TrainSettings
from runtime.train.best import direction
from runtime.train.data import DataError, check_dataset, check_sampling, load_dataset
from runtime.train.data.dataset import data_memory_limit

if TYPE_CHECKING:
    from dsl.procedures import ProcedureGraph

STAGES = ("forward", "grad", "step", "optimized")
MAX_SPEC_BYTES = 1 << 24  # 16 MiB: a larger file is no spec, and would take minutes to parse
# the float type a program computes in (`--dtype`, `dtype=`), named as NumPy or as the language
DTYPE_NAMES = {name: dt for dt in COMPUTE_FLOATS for name in (np_dtype(dt).name, dt)}


@functools.lru_cache(maxsize=1)
def prelude() -> tuple[A.Stmt, ...]:
    text = resources.files("dsl").joinpath("prelude.dl").read_text()
    return parse_cached(text, "<prelude>").body


def shipped_specs() -> dict[str, Path]:
    """Name -> path of every spec shipped in the `specs` package (bench ones as bench/x)."""
    root = Path(str(resources.files("specs")))
    out = {}
    for p in sorted(root.rglob("*.dl")):
        rel = p.relative_to(root).with_suffix("")
        out[rel.as_posix()] = p
        out.setdefault(p.stem, p)
    return out


def resolve_spec(path_or_name: str) -> Path:
    """A path to an existing file, or the name of a shipped spec (`mlp_digits`)."""
    p = Path(path_or_name)
    if p.exists():
        if p.is_dir():
            raise DslError(f"{path_or_name}: is a directory, not a spec file")
        return p
    specs = shipped_specs()
    key = path_or_name[:-3] if path_or_name.endswith(".dl") else path_or_name
    if key in specs:
        return specs[key]
    if "/" in path_or_name or path_or_name.endswith(".dl"):
        raise DslError(f"{path_or_name}: no such file")
    raise DslError(f"no spec named '{path_or_name}' (not a file, not a shipped spec)"
                   + did_you_mean(key, specs))


def read_spec(path: Path, span: A.Span | None = None) -> str:
    """The text of a spec file: a regular UTF-8 text file of at most MAX_SPEC_BYTES (an
    included one has its errors at the include's `span`). A directory, a device or a FIFO
    (reading `/dev/zero` never ends) and binary files are errors."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            what = "is a directory" if stat.S_ISDIR(info.st_mode) else "is not a regular file"
            raise DslError(f"{path}: {what}, not a spec file", span)
        if info.st_size > MAX_SPEC_BYTES:
            raise DslError(f"{path}: {info.st_size:,} bytes is too large for a spec file (at "
                           f"most {MAX_SPEC_BYTES:,})", span)
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DslError(f"{path}: not a text file (not UTF-8)", span) from None
    except OSError as e:
        raise DslError(f"{path}: cannot read ({e.strerror})", span) from None
    if "\0" in text:
        raise DslError(f"{path}: not a text file (it holds NUL bytes)", span)
    return text


def display_path(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def _parse(text: str, file: str, cached: bool) -> A.Program:
    if cached:
        return parse_cached(text, file)
    from dsl.parser import check_nesting, parse  # imports Lark: ~50 ms a cache hit saves

    return check_nesting(parse(text, file))


def parse_with_includes(text: str, file: str, stack: tuple[str, ...] = (),
                        cached: bool = False) -> tuple[A.Stmt, ...]:
    """The statements of a spec with its includes spliced in. `cached`: the text was read from
    a file, so its AST (and those of its includes) may come from and go to `dsl.cache`."""
    prog = _parse(text, file, cached)
    out: list[A.Stmt] = []
    for s in prog.body:
        if not isinstance(s, A.Include):
            out.append(s)
            continue
        base = Path(file).parent if file not in ("<string>",) else Path.cwd()
        target = (base / s.path).resolve()
        key = str(target)
        if key in stack or key == str(Path(file).resolve()):
            chain = " -> ".join([*(Path(x).name for x in stack), Path(file).name, target.name])
            raise NameErr(f"include cycle: {chain}", s.span)
        if not target.exists():
            raise NameErr(f"include: no file '{s.path}' (looked in {base})", s.span)
        shown = display_path(target)
        sub = parse_with_includes(read_spec(target, s.span), shown,
                                  (*stack, str(Path(file).resolve())), cached)
        out.extend(x for x in sub if not isinstance(x, (A.ModelDecl, A.TrainDecl, A.DataDecl)))
    return tuple(out)


@dataclass(frozen=True)
class ProcedureSource:
    stmts: tuple[A.Stmt, ...]
    float_dtype: str
    overrides: dict[str, Any]
    load_data: Callable[[A.DataDecl], Any]
    dtype_forced: bool = False  # see compile_spec's `dtype`


@dataclass
class Compiled:
    """A Program plus the printable stages of its graphs."""

    program: Program
    stages: dict[str, list[tuple[str, Graph]]] = field(default_factory=dict)
    passes: list[str] = field(default_factory=list)
    dumps: dict[str, str] = field(default_factory=dict)
    procedures: dict[str, A.ProcedureDef] = field(default_factory=dict)
    dataset: Any = None  # the data set, when compiling needed it (train.x constants)
    data_seconds: float = 0.0  # of the compile, spent loading the data set
    warnings: list[DslWarning] = field(default_factory=list)  # in source order
    # what lowering a procedure needs again: the statements, the dtype, the overrides and
    # the data loader (procedures are lowered per call: their arguments may be shapes)
    source: ProcedureSource | None = None

    def procedure(self, name: str | None, args: dict[str, Any]) -> ProcedureGraph:
        """The procedure `name` lowered for `args` (see `dsl.procedures`)."""
        from dsl.procedures import procedure_graph

        return procedure_graph(self, name, args)

    def text(self, stage: str, locs: bool = False) -> str:
        """The canonical text of a stage (one graph per phase); stage "procedures": each
        procedure lowered with its default arguments and optimized; stage "planned": the
        optimized step with its memory plan (`runtime.plan.assign`) as comment lines."""
        if stage == "planned":
            return self._planned_text(locs)
        if stage == "procedures":
            from dsl.procedures import procedure_graph

            return "\n".join(
                f"# procedure: {n}\n" + to_text(procedure_graph(self, n, {}, False).graph,
                                                stage=stage, passes=self.passes, locs=locs)
                for n in self.procedures)
        parts = []
        for name, g in self.stages[stage]:
            passes = self.passes if stage == "optimized" else ()
            head = f"# phase: {name}\n" if name else ""
            parts.append(head + to_text(g, stage=stage, passes=passes, locs=locs))
        return "\n".join(parts)

    def _planned_text(self, locs: bool) -> str:
        """Each optimized phase graph and the buffers of the step training runs (the
        objective and learning rates, and the updates) on NumPy."""
        from runtime.plan.assign import plan_memory
        from runtime.plan.out_kernels import NUMPY_KERNELS

        phases = self.program.phases
        parts = []
        for k, (name, g) in enumerate(self.stages["optimized"]):
            # a spec without training: the forward graph's outputs
            outputs = phases[k].fetched if k < len(phases) else None
            head = f"# phase: {name}\n" if name else ""
            parts.append(head + to_text(g, stage="planned", passes=self.passes, locs=locs)
                         + plan_memory(g, NUMPY_KERNELS, outputs).text(g))
        return "\n".join(parts)


def data_options(decl: A.DataDecl, file: str) -> tuple[str, dict[str, Any]]:
    opts: dict[str, Any] = {}
    for k in decl.source.kwargs:
        try:
            opts[k.name] = _literal(k.value)
        except TypeErr:
            raise TypeErr(f"data option '{k.name}' must be a literal", k.span) from None
    if decl.source.args:
        first = decl.source.args[0]
        if not isinstance(first, A.Str):
            raise TypeErr("data takes options as name = value", first.span)
        opts["path"] = first.value
    base = str(Path(file).parent) if file not in ("<string>",) else os.getcwd()
    opts["_base_dir"] = base
    return decl.source.func, opts


def _literal(e: A.Expr) -> Any:
    if isinstance(e, (A.Num, A.Str, A.Bool)):
        return e.value
    if isinstance(e, A.UnaryOp) and e.op == "-" and isinstance(e.operand, A.Num):
        return -e.operand.value
    if isinstance(e, A.ListExpr):
        return [_literal(i) for i in e.items]
    raise TypeErr("expected a literal", e.span)


def load_program_data(name: str, opts: dict[str, Any], span: A.Span | None, dtype: str,
                      max_memory: int | None = None) -> Any:
    """Load a data set, a generated one sized against `max_memory` bytes when given
    (`--max-memory`, `ensure_room`); its errors become spec errors at the `data` line."""
    try:
        with data_memory_limit(max_memory):
            return load_dataset(name, opts, dtype=dtype)
    except DataError as e:
        raise DataErr(str(e), span) from None


def _settings(low: Lowered, warnings: list[DslWarning]) -> TrainSettings:
    """The `train { }` settings, each checked at its span; spec-level doubts go to
    `warnings`."""
    ts = TrainSettings()
    spans = {s.name: s.span for s in (low.train_decl.settings if low.train_decl else ())}
    checks = {"batch": (int, 1), "epochs": (int, 0), "steps": (int, 0), "seed": (int, 0),
              "eval_every": (int, 0), "checkpoint_every": (int, 0), "log_every": (int, 0),
              "early_stop": (int, 0)}
    given = low.train_settings
    for k, v in given.items():
        if k in ("order",):
            continue
        if k in checks:
            typ, lo = checks[k]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise TypeErr(f"train setting '{k}' must be an integer >= {lo}, got {v!r}",
                              spans.get(k))
            v = int(v)
        elif k == "sampling":
            if v not in ("shuffle", "with_replacement", "sequential"):
                raise TypeErr(f"sampling must be \"shuffle\", \"with_replacement\" or "
                              f"\"sequential\", got {v!r}" + did_you_mean(str(v), [
                                  "shuffle", "with_replacement", "sequential"]), spans.get(k))
        elif k == "drop_last" and not isinstance(v, bool):
            raise TypeErr("drop_last must be true or false", spans.get(k))
        elif k in ("clip_norm", "clip_value"):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or v < 0:
                raise TypeErr(f"{k} is a number >= 0 (0: no clipping), got {v!r}",
                              spans.get(k))
            v = float(v)
        elif k == "validation":
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) \
                    or not 0 <= v < 1:
                raise TypeErr(f"validation is the fraction of the training data held out, "
                              f"from 0 to below 1 (e.g. 0.1), got {v!r}", spans.get(k))
            v = float(v)
        elif k == "keep_best":
            results = [*low.objectives, *low.metrics]
            if not isinstance(v, str) or v not in results:
                what = f"'{v}'" if isinstance(v, str) else repr(v)
                raise TypeErr(f"keep_best names an objective or metric, and {what} is none "
                              f"(they are: {', '.join(results) or 'none'})"
                              + (did_you_mean(v, results) if isinstance(v, str) else ""),
                              spans.get(k))
        elif k == "keep_best_mode" and v not in ("min", "max"):
            raise TypeErr(f"keep_best_mode must be \"min\" or \"max\", got {v!r}",
                          spans.get(k))
        setattr(ts, k, v)
    if "steps" in given and "epochs" in given:
        later = max(("steps", "epochs"), key=lambda k: (spans[k].line, spans[k].col))
        raise TypeErr("give steps or epochs, not both: the run ends at whichever is given "
                      "(--steps/--epochs on the command line replace it)", spans.get(later))
    if "keep_best_mode" in given and "keep_best" not in given:
        raise TypeErr("keep_best_mode needs keep_best = METRIC", spans.get("keep_best_mode"))
    judged = ts.keep_best or (next(iter(low.objectives), None) if ts.early_stop else None)
    if judged is not None:
        kind = "objective" if judged in low.objectives else "metric"
        if ts.keep_best_mode is None and direction(judged, kind) is None:
            raise TypeErr(f"cannot tell whether a high or a low '{judged}' is better: add "
                          "keep_best_mode = \"max\" (or \"min\")", spans.get("keep_best"))
        if not ts.validation:
            setting = "keep_best" if ts.keep_best else "early_stop"
            warnings.append(DslWarning(
                f"{setting} without validation judges '{judged}' on the test split (or the "
                "training data when there is none), so the model is chosen on the data it is "
                "reported on; hold some training data out with validation = 0.1",
                spans.get(setting)))
    return ts


def _lr_outputs(low: Lowered, uses: list[OptUse], dtype: str,
                taken: list[str]) -> dict[int, tuple[str, int]]:
    """The learning rate of each optimizer use that has a scalar `lr` option (a number, or an
    expression of step and epoch such as a schedule): id(use) -> (output name, node). The
    name is `lr` when one optimizer has one, else `lr.<objective>` (`lr.<objective>.2` for a
    second optimizer of the same objective)."""
    found: list[tuple[OptUse, int]] = []
    for u in uses:
        v = u.options.get("lr")
        if isinstance(v, Val):
            if v.type.rank == 0 and v.type.is_float:
                found.append((u, v.id))
        elif isinstance(v, int | float | np.number) and not isinstance(v, bool):
            found.append((u, low.builder.const(float(v), dtype).id))  # the rule's constant
    out: dict[int, tuple[str, int]] = {}
    for u, nid in found:
        name = "lr" if len(found) == 1 and "lr" not in taken else f"lr.{u.objective}"
        k = 2
        while name in taken or name in {n for n, _ in out.values()}:
            name, k = f"lr.{u.objective}.{k}", k + 1
        out[id(u)] = (name, nid)
    return out


@with_gc_paused  # a large graph: see runtime.ir.gc_paused
def compile_spec(text: str, file: str = "<string>", overrides: dict[str, Any] | None = None,
                 dtype: str | None = None, seed: int | None = None, optimize: bool = True,
                 dump_after: str | None = None, cached: bool = False,
                 max_memory: int | None = None) -> Compiled:
    """Compile spec text. Raises DslError subclasses for every user mistake. `dtype` ("f32"
    or "f64", `--dtype`) makes every float that dtype; None (the default) computes in f32 and
    honors a float dtype the spec writes (`param w: f64[3]`). `cached`: see
    `parse_with_includes` (spec files, not strings: a string would replace the entry of the
    last one each time). `max_memory` (bytes, `--max-memory`): see `load_program_data`."""
    forced = dtype is not None
    dtype = dtype or DEFAULT_FLOAT
    register_source(file, text)
    stmts = parse_with_includes(text, file, cached=cached)
    loaded: dict[str, Any] = {}  # the data set, loaded once for both lowerings and the Model

    def loader(decl: A.DataDecl) -> Any:
        if "data" not in loaded:
            t0 = time.perf_counter()
            name, opts = data_options(decl, file)
            loaded["data"] = load_program_data(name, opts, decl.span, dtype, max_memory)
            loaded["seconds"] = time.perf_counter() - t0
        return loaded["data"]

    tl = lower(stmts, prelude(), "train", float_dtype=dtype, overrides=overrides,
               data_loader=loader, dtype_forced=forced)
    el = lower(stmts, prelude(), "eval", float_dtype=dtype, overrides=overrides,
               data_loader=loader, dtype_forced=forced)
    if tl.model_name is None:
        raise NameErr("a spec starts with 'model NAME'", A.Span(file, 1, 1, 1, 2))
    if not (tl.objectives or tl.outputs or tl.metrics or tl.procedures):
        raise NameErr("missing objective: declare 'objective NAME = ...' (or an 'output', "
                      "or a 'procedure')",
                      A.Span(file, 1, 1, 1, 2))
    if tl.data_decl is not None:
        try:
            check_dataset(*data_options(tl.data_decl, file))
        except DataError as e:
            raise DataErr(str(e), tl.data_decl.span) from None
    warnings = list(tl.warnings)
    if tl.objectives and not tl.opt_uses and not tl.update_blocks and not tl.outputs:
        name = next(iter(tl.objectives))
        warnings.append(DslWarning(
            f"objective '{name}' is minimized by no optimizer, so training changes nothing; "
            f"add 'optimizer adam() minimize {name}' (or declare a value that is only "
            "computed as an 'output')", tl.decl_spans.get(name)))
    settings = _settings(tl, warnings)
    if seed is not None:
        settings.seed = seed
    tl.seed.value = settings.seed  # initial values are drawn later, from this seed

    # the training phases
    order = tl.train_settings.get("order")
    phases_spec: list[tuple[str, list[OptUse], str]] = []  # name, optimizer uses, objective
    if order:
        for name in order:
            uses = [u for u in tl.opt_uses if u.objective == name]
            if not uses:
                span = next(s.span for s in tl.train_decl.settings if s.name == "order")
                raise NameErr(f"order names '{name}', which no optimizer minimizes"
                              + did_you_mean(name, [u.objective for u in tl.opt_uses]), span)
            phases_spec.append((name, uses, name))
    elif tl.opt_uses or tl.state_updates:
        obj = tl.opt_uses[0].objective if tl.opt_uses else (next(iter(tl.objectives), ""))
        phases_spec.append(("train" if tl.opt_uses else "update", list(tl.opt_uses), obj))
    for name in el.variables:
        if name not in tl.variables:
            raise TypeErr(f"variable '{name}' exists only in evaluation mode")

    stages: dict[str, list[tuple[str, Graph]]] = {s: [] for s in STAGES}
    fwd = el.graph.copy()
    stages["forward"].append(("", fwd))
    dumps: dict[str, str] = {}
    fwd_opt, passes_run, d = run_pipeline(fwd, dump_after=dump_after) if optimize else (
        fwd, [], None)
    if d is not None:
        dumps["forward"] = d
    phases = []
    results = list(tl.objectives) + list(tl.metrics)
    outputs = {n: tl.graph.outputs[n] for n in results}
    kinds = {n: tl.graph.output_kinds[n] for n in results}
    rates = _lr_outputs(tl, [u for _, uses, _ in phases_spec for u in uses], dtype, results)
    for name, uses, obj in phases_spec:
        label = name if len(phases_spec) > 1 else ""
        g = tl.graph.copy()
        g.outputs, g.output_kinds = dict(outputs), dict(kinds)
        grad_view = g.copy()
        for u in uses:
            for var, gid in u.grads.items():
                grad_view.outputs[f"{var}.grad"] = gid
                grad_view.output_kinds[f"{var}.grad"] = "grad"
        stages["grad"].append((label, grad_view))
        for u in uses:  # read by the trainer with the objective, for progress and metrics.csv
            if id(u) in rates:
                g.outputs[rates[id(u)][0]] = rates[id(u)][1]
                g.output_kinds[rates[id(u)][0]] = "lr"
        g.updates = {**tl.state_updates, **{k: v for u in uses for k, v in u.updates.items()}}
        stages["step"].append((label, g))
        opt, passes_run, d = run_pipeline(g, dump_after=dump_after) if optimize else (g, [], None)
        if d is not None:
            dumps[name] = d
        stages["optimized"].append((label, opt))
        phases.append(Phase(name, opt, obj, step=g,
                            grads={k: v for u in uses for k, v in u.grads.items()}))
    if not phases_spec:
        stages["grad"] = [("", fwd)]
        stages["step"] = [("", fwd)]
        stages["optimized"] = [("", fwd_opt)]

    program = Program(
        name=tl.model_name, forward=fwd_opt, phases=phases, variables=dict(tl.variables),
        inputs=dict(tl.inputs), input_defaults=dict(tl.input_defaults),
        objectives=list(tl.objectives), metrics=list(tl.metrics), outputs=list(tl.outputs),
        data=data_options(tl.data_decl, file) if tl.data_decl else None, train=settings,
        float_dtype=dtype, source=file,
    )
    for n in el.inputs:
        if n not in program.inputs:
            program.inputs[n] = el.inputs[n]
    for n, v in el.input_defaults.items():
        program.input_defaults.setdefault(n, v)
    program.meta["data_span"] = tl.data_decl.span if tl.data_decl else None
    program.meta["input_spans"] = {n: tl.decl_spans[n] for n in program.inputs
                                   if n in tl.decl_spans}
    program.meta["minimized"] = list(dict.fromkeys(u.objective for u in tl.opt_uses))
    program.meta["optimizers"] = [f"{u.rule} minimize {u.objective}" for u in tl.opt_uses]
    if tl.data_decl is not None:  # `check` finds what training would find
        dataset = loader(tl.data_decl)
        check_data(program, dataset)
        try:
            check_sampling(dataset.info, settings.sampling)
        except DataError as e:
            spans = {s.name: s.span for s in (tl.train_decl.settings if tl.train_decl else ())}
            raise DataErr(str(e), spans.get("sampling"),
                          (f"the data set is declared at {tl.data_decl.span.file}:"
                           f"{tl.data_decl.span.line}:{tl.data_decl.span.col}",)) from None
    return Compiled(program, stages, passes_run, dumps, dict(tl.procedures),
                    loaded.get("data"), loaded.get("seconds", 0.0), warnings,
                    ProcedureSource(stmts, dtype, dict(overrides or {}), loader, forced))


def compile_file(path_or_name: str, **kw: Any) -> Compiled:
    path = resolve_spec(path_or_name)
    return compile_spec(read_spec(path), display_path(path), cached=True, **kw)
