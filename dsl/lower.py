"""Lowering: a spec's AST becomes graphs, variables and settings (a `runtime.program.Program`).

An interpreter walks the statements. Compile-time values (numbers, strings, lists, NumPy
constants, shapes) are computed directly; tensor expressions emit nodes through a
`runtime.ops.Builder`. `def` call sites own their weights (`dense1`, `dense2` per body, in
source order), a `net` shares one set of weights across all its calls, `repeat` gives each
repetition its own scope. Names are hierarchical (`classifier.dense1.W`) and are the same in
errors, graph text, checkpoints and selections.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsl import ast as A
from dsl.errors import DslError, DslWarning, NameErr, ShapeErr, TypeErr, did_you_mean
from dsl.overrides import const_override, input_override
from runtime import init as inits
from runtime.autodiff import GradError, gradients, hessian, or_zeros
from runtime.ir import DTYPES, Graph, Loc, TensorType
from runtime.ops import REGISTRY, Builder, ShapeError, Val
from runtime.passes.rewrite import rewrite_at
from runtime.passes.rules import STABILIZING_RULES
from runtime.program import TrainSettings, Variable

FLOAT_DTYPES = ("f16", "f32", "f64")
TRAIN_SETTINGS = {f for f in TrainSettings.__dataclass_fields__} | {"order"}
GENERIC_OPT_OPTIONS = {"weight_decay": 0.0, "clip_norm": 0.0, "clip_value": 0.0,
                       "decay_biases": False}
MAX_DEPTH = 64
MAX_DIM = 2**31 - 1  # one dimension of a tensor
MAX_ELEMENTS = 2**40  # elements of one tensor; what fits in memory is checked before a run
MAX_CONST_ELEMENTS = 2**27  # elements of a compile-time constant (linspace, eye, ...)
MAX_UNROLLED_NODES = 200_000  # graph nodes a compile-time loop may unroll into


@dataclass
class Selection:
    """A set of variables chosen by `params`, `weights`, `biases`, `params(D)`, ..."""

    names: tuple[str, ...]


@dataclass
class InitSpec:
    """An initializer named in a declaration: `xavier_normal`, `normal(std = 0.1)`."""

    name: str
    options: dict[str, Any]
    span: A.Span | None = None

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.name}({opts})" if opts else self.name


@dataclass(frozen=True)
class Deferred:
    """An initial value made when first read: another variable's (`state s = param`) or a fill
    (`state m = zeros_like(param)`), so compiling allocates nothing."""

    shape: tuple[int, ...]
    make: Callable[[], np.ndarray]


@dataclass
class OptUse:
    """A lowered `optimizer ... minimize ...` statement."""

    stmt: A.OptimizerUse
    rule: str
    options: dict[str, Any]
    generic: dict[str, Any]
    objective: str
    names: tuple[str, ...]
    updates: dict[str, int] = field(default_factory=dict)
    grads: dict[str, int] = field(default_factory=dict)  # param name -> its gradient node


class _Return(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


def _at_call_site(ex: DslError, def_name: str, call: A.Span) -> DslError:
    """A mistake found inside a prelude def, moved to the user's call of that def (the
    prelude's own line goes into a note): users see their line, not the library's."""
    s = ex.span
    if s is None or s.file != "<prelude>" or call is None or call.file == "<prelude>":
        return ex
    note = f"raised inside the prelude's '{def_name}' at {s.file}:{s.line}:{s.col}"
    return type(ex)(f"{def_name}: {ex.message}", call, (*ex.notes, note))


class Scope:
    """Bindings of one body: locals, the weight prefix, call-site names and state names."""

    def __init__(self, parent: Scope | None, prefix: str, sites: dict[int, str]) -> None:
        self.vars: dict[str, Any] = {}
        self.parent = parent
        self.prefix = prefix
        self.sites = sites
        self.state_vars: dict[str, str] = {}
        self.param: Variable | None = None  # in an optimizer rule: the parameter it updates

    def owner(self, name: str) -> Scope | None:
        """The innermost scope (this one or an enclosing one) that binds `name`."""
        s: Scope | None = self
        while s is not None and name not in s.vars:
            s = s.parent
        return s

    def lookup(self, name: str) -> tuple[bool, Any]:
        s = self.owner(name)
        return (True, s.vars[name]) if s is not None else (False, None)

    def rebind(self, name: str, value: Any) -> None:
        """Assign to the binding of `name` where it lives, or bind it here."""
        (self.owner(name) or self).vars[name] = value

    def names(self) -> set[str]:
        out: set[str] = set()
        s: Scope | None = self
        while s is not None:
            out |= set(s.vars)
            s = s.parent
        return out

    def state_of(self, name: str) -> str | None:
        s = self.owner(name)
        return s.state_vars.get(name) if s is not None else None


def _optimizer_param(scope: Scope | None) -> Variable | None:
    while scope is not None and scope.param is None:
        scope = scope.parent
    return scope.param if scope is not None else None


class Lowerer:
    """Lowers one program (prelude + spec statements) in one mode ('train' or 'eval')."""

    def __init__(self, stmts: tuple[A.Stmt, ...], prelude: tuple[A.Stmt, ...], mode: str,
                 float_dtype: str = "f32", seed: int = 0, overrides: dict[str, Any] | None = None,
                 data_loader: Callable[[A.DataDecl], Any] | None = None) -> None:
        self.stmts = stmts
        self.mode = mode
        self.float_dtype = float_dtype
        self.seed = seed
        self.overrides = dict(overrides or {})
        self.used_overrides: set[str] = set()
        self.applied: dict[str, Any] = {}  # const name -> its overridden value
        self.data_loader = data_loader
        self.graph = Graph()
        self.b = Builder(self.graph)
        self.defs: dict[str, A.NetDef] = {}
        self.opt_defs: dict[str, A.OptimizerDef] = {}
        self.user_defs: set[str] = set()
        self.variables: dict[str, Variable] = {}
        self.var_node: dict[str, int] = {}
        self.state_updates: dict[str, int] = {}
        self.objectives: dict[str, int] = {}
        self.metrics: dict[str, int] = {}
        self.outputs: dict[str, int] = {}
        self.decl_spans: dict[str, A.Span] = {}
        self.inputs: dict[str, TensorType] = {}
        self.input_nodes: dict[str, int] = {}
        self.input_defaults: dict[str, np.ndarray] = {}
        self.opt_uses: list[OptUse] = []
        self.update_blocks: list[A.UpdateBlock] = []
        self.procedures: dict[str, A.ProcedureDef] = {}
        self.model_name: str | None = None
        self.data_decl: A.DataDecl | None = None
        self.train_decl: A.TrainDecl | None = None
        self.train_settings: dict[str, Any] = {}
        self.warnings: list[DslWarning] = []
        self._data = None
        self._sites_cache: dict[int, dict[int, str]] = {}
        self._depth = 0
        self._def_stack: list[str] = []
        self._statement_call = False  # the next call is a statement (its value is dropped)
        self._span: A.Span | None = None
        self.globals = Scope(None, "", {})
        for stmt in prelude:
            self._register(stmt, user=False)
        for stmt in stmts:
            self._register(stmt, user=True)

    # ------------------------------------------------------------------ errors & helpers
    def err(self, cls: type[DslError], msg: str, span: A.Span | None = None,
            notes: tuple[str, ...] = ()) -> DslError:
        return cls(msg, span or self._span, notes)

    def _loc(self, span: A.Span | None) -> Loc | None:
        return Loc(span.file, span.line, span.col) if span and span.line > 0 else None

    def _register(self, stmt: A.Stmt, user: bool) -> None:
        if isinstance(stmt, A.NetDef):
            if stmt.name in self.defs and (user and stmt.name in self.user_defs or not user):
                raise self.err(NameErr, f"duplicate definition of '{stmt.name}'", stmt.span)
            self.defs[stmt.name] = stmt
            if user:
                self.user_defs.add(stmt.name)
        elif isinstance(stmt, A.OptimizerDef):
            if stmt.name in self.opt_defs and user and stmt.name in self.user_defs:
                raise self.err(NameErr, f"duplicate definition of optimizer '{stmt.name}'",
                               stmt.span)
            self.opt_defs[stmt.name] = stmt
            if user:
                self.user_defs.add(stmt.name)
        elif isinstance(stmt, A.ProcedureDef):
            if stmt.name in self.procedures:
                raise self.err(NameErr, f"duplicate procedure '{stmt.name}'", stmt.span)
            self.procedures[stmt.name] = stmt

    def fdt(self, dtype: str | None) -> str:
        """Declared float dtypes follow the program's float dtype (--dtype float64)."""
        if dtype is None or dtype == "f32" or (dtype in FLOAT_DTYPES and self.float_dtype == "f64"):
            return self.float_dtype
        return dtype

    # ------------------------------------------------------------------ top level
    def run(self) -> None:
        self.globals.sites = self.sites(self.stmts)
        for stmt in self.stmts:
            self.top(stmt)
        unused = set(self.overrides) - self.used_overrides
        if unused:
            name = sorted(unused)[0]
            consts = [s.name for s in self.stmts if isinstance(s, (A.ConstDecl, A.InputDecl))]
            raise NameErr(f"--set {name}: no const or input named '{name}'"
                          + did_you_mean(name, consts))
        if self.mode == "train":
            for use in self.opt_uses:
                self.lower_optimizer(use)
            for block in self.update_blocks:
                scope = Scope(self.globals, "", {})
                for s in block.body:
                    self.exec(s, scope)

    def top(self, s: A.Stmt) -> None:
        self._span = s.span
        if isinstance(s, A.ModelDecl):
            if self.model_name is not None:
                raise self.err(NameErr, "a spec has one 'model' line", s.span)
            self.model_name = s.name
        elif isinstance(s, A.DataDecl):
            if self.data_decl is not None:
                raise self.err(NameErr, "a spec has one 'data' line", s.span)
            self.data_decl = s
        elif isinstance(s, A.InputDecl):
            self.declare_input(s)
        elif isinstance(s, A.ConstDecl):
            self.check_new_global(s.name, s.span)
            value = self.ev(s.value, self.globals)
            if s.name in self.overrides:
                self.used_overrides.add(s.name)
                value = const_override(s.name, self.overrides[s.name], value, s.span)
                self.applied[s.name] = value
            if isinstance(value, Val):
                raise self.err(TypeErr, f"const '{s.name}' must be a compile-time value, but it "
                               "depends on inputs or parameters (use a plain assignment)", s.span)
            self.globals.vars[s.name] = value
        elif isinstance(s, (A.NetDef, A.OptimizerDef, A.ProcedureDef, A.Include)):
            pass
        elif isinstance(s, (A.OptimizerUse, A.TrainDecl, A.UpdateBlock)) and self.mode != "train":
            pass  # training only: the train-mode lowering checks and uses them
        elif isinstance(s, (A.ObjectiveDecl, A.MetricDecl, A.OutputDecl)):
            self.declare_result(s)
        elif isinstance(s, A.OptimizerUse):
            self.opt_uses.append(self.prepare_optimizer(s))
        elif isinstance(s, A.TrainDecl):
            if self.train_decl is not None:
                raise self.err(NameErr, "a spec has one 'train' section", s.span)
            self.train_decl = s
            for st in s.settings:
                if st.name not in TRAIN_SETTINGS:
                    raise self.err(NameErr, f"unknown train setting '{st.name}'"
                                   + did_you_mean(st.name, TRAIN_SETTINGS), st.span)
                if st.name == "augment":
                    self.train_settings["augment"] = self.augmentations(st)
                    continue
                if st.name == "order":
                    if not isinstance(st.value, A.ListExpr) or not all(
                            isinstance(i, A.Name) for i in st.value.items):
                        raise self.err(TypeErr, "order is a list of objective names",
                                       st.value.span)
                    self.train_settings["order"] = [i.id for i in st.value.items]
                    continue
                if st.name == "keep_best" and isinstance(st.value, A.Name):
                    self.train_settings["keep_best"] = st.value.id  # a metric, named as in order
                    continue
                v = self.ev(st.value, self.globals)
                if isinstance(v, Val):
                    raise self.err(TypeErr, f"train setting '{st.name}' must be a constant",
                                   st.span)
                self.train_settings[st.name] = v
        elif isinstance(s, A.UpdateBlock):
            self.update_blocks.append(s)
        else:
            self.exec(s, self.globals)

    def augmentations(self, st: A.Setting) -> list[tuple[str, dict[str, Any]]]:
        """`augment = [hflip(p = 0.5), crop(pad = 1), noise(std = 0.05)]` (B 6.1)."""
        from runtime.train import augment

        items = st.value.items if isinstance(st.value, A.ListExpr) else None
        if items is None:
            raise self.err(TypeErr, "augment is a list such as [hflip(), crop(pad = 1)]",
                           st.value.span)
        out = []
        for it in items:
            call = it if isinstance(it, A.Call) else (
                A.Call(it.id, (), (), it.span) if isinstance(it, A.Name) else None)
            if call is None or call.args:
                raise self.err(TypeErr, "each augmentation is name(option = value)", it.span)
            opts = {k.name: self.ev(k.value, self.globals) for k in call.kwargs}
            problem = augment.check(call.func, opts)
            if problem:
                raise self.err(NameErr, problem, call.span)
            out.append((call.func, opts))
        return out

    def check_new_global(self, name: str, span: A.Span) -> None:
        if name in self.globals.vars or name in self.decl_spans:
            prev = self.decl_spans.get(name)
            where = f" (first defined at {prev})" if prev else ""
            raise self.err(NameErr, f"duplicate definition of '{name}'{where}", span)
        self.decl_spans[name] = span

    def declare_input(self, s: A.InputDecl) -> None:
        self.check_new_global(s.name, s.span)
        t = self.eval_type(s.type, self.globals, allow_symbols=True)
        nid = self.graph.add("input", (), {}, t, role="input", name=s.name,
                             loc=self._loc(s.span))
        self.inputs[s.name] = t
        self.input_nodes[s.name] = nid
        if s.name in self.overrides:
            self.used_overrides.add(s.name)
            self.input_defaults[s.name] = input_override(s.name, self.overrides[s.name], t,
                                                         s.span)
        elif s.default is not None:
            default = self.ev(s.default, self.globals)
            if isinstance(default, Val):
                raise self.err(TypeErr, f"the default of input '{s.name}' must be a constant",
                               s.span)
            self.input_defaults[s.name] = np.asarray(default, dtype=t.np_dtype())
        self.globals.vars[s.name] = Val(self.b, nid)

    def declare_result(self, s: A.ObjectiveDecl | A.MetricDecl | A.OutputDecl) -> None:
        kind = {A.ObjectiveDecl: "objective", A.MetricDecl: "metric",
                A.OutputDecl: "output"}[type(s)]
        self.check_new_global(s.name, s.span)
        v = self.ev(s.value, self.globals)
        if kind == "output" and isinstance(v, Selection):
            raise self.err(TypeErr, f"output '{s.name}' must be a tensor", s.span)
        v = self.to_val(v, s.span)
        if kind != "output":
            if v.type.rank != 0 or not v.type.is_float:
                raise self.err(TypeErr, f"{kind} '{s.name}' must be a float scalar, got "
                               f"{v.type}", s.value.span)
        table = {"objective": self.objectives, "metric": self.metrics,
                 "output": self.outputs}[kind]
        table[s.name] = v.id
        self.graph.outputs[s.name] = v.id
        self.graph.output_kinds[s.name] = kind
        self.globals.vars[s.name] = v

    # ------------------------------------------------------------------ types
    def eval_type(self, t: A.TypeExpr, scope: Scope, allow_symbols: bool) -> TensorType:
        if t.dtype is not None and t.dtype not in DTYPES:
            raise self.err(TypeErr, f"unknown dtype '{t.dtype}'", t.span)
        dims: list[int | str] = []
        for d in t.dims:
            if isinstance(d, A.Name):
                found, v = scope.lookup(d.id)
                if not found:
                    if not allow_symbols:
                        if any(d.id in t.shape for t in self.inputs.values()):
                            raise self.err(ShapeErr, "parameters need static shapes; "
                                           f"dimension '{d.id}' is symbolic", d.span)
                        raise self.err(NameErr, f"unknown name '{d.id}' in a shape"
                                       + did_you_mean(d.id, scope.names()), d.span)
                    dims.append(d.id)
                    continue
            else:
                v = self.ev(d, scope)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer, str)):
                raise self.err(TypeErr, f"a dimension must be an integer, got {v!r}", d.span)
            if isinstance(v, str) and not allow_symbols:
                raise self.err(ShapeErr, f"parameters need static shapes; dimension '{v}' is "
                               "symbolic", d.span)
            dims.append(self.check_dim(v, d.span) if not isinstance(v, str) else v)
        static = [d for d in dims if isinstance(d, int)]
        if math.prod(static) > MAX_ELEMENTS:
            raise self.err(ShapeErr, f"a tensor of shape {dims} would have "
                           f"{math.prod(static):.3g} elements, more than the limit of "
                           f"{MAX_ELEMENTS:.3g}" + self.override_note(*static), t.span)
        return TensorType(self.fdt(t.dtype), tuple(dims))

    def check_dim(self, v: int | np.integer, span: A.Span | None, lo: int = 1) -> int:
        """A static dimension: an integer from `lo` (1; 0 for fills) to MAX_DIM."""
        if not lo <= v <= MAX_DIM:
            want = "positive" if lo == 1 else "non-negative"
            raise self.err(ShapeErr, f"a dimension must be a {want} integer of at most "
                           f"{MAX_DIM}, got {v}" + self.override_note(v), span)
        return int(v)

    def override_note(self, *values: Any) -> str:
        """` (--set H=-4)` when a value came from an override, to say where it came from."""
        hits = [f"--set {k}={self.overrides[k]}" for k, v in self.applied.items()
                if not isinstance(v, bool) and isinstance(v, int | np.integer)
                and any(v == x for x in values)]
        return f" ({', '.join(hits)})" if hits else ""

    # ------------------------------------------------------------------ variables
    def declare_param(self, s: A.ParamDecl, scope: Scope) -> Val:
        name = scope.prefix + s.name
        t = self.eval_type(s.type, scope, allow_symbols=False)
        kind = s.kind or "weight"
        if kind not in ("weight", "bias", "scale"):
            raise self.err(NameErr, f"unknown parameter kind '{kind}'"
                           + did_you_mean(kind, ["weight", "bias", "scale"]), s.span)
        if name in self.variables:
            return self._reuse(name, t, s.span)
        init = self.ev_init(s.init, scope)
        value = self.init_value(init, t, name, s.init.span)
        desc = init.describe() if isinstance(init, InitSpec) else "value"
        self.variables[name] = Variable(name, t, value, "param", trainable=not s.frozen,
                                        kind=kind, init=desc)
        nid = self.graph.add("param", (), {"init": desc, "kind": kind,
                                           "trainable": not s.frozen},
                             t, role="param", name=name, loc=self._loc(s.span))
        self.var_node[name] = nid
        return Val(self.b, nid)

    def _reuse(self, name: str, t: TensorType, span: A.Span) -> Val:
        old = self.variables[name]
        if old.type != t:
            raise self.err(ShapeErr, f"'{name}' is shared but declared here as {t} and before "
                           f"as {old.type}", span)
        return Val(self.b, self.var_node[name])

    def declare_state(self, name: str, type_expr: A.TypeExpr | None, init_expr: A.Expr,
                      scope: Scope, span: A.Span, like: Variable | None = None) -> Val:
        t = self.eval_type(type_expr, scope, False) if type_expr is not None else None
        if name in self.variables:
            v = self.variables[name]
            return self._reuse(name, t or v.type, span)
        init = self.ev_init(init_expr, scope, like=like)
        if t is None:
            if isinstance(init, Deferred):
                t = TensorType(self.float_dtype, init.shape)
            elif isinstance(init, np.ndarray):
                dt = self.float_dtype if init.dtype.kind == "f" else (
                    "i64" if init.dtype.kind in "iu" else "bool")
                t = TensorType(dt, tuple(init.shape))
            elif isinstance(init, (int, float)):
                t = TensorType(self.float_dtype, ())
            else:
                raise self.err(TypeErr, f"state '{name}' needs a type: state {name}: [n] = "
                               "zeros", span)
        value = self.init_value(init, t, name, init_expr.span)
        desc = init.describe() if isinstance(init, InitSpec) else "value"
        self.variables[name] = Variable(name, t, value, "state", trainable=False,
                                        kind="buffer", init=desc)
        nid = self.graph.add("state", (), {"init": desc}, t, role="state", name=name,
                             loc=self._loc(span))
        self.var_node[name] = nid
        return Val(self.b, nid)

    def init_value(self, init: Any, t: TensorType, name: str,
                   span: A.Span) -> np.ndarray | Callable[[], np.ndarray]:
        """The initial value of variable `name`, or (for initializers and values of other
        variables) a function that makes it: `check` and `params` draw no weights, and the
        draws use `self.seed` as the compiler sets it after reading the train settings."""
        shape = tuple(int(d) for d in t.shape)
        dtype = t.np_dtype()
        if isinstance(init, InitSpec):
            defaults = inits.INITIALIZERS[inits.canonical(init.name) or init.name][1]
            for k, v in init.options.items():
                if k not in defaults:
                    raise self.err(NameErr, f"initializer '{init.name}' has no option '{k}'"
                                   + did_you_mean(k, defaults), span)
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise self.err(TypeErr, f"initializer '{init.name}': option '{k}' must be "
                                   f"a number, got {v!r}", span)
            return lambda: inits.initialize(init.name, shape, inits.seeded_rng(self.seed, name),
                                            **init.options).astype(dtype)
        if isinstance(init, Deferred):
            try:
                fits = np.broadcast_shapes(init.shape, shape) == shape
            except ValueError:
                fits = False
            if not fits:
                raise self.err(ShapeErr, f"initial value of shape {list(init.shape)} does not "
                               f"fit {t}", span)
            return lambda: np.broadcast_to(init.make(), shape).astype(dtype)
        v = np.asarray(init, dtype=np.float64)
        try:
            np.broadcast_to(v, shape)  # a view: checks the shape, allocates nothing
        except ValueError:
            raise self.err(ShapeErr, f"initial value of shape {list(v.shape)} does not fit "
                           f"{t}", span) from None
        return lambda: np.broadcast_to(v, shape).astype(dtype)

    def ev_init(self, e: A.Expr, scope: Scope, like: Variable | None = None) -> Any:
        """Evaluate an initializer expression: an InitSpec, a number or a NumPy array."""
        if isinstance(e, A.Name) and inits.canonical(e.id) and not scope.lookup(e.id)[0]:
            return InitSpec(inits.canonical(e.id), {}, e.span)
        if isinstance(e, A.Call):
            base = inits.canonical(e.func)
            if e.func in ("zeros_like", "ones_like", "full_like") and like is not None:
                fill = {"zeros_like": 0.0, "ones_like": 1.0}.get(e.func)
                if fill is None:
                    if len(e.args) != 2:
                        raise self.err(TypeErr, "full_like(param, value)", e.span)
                    fill = self.ev(e.args[1], scope)
                shape = tuple(int(d) for d in like.type.shape)
                return Deferred(shape, lambda: np.full(shape, fill, dtype=np.float64))
            if base and not e.args:
                opts = {k.name: self.ev(k.value, scope) for k in e.kwargs}
                return InitSpec(base, opts, e.span)
        if isinstance(e, A.Name) and e.id == "param" and like is not None:
            return Deferred(tuple(int(d) for d in like.type.shape), lambda: like.value)
        if isinstance(e, A.Name) and not scope.lookup(e.id)[0] and e.id not in (
                "step", "epoch", "training", *self.defs, *REGISTRY, *BUILTINS):
            known = [*inits.INITIALIZERS, *inits.ALIASES]
            raise self.err(NameErr, f"unknown initializer '{e.id}'"
                           + did_you_mean(e.id, [*known, *scope.names()]), e.span)
        v = self.ev(e, scope)
        if isinstance(v, InitSpec):
            return v
        if isinstance(v, Val):
            raise self.err(TypeErr, "an initial value must be a constant or an initializer "
                           "(zeros, normal(std = 0.1), xavier_normal, ...)", e.span)
        if isinstance(v, str) and inits.canonical(v):
            return InitSpec(inits.canonical(v), {}, e.span)
        return np.asarray(v, dtype=np.float64)

    # ------------------------------------------------------------------ statements
    def exec_body(self, body: tuple[A.Stmt, ...], scope: Scope) -> None:
        for s in body:
            self.exec(s, scope)

    def exec(self, s: A.Stmt, scope: Scope) -> None:
        self._span = s.span
        if isinstance(s, A.Assign):
            self.assign(s, scope)
        elif isinstance(s, A.ExprStmt):
            if not isinstance(s.value, A.Call):
                raise self.err(TypeErr, "this expression has no effect (if a line break split "
                               "an expression, wrap it in parentheses)", s.span)
            self._statement_call = True  # its value is dropped: it may return nothing
            self.ev(s.value, scope)
        elif isinstance(s, A.Return):
            raise _Return(self.ev(s.value, scope))
        elif isinstance(s, A.ParamDecl):
            if s.name in scope.vars:
                raise self.err(NameErr, f"'{s.name}' is already defined in this scope", s.span)
            scope.vars[s.name] = self.declare_param(s, scope)
        elif isinstance(s, A.StateDecl):
            name = scope.prefix + s.name
            like = _optimizer_param(scope)
            scope.vars[s.name] = self.declare_state(name, s.type, s.init, scope, s.span, like)
            scope.state_vars[s.name] = name
        elif isinstance(s, (A.For, A.Repeat)):
            start, stop = self.ev_int(s.start, scope), self.ev_int(s.stop, scope)
            rng = range(start, stop)
            if isinstance(s, A.For) and s.reverse:
                rng = range(stop - 1, start - 1, -1)
            before = len(self.graph.nodes)
            for k, i in enumerate(rng):
                if k:
                    self.check_unroll(s, k, len(rng), len(self.graph.nodes) - before)
                if isinstance(s, A.Repeat):
                    inner = Scope(scope, f"{scope.prefix}{s.name}.{i}.",
                                  self.sites(s.body))
                    inner.vars[s.var] = i
                    self.exec_body(s.body, inner)
                    for k, v in inner.vars.items():  # carried values flow out
                        if k != s.var and scope.lookup(k)[0]:
                            scope.rebind(k, v)
                else:
                    scope.vars[s.var] = i
                    self.exec_body(s.body, scope)
        elif isinstance(s, A.If):
            cond = self.ev(s.cond, scope)
            if isinstance(cond, Val):
                raise self.err(TypeErr, "an 'if' condition must be a compile-time constant "
                               "(use where(cond, a, b) for tensors)", s.cond.span)
            self.exec_body(s.body if cond else s.orelse, scope)
        elif isinstance(s, (A.Loop, A.Emit)):
            raise self.err(TypeErr, "run-time loops and 'emit' belong in a procedure", s.span)
        else:
            what = type(s).__name__.replace("Decl", "").replace("Def", "").lower()
            raise self.err(TypeErr, f"'{what}' is only allowed at the top level of a spec",
                           s.span)

    def assign(self, s: A.Assign, scope: Scope) -> None:
        value = self.ev(s.value, scope)
        if len(s.targets) > 1:
            if isinstance(value, Val) or not isinstance(value, (tuple, list)):
                raise self.err(TypeErr, f"cannot unpack a single value into {len(s.targets)} "
                               "names", s.span)
            if len(value) != len(s.targets):
                raise self.err(TypeErr, f"cannot unpack {len(value)} values into "
                               f"{len(s.targets)} names", s.span)
            values = list(value)
        else:
            values = [value]
        for t, v in zip(s.targets, values):
            if t.name in ("step", "epoch", "training"):
                raise self.err(NameErr, f"'{t.name}' is reserved", t.span)
            if t.index is not None:
                found, base = scope.lookup(t.name)
                if not found:
                    raise self.err(NameErr, f"unknown name '{t.name}'"
                                   + did_you_mean(t.name, scope.names()), t.span)
                v = self.index_assign(base, t.index, v, scope, t.span)
            var = scope.state_of(t.name)
            if var is not None:  # assigning a state variable (or `param`) records its update
                v = self.to_val(v, t.span)
                old = self.variables[var].type
                if v.type.shape != old.shape:
                    raise self.err(ShapeErr, f"update of '{var}' has shape {v.type} but the "
                                   f"variable is {old}", s.span)
                if v.type.dtype != old.dtype:
                    v = self.b.emit("cast", v, dtype=old.dtype)
                self.state_updates[var] = v.id
                scope.rebind(t.name, v)
            else:
                scope.vars[t.name] = v

    def index_assign(self, base: Any, index: tuple, v: Any, scope: Scope,
                     span: A.Span) -> Val:
        base = self.to_val(base, span)
        items = [self.ev_index_item(i, scope) for i in index]
        v = self.to_val(v, span, like=base)
        if v.type.dtype != base.type.dtype:
            v = self.b.emit("cast", v, dtype=base.type.dtype)
        if len(items) == 1 and isinstance(items[0], Val):  # x[i] = v with a tensor index i
            idx = items[0]
            n = base.shape[0]
            oh = self.b.emit("one_hot", idx, depth=n, dtype=base.type.dtype)
            if base.type.rank > 1:
                oh = self.b.emit("reshape", oh, shape=(n,) + (1,) * (base.type.rank - 1))
            old = self.b.emit("take", base, idx, axis=0)
            return base + oh * (v - old)
        static = self.static_index(items, span)
        with self.guard(span):
            old = self.b.emit("getitem", base, index=static)
            put = lambda x: self.b.emit("index_put", x, index=static, shape=base.shape)
            if v.shape != old.shape:
                v = self.b.emit("broadcast_to", v, shape=old.shape)
            return base - put(old) + put(v)

    def ev_int(self, e: A.Expr, scope: Scope) -> int:
        v = self.ev(e, scope)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise self.err(TypeErr, f"expected a compile-time integer, got {self.describe(v)}",
                           e.span)
        return int(v)

    def check_unroll(self, s: A.For | A.Repeat, done: int, count: int, grown: int) -> None:
        """Refuse a compile-time loop whose unrolled graph would exceed MAX_UNROLLED_NODES,
        judged from the iterations made so far (so the error comes after the first one)."""
        per = grown / done
        if len(self.graph.nodes) + per * (count - done) <= MAX_UNROLLED_NODES:
            return
        kw = "repeat" if isinstance(s, A.Repeat) else "for"
        raise self.err(
            ShapeErr, f"this '{kw}' runs {count} times and unrolls into about "
            f"{per * count:,.0f} graph nodes ({per:.0f} per iteration), more than the limit of "
            f"{MAX_UNROLLED_NODES:,}" + self.override_note(count), s.span,
            notes=("compile-time loops are copied into the graph once per iteration: use "
                   "fewer iterations",))

    def sites(self, body: tuple[A.Stmt, ...]) -> dict[int, str]:
        """Name every call site of a `def` in a body, in source order: dense1, dense2, ..."""
        key = id(body)
        if key in self._sites_cache:
            return self._sites_cache[key]
        counts: dict[str, int] = {}
        out: dict[int, str] = {}

        def visit(node: Any) -> None:
            if isinstance(node, A.Repeat):
                visit(node.start)
                visit(node.stop)
                return
            if isinstance(node, A.Call):
                d = self.defs.get(node.func)
                if d is not None and d.kind == "def":
                    counts[node.func] = counts.get(node.func, 0) + 1
                    out[id(node)] = f"{node.func}{counts[node.func]}"
            if isinstance(node, tuple):
                for x in node:
                    visit(x)
            elif isinstance(node, A.Node) and not isinstance(node, A.Span):
                for f in node._fields:
                    if f != "span":
                        visit(getattr(node, f))

        for s in body:
            visit(s)
        self._sites_cache[key] = out
        return out

    # ------------------------------------------------------------------ expressions
    @contextlib.contextmanager
    def guard(self, span: A.Span | None) -> Iterator[None]:
        """Emit at `span`; a runtime shape error becomes a spec error there."""
        try:
            with self.b.context(loc=self._loc(span)):
                yield
        except ShapeError as e:
            raise ShapeErr(str(e), span) from None

    def describe(self, v: Any) -> str:
        if isinstance(v, Val):
            return f"a tensor {v.type}"
        if isinstance(v, Selection):
            return "a parameter selection"
        if isinstance(v, InitSpec):
            return f"an initializer ({v.name})"
        if isinstance(v, np.ndarray):
            return f"a constant array of shape {list(v.shape)}"
        return f"{type(v).__name__} {v!r}"

    def ev(self, e: A.Expr, scope: Scope) -> Any:
        if isinstance(e, A.Num):
            return e.value
        if isinstance(e, A.Str):
            return e.value
        if isinstance(e, A.Bool):
            return e.value
        if isinstance(e, A.NoneLit):
            return None
        if isinstance(e, A.Name):
            return self.ev_name(e, scope)
        if isinstance(e, A.TupleExpr):
            return tuple(self.ev(i, scope) for i in e.items)
        if isinstance(e, A.ListExpr):
            return [self.ev(i, scope) for i in e.items]
        self._span = e.span
        if isinstance(e, A.BinOp):
            if e.op in ("and", "or"):
                left = self.ev(e.left, scope)
                if isinstance(left, Val):
                    raise self.err(TypeErr, f"'{e.op}' needs compile-time values; use "
                                   "logical_and/logical_or for tensors", e.span)
                if (e.op == "and" and not left) or (e.op == "or" and left):
                    return left
                return self.ev(e.right, scope)
            return self.arith(e.op, self.ev(e.left, scope), self.ev(e.right, scope), e.span)
        if isinstance(e, A.UnaryOp):
            v = self.ev(e.operand, scope)
            if e.op == "not":
                if isinstance(v, Val):
                    return self.b.emit("logical_not", v)
                return not v
            if e.op == "+":
                return v
            if isinstance(v, Val):
                with self.guard(e.span):
                    return -v
            if isinstance(v, (Selection, InitSpec, str)):
                raise self.err(TypeErr, f"cannot negate {self.describe(v)}", e.span)
            return -np.asarray(v) if isinstance(v, (list, tuple)) else -v
        if isinstance(e, A.Compare):
            a, b = self.ev(e.left, scope), self.ev(e.right, scope)
            if not isinstance(a, Val) and not isinstance(b, Val):
                fn = {"<": operator.lt, "<=": operator.le, ">": operator.gt,
                      ">=": operator.ge, "==": operator.eq, "!=": operator.ne}[e.op]
                try:
                    return fn(a, b)
                except TypeError:  # "3" >= 1, [1] < 2: Python refuses the pair
                    raise self.err(TypeErr, f"'{e.op}' cannot compare {self.describe(a)} with "
                                   f"{self.describe(b)}", e.span) from None
            op = {"<": "less", "<=": "less_equal", ">": "greater", ">=": "greater_equal",
                  "==": "equal", "!=": "not_equal"}[e.op]
            a, b = self.coerce_pair(a, b, e.span)
            with self.guard(e.span):
                return self.b.emit(op, a, b)
        if isinstance(e, A.Call):
            return self.call(e, scope)
        if isinstance(e, A.Index):
            return self.index(e, scope)
        if isinstance(e, A.Attribute):
            return self.attribute(e, scope)
        raise self.err(TypeErr, f"unsupported expression {type(e).__name__}", e.span)

    def ev_name(self, e: A.Name, scope: Scope) -> Any:
        found, v = scope.lookup(e.id)
        if found:
            return v
        if e.id in ("step", "epoch"):
            return self.counter(e.id)
        if e.id == "training":
            return self.mode == "train"
        if e.id in ("params", "weights", "biases", "scales", "frozen_params"):
            return self.select(e.id, None, e.span)
        if inits.canonical(e.id):
            return InitSpec(inits.canonical(e.id), {}, e.span)
        if e.id in self.defs or e.id in REGISTRY or e.id in BUILTINS:
            raise self.err(TypeErr, f"'{e.id}' is a function; call it: {e.id}(...)", e.span)
        candidates = scope.names() | {"step", "epoch", "params", "weights", "biases",
                                      *inits.INITIALIZERS}
        raise self.err(NameErr, f"unknown name '{e.id}'" + did_you_mean(e.id, candidates),
                       e.span)

    def counter(self, name: str) -> Val:
        if name not in self.input_nodes:
            t = TensorType(self.float_dtype, ())
            self.input_nodes[name] = self.graph.add("input", (), {}, t, role="input", name=name)
            self.inputs[name] = t
            self.input_defaults[name] = np.asarray(1.0 if name == "step" else 0.0,
                                                   dtype=t.np_dtype())
        return Val(self.b, self.input_nodes[name])

    def attribute(self, e: A.Attribute, scope: Scope) -> Any:
        parts: list[str] = []
        node: A.Expr = e
        while isinstance(node, A.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, A.Name):
            raise self.err(TypeErr, "attributes apply to names only", e.span)
        parts.append(node.id)
        dotted = ".".join(reversed(parts))
        if node.id in ("train", "test") and len(parts) == 2:
            return self.data_field(node.id, e.attr, e.span)
        if dotted in self.var_node:
            return Val(self.b, self.var_node[dotted])
        raise self.err(NameErr, f"unknown parameter '{dotted}'"
                       + did_you_mean(dotted, self.var_node), e.span)

    def data_field(self, split: str, field_name: str, span: A.Span) -> np.ndarray:
        if self.data_decl is None or self.data_loader is None:
            raise self.err(NameErr, f"'{split}.{field_name}' needs a 'data' line before it", span)
        if self._data is None:
            self._data = self.data_loader(self.data_decl)
        arrays = self._data.train if split == "train" else self._data.test
        if arrays is None:
            raise self.err(NameErr, "this data set has no test split", span)
        if field_name not in arrays:
            raise self.err(NameErr, f"data set has no field '{field_name}'"
                           + did_you_mean(field_name, arrays), span)
        return arrays[field_name]

    # ------------------------------------------------------------------ values
    def const_val(self, v: Any, span: A.Span | None, like: Val | None = None) -> Val:
        arr = np.asarray(v)
        if arr.dtype.kind == "f" or (like is not None and like.type.is_float
                                     and arr.dtype.kind in "iub"):
            dt = like.type.dtype if like is not None and like.type.is_float else self.float_dtype
        elif arr.dtype.kind in "iu":
            dt = like.type.dtype if like is not None and like.type.dtype.startswith("i") \
                else "i64"
        elif arr.dtype.kind == "b":
            dt = "bool"
        else:
            raise self.err(TypeErr, f"expected a number or tensor, got {self.describe(v)}",
                           span)
        with self.b.context(loc=self._loc(span)):
            return self.b.const(arr, dt)

    def to_val(self, v: Any, span: A.Span | None, like: Val | None = None) -> Val:
        if isinstance(v, Val):
            return v
        if isinstance(v, (Selection, InitSpec, str)) or v is None:
            raise self.err(TypeErr, f"expected a tensor, got {self.describe(v)}", span)
        if isinstance(v, (list, tuple)) and any(isinstance(x, Val) for x in v):
            raise self.err(TypeErr, "a list of tensors is not a tensor; use stack or concat",
                           span)
        return self.const_val(v, span, like)

    def coerce_pair(self, a: Any, b: Any, span: A.Span) -> tuple[Val, Val]:
        """Lift constants next to a tensor and give mixed int/float operands a float dtype."""
        if not isinstance(a, Val):
            a = self.to_val(a, span, like=b)
        if not isinstance(b, Val):
            b = self.to_val(b, span, like=a)
        if a.type.is_float != b.type.is_float:
            if a.type.is_float:
                b = self.b.emit("cast", b, dtype=a.type.dtype)
            else:
                a = self.b.emit("cast", a, dtype=b.type.dtype)
        elif a.type.dtype == "bool" and b.type.dtype != "bool":
            a = self.b.emit("cast", a, dtype=b.type.dtype)
        elif b.type.dtype == "bool" and a.type.dtype != "bool":
            b = self.b.emit("cast", b, dtype=a.type.dtype)
        return a, b

    def arith(self, op: str, a: Any, b: Any, span: A.Span) -> Any:
        pyops = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                 "/": operator.truediv, "**": operator.pow, "@": operator.matmul,
                 "%": operator.mod, "//": operator.floordiv}
        for v in (a, b):
            if isinstance(v, (Selection, InitSpec)) or v is None:
                raise self.err(TypeErr, f"'{op}' cannot take {self.describe(v)}", span)
        if not isinstance(a, Val) and not isinstance(b, Val):
            if isinstance(a, str) or isinstance(b, str):
                if op == "+" and isinstance(a, str) and isinstance(b, str):
                    return a + b
                raise self.err(TypeErr, f"'{op}' cannot take strings", span)
            if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and op == "+":
                return type(a)(list(a) + list(b))
            if isinstance(a, (list, tuple)):
                a = np.asarray(a)
            if isinstance(b, (list, tuple)):
                b = np.asarray(b)
            try:
                with np.errstate(all="raise"):
                    r = pyops[op](a, b)
            except (ZeroDivisionError, FloatingPointError, ValueError, OverflowError) as ex:
                raise self.err(TypeErr, f"constant expression: {ex}", span) from None
            return r
        if op in ("%", "//"):
            raise self.err(TypeErr, f"'{op}' is only for compile-time numbers", span)
        a, b = self.coerce_pair(a, b, span)
        name = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow",
                "@": "matmul"}[op]
        if name == "pow" and not a.type.is_float:
            a = self.b.emit("cast", a, dtype=self.float_dtype)
            b = self.b.emit("cast", b, dtype=self.float_dtype) if not b.type.is_float else b
        if name == "div" and not a.type.is_float:
            a = self.b.emit("cast", a, dtype=self.float_dtype)
            b = self.b.emit("cast", b, dtype=self.float_dtype)
        with self.guard(span):
            return self.emit_stable(name, [a, b], {})

    # ------------------------------------------------------------------ indexing
    def ev_index_item(self, item: Any, scope: Scope) -> Any:
        if isinstance(item, A.Slice):
            parts = []
            for p in (item.start, item.stop, item.step):
                if p is None:
                    parts.append(None)
                    continue
                v = self.ev(p, scope)
                if isinstance(v, Val) or isinstance(v, bool) or not isinstance(
                        v, (int, np.integer)):
                    raise self.err(TypeErr, "slice bounds must be compile-time integers",
                                   p.span)
                parts.append(int(v))
            return slice(*parts)
        if isinstance(item, A.NoneLit):
            return None
        return self.ev(item, scope)

    def static_index(self, items: list[Any], span: A.Span) -> tuple:
        out = []
        for it in items:
            if it is None:
                out.append(("n",))
            elif isinstance(it, slice):
                out.append(("s", it.start, it.stop, it.step))
            elif isinstance(it, (int, np.integer)) and not isinstance(it, bool):
                out.append(("i", int(it)))
            else:
                raise self.err(TypeErr, f"cannot index with {self.describe(it)}", span)
        return tuple(out)

    def index(self, e: A.Index, scope: Scope) -> Any:
        base = self.ev(e.value, scope)
        items = [self.ev_index_item(i, scope) for i in e.items]
        if not isinstance(base, Val) and not any(isinstance(i, Val) for i in items):
            if isinstance(base, (tuple, list, np.ndarray)):
                try:
                    if isinstance(base, (tuple, list)) and len(items) == 1:
                        return base[items[0]]
                    return np.asarray(base)[tuple(items)]
                except (IndexError, TypeError) as ex:
                    raise self.err(ShapeErr, f"index: {ex}", e.span) from None
            raise self.err(TypeErr, f"cannot index {self.describe(base)}", e.span)
        tensor_pos = [k for k, i in enumerate(items) if isinstance(i, Val)]
        if tensor_pos:
            if len(tensor_pos) > 1:
                raise self.err(TypeErr, "at most one tensor index is supported", e.span)
            k = tensor_pos[0]
            if any(not (isinstance(i, slice) and i == slice(None)) for j, i in enumerate(items)
                   if j != k):
                raise self.err(TypeErr, "a tensor index must be combined with ':' only",
                               e.span)
            idx = items[k]
            if idx.type.is_float:
                raise self.err(TypeErr, f"a tensor index must be an integer, got {idx.type}",
                               e.span)
            base = self.to_val(base, e.span)
            with self.guard(e.span):
                return self.b.emit("take", base, idx, axis=k)
        with self.guard(e.span):
            return self.b.emit("getitem", base, index=self.static_index(items, e.span))

    # ------------------------------------------------------------------ calls
    def call(self, e: A.Call, scope: Scope) -> Any:
        statement, self._statement_call = self._statement_call, False
        d = self.defs.get(e.func)
        if d is not None and e.func in self._def_stack:
            # inside the body of `def conv2d`, `conv2d(...)` is the primitive it wraps
            if e.func not in BUILTINS and e.func not in REGISTRY:
                chain = " -> ".join([*self._def_stack[self._def_stack.index(e.func):], e.func])
                raise self.err(TypeErr, f"'{e.func}' calls itself ({chain}): nets and defs are "
                               "expanded at compile time, so they cannot be recursive (repeat "
                               "a layer with 'repeat' or 'for')", e.span)
        elif d is not None:
            return self.call_def(d, e, scope, statement)
        fn = BUILTINS.get(e.func)
        if fn is not None:
            return fn(self, e, scope)
        if e.func in REGISTRY:
            return self.call_op(e, scope)
        if inits.canonical(e.func):
            if e.args:
                raise self.err(TypeErr, f"initializer '{e.func}' takes keyword options only",
                               e.span)
            return InitSpec(inits.canonical(e.func),
                            {k.name: self.ev(k.value, scope) for k in e.kwargs}, e.span)
        if e.func in self.opt_defs:
            raise self.err(TypeErr, f"'{e.func}' is an optimizer; use it as: optimizer "
                           f"{e.func}(...) minimize <objective>", e.span)
        known = set(self.defs) | set(BUILTINS) | set(REGISTRY) | set(inits.INITIALIZERS)
        raise self.err(NameErr, f"unknown function '{e.func}'" + did_you_mean(e.func, known),
                       e.span)

    def call_op(self, e: A.Call, scope: Scope) -> Val:
        opdef = REGISTRY[e.func]
        args = [self.ev(a, scope) for a in e.args]
        kwargs = {}
        for k in e.kwargs:
            if k.name not in opdef.attrs:
                raise self.err(NameErr, f"{e.func}: unknown option '{k.name}'"
                               + did_you_mean(k.name, opdef.attrs), k.span)
            v = self.ev(k.value, scope)
            if isinstance(v, Val):
                raise self.err(TypeErr, f"{e.func}: option '{k.name}' must be a constant",
                               k.span)
            kwargs[k.name] = tuple(v) if isinstance(v, list) else v
        if opdef.arity is not None and len(args) != opdef.arity:
            raise self.err(TypeErr, f"{e.func}: expects {opdef.arity} tensor argument"
                           f"{'s' if opdef.arity != 1 else ''}, got {len(args)}", e.span)
        vals = [self.to_val(a, e.span) for a in args]
        if kwargs.get("dtype") is not None:
            kwargs["dtype"] = self.fdt(kwargs["dtype"])
        if opdef.elementwise and len(vals) == 2:
            vals = list(self.coerce_pair(vals[0], vals[1], e.span))
        elif opdef.elementwise and e.func == "where" and len(vals) == 3:
            vals[1], vals[2] = self.coerce_pair(vals[1], vals[2], e.span)
        if e.func in _FLOAT_OPS and vals and not vals[0].type.is_float:
            vals[0] = self.b.emit("cast", vals[0], dtype=self.float_dtype)
        with self.guard(e.span):
            return self.emit_stable(e.func, vals, kwargs)

    def emit_stable(self, op: str, vals: list[Val], attrs: dict[str, Any]) -> Val:
        """Emit with the stabilizing rewrites (`STABILIZING_RULES`) applied on the spot, so
        that gradients taken during lowering are built from the stable forms."""
        nid = self.b.emit(op, *vals, **attrs).id
        return Val(self.b, rewrite_at(self.graph, STABILIZING_RULES, nid))

    def bind_args(self, params: tuple[A.Param, ...], e: A.Call, scope: Scope,
                  what: str, name: str) -> dict[str, Any]:
        names = [p.name for p in params]
        if len(e.args) > len(params):
            raise self.err(TypeErr, f"{what} '{name}' takes {len(params)} argument"
                           f"{'s' if len(params) != 1 else ''}, got {len(e.args)}", e.span)
        bound: dict[str, Any] = {}
        for p, a in zip(params, e.args):
            bound[p.name] = self.ev(a, scope)
        for k in e.kwargs:
            if k.name not in names:
                raise self.err(NameErr, f"{what} '{name}' has no argument '{k.name}'"
                               + did_you_mean(k.name, names), k.span)
            if k.name in bound:
                raise self.err(TypeErr, f"argument '{k.name}' given twice", k.span)
            bound[k.name] = self.ev(k.value, scope)
        for p in params:
            if p.name not in bound:
                if p.default is None:
                    raise self.err(TypeErr, f"{what} '{name}' is missing argument '{p.name}'",
                                   e.span)
                bound[p.name] = self.ev(p.default, self.globals)
            else:
                span = next((k.span for k in e.kwargs if k.name == p.name), e.span)
                self.check_kind_of_default(p, bound[p.name], span, name)
        return bound

    def check_kind_of_default(self, p: A.Param, value: Any, span: A.Span, owner: str) -> None:
        """An argument whose default is true/false or a string takes a value of that kind
        (`bias = "yes"` is an error, not a true condition). Numeric defaults take more than
        numbers (tensors for schedules, pairs, "same"), so they are left to the body."""
        d = p.default
        if isinstance(d, A.Bool):
            ok, want = isinstance(value, bool | np.bool_), "true or false"
        elif isinstance(d, A.Str):
            ok, want = isinstance(value, str), f"a string such as {d.value!r}"
        else:
            return
        if not ok:
            raise self.err(TypeErr, f"{owner}: '{p.name}' must be {want}, got "
                           f"{self.describe(value)}", span)

    def call_def(self, d: A.NetDef, e: A.Call, scope: Scope, statement: bool = False) -> Any:
        """Expand a net or def at a call; `statement`: the call's value is dropped."""
        bound = self.bind_args(d.params, e, scope, d.kind, d.name)
        if d.kind == "def":
            site = scope.sites.get(id(e), d.name)
            prefix = scope.prefix + site + "."
        else:
            prefix = scope.prefix + d.name + "."
        inner = Scope(self.globals, prefix, self.sites(d.body))
        inner.vars.update(bound)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise self.err(TypeErr, f"calls nested more than {MAX_DEPTH} deep", e.span)
        saved = self._span
        self._def_stack.append(d.name)
        try:
            self.exec_body(d.body, inner)
            result = None
        except _Return as r:
            result = r.value
        except DslError as ex:
            raise _at_call_site(ex, d.name, e.span) from None
        finally:
            self._def_stack.pop()
            self._depth -= 1
            self._span = saved
        if result is None and not statement:
            raise self.err(TypeErr, f"{d.kind} '{d.name}' returns nothing, but its value is "
                           f"used here: end the body of '{d.name}' with 'return ...'", e.span,
                           notes=(f"'{d.name}' is defined at {d.span.file}:{d.span.line}:"
                                  f"{d.span.col}",))
        return result

    # ------------------------------------------------------------------ selections
    def select(self, kind: str, where: Any, span: A.Span) -> Selection:
        names = []
        for n, v in sorted(self.variables.items()):
            if v.role != "param":
                continue
            if kind == "frozen_params":
                if v.trainable:
                    continue
            elif not v.trainable:
                continue
            if kind == "weights" and v.kind != "weight":
                continue
            if kind == "biases" and v.kind != "bias":
                continue
            if kind == "scales" and v.kind != "scale":
                continue
            if where is not None and not _match(n, where):
                continue
            names.append(n)
        return Selection(tuple(names))

    # ------------------------------------------------------------------ optimizers
    def prepare_optimizer(self, s: A.OptimizerUse) -> OptUse:
        rule = s.rule.func
        d = self.opt_defs.get(rule)
        if d is None:
            raise self.err(NameErr, f"unknown optimizer '{rule}'"
                           + did_you_mean(rule, self.opt_defs), s.rule.span)
        options: dict[str, Any] = {}
        generic: dict[str, Any] = dict(GENERIC_OPT_OPTIONS)
        if s.rule.args:
            raise self.err(TypeErr, f"optimizer '{rule}' takes keyword options only "
                           "(lr = ...)", s.rule.span)
        params = {p.name: p for p in d.params}
        for k in s.rule.kwargs:
            v = self.ev(k.value, self.globals)
            if k.name in params:
                self.check_kind_of_default(params[k.name], v, k.span, f"optimizer '{rule}'")
                options[k.name] = v
            elif k.name in generic:
                if isinstance(v, Val):
                    raise self.err(TypeErr, f"'{k.name}' must be a constant", k.span)
                generic[k.name] = v
            else:
                valid = [p.name for p in d.params] + list(generic)
                raise self.err(NameErr, f"optimizer '{rule}' has no option '{k.name}'"
                               + did_you_mean(k.name, valid)
                               + f"; its options are: {', '.join(valid)}", k.span)
        for p in d.params:
            if p.name not in options:
                if p.default is None:
                    raise self.err(TypeErr, f"optimizer '{rule}' needs '{p.name}'", s.span)
                options[p.name] = self.ev(p.default, self.globals)
        if s.objective not in self.objectives:
            raise self.err(NameErr, f"unknown objective '{s.objective}'"
                           + did_you_mean(s.objective, self.objectives), s.span)
        if s.over is not None:
            sel = self.ev(s.over, self.globals)
            if isinstance(sel, Val) and sel.node.op == "param":
                sel = Selection((sel.node.name,))
            if not isinstance(sel, Selection):
                raise self.err(TypeErr, f"'over' needs a parameter selection, got "
                               f"{self.describe(sel)}", s.over.span)
        else:
            sel = self.select("params", None, s.span)
        for other in self.opt_uses:
            both = set(other.names) & set(sel.names)
            if both:
                raise self.err(NameErr, f"parameter '{sorted(both)[0]}' is trained by two "
                               "optimizers; give each an 'over' selection", s.span)
        if not sel.names:
            raise self.err(NameErr, f"optimizer '{rule}' has no parameters to train", s.span)
        return OptUse(s, rule, options, generic, s.objective, sel.names)

    def lower_optimizer(self, use: OptUse) -> None:
        d = self.opt_defs[use.rule]
        self._span = use.stmt.span
        obj = self.objectives[use.objective]
        pids = [self.var_node[n] for n in use.names]
        with self.b.context(role="grad", loc=self._loc(use.stmt.span)):
            try:
                grads = gradients(self.b, obj, pids)
            except GradError as ex:
                raise self.err(TypeErr, str(ex), use.stmt.span) from None
        pairs = [(n, p, g) for n, p, g in zip(use.names, pids, grads) if g is not None]
        if not pairs:
            raise self.err(TypeErr, f"objective '{use.objective}' does not depend on any "
                           "parameter the optimizer trains", use.stmt.span)
        gen = use.generic
        with self.b.context(role="update", loc=self._loc(use.stmt.span)):
            gvals = []
            for n, p, g in pairs:
                use.grads[n] = g.id
                if g.node.role == "grad" and g.node.name is None:  # not a shared forward node
                    self.graph.replace_node(g.id, name=f"{n}.grad")
                if gen["weight_decay"] and (self.variables[n].kind == "weight"
                                            or gen["decay_biases"]):
                    g = g + Val(self.b, p) * float(gen["weight_decay"])
                gvals.append(g)
            if gen["clip_value"]:
                c = float(gen["clip_value"])
                gvals = [self.b.emit("maximum", self.b.emit("minimum", g, self.b.lift(c, g)),
                                     self.b.lift(-c, g)) for g in gvals]
            if gen["clip_norm"]:
                total = None
                for g in gvals:
                    sq = self.b.emit("sum", g * g)
                    total = sq if total is None else total + sq
                norm = self.b.emit("sqrt", total)
                scale = self.b.emit("minimum", self.b.lift(1.0, norm),
                                    float(gen["clip_norm"]) / (norm + 1e-6))
                gvals = [g * scale for g in gvals]
            for (n, p, _), g in zip(pairs, gvals):
                scope = Scope(self.globals, f"opt.{n}.", {})
                scope.vars.update(use.options)
                scope.vars["param"] = Val(self.b, p)
                scope.vars["grad"] = g
                scope.vars["obj"] = Val(self.b, obj)
                scope.param = self.variables[n]
                scope.state_vars["param"] = n
                before = dict(self.state_updates)
                try:
                    self.exec_body(d.body, scope)
                except _Return:
                    raise self.err(TypeErr, "an optimizer body does not return", d.span) from None
                for var, nid in self.state_updates.items():
                    if before.get(var) != nid:
                        use.updates[var] = nid
                self.state_updates = before  # a rule's updates belong to its optimizer only
                if n not in use.updates:
                    raise self.err(
                        TypeErr, f"optimizer '{use.rule}' never assigns 'param', so it would "
                        "train nothing: its rule must end with 'param = param - ...'", d.span,
                        notes=(f"used at {use.stmt.span.file}:{use.stmt.span.line}:"
                               f"{use.stmt.span.col}",))


_FLOAT_OPS = {"exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "softplus", "log1p",
              "expm1", "swish", "softmax", "log_softmax", "logsumexp"}


def _match(name: str, where: Any) -> bool:
    import fnmatch

    if isinstance(where, str):
        return fnmatch.fnmatchcase(name, where) or name.startswith(where + ".")
    return False


# ---------------------------------------------------------------------- built-in functions


def _args(low: Lowerer, e: A.Call, scope: Scope, names: list[str],
          defaults: dict[str, Any]) -> dict[str, Any]:
    params = tuple(A.Param(n) for n in names)
    out = {}
    if len(e.args) > len(names):
        raise low.err(TypeErr, f"{e.func}: takes at most {len(names)} arguments, got "
                      f"{len(e.args)}", e.span)
    for n, a in zip(names, e.args):
        out[n] = low.ev(a, scope)
    for k in e.kwargs:
        if k.name not in names:
            raise low.err(NameErr, f"{e.func}: unknown option '{k.name}'"
                          + did_you_mean(k.name, names), k.span)
        out[k.name] = low.ev(k.value, scope)
    for p in params:
        if p.name not in out:
            if p.name not in defaults:
                raise low.err(TypeErr, f"{e.func}: missing argument '{p.name}'", e.span)
            out[p.name] = defaults[p.name]
    return out


def _shape_list(low: Lowerer, v: Any, span: A.Span) -> tuple:
    if isinstance(v, Val):
        raise low.err(TypeErr, "a shape must be a list of dimensions, e.g. [B, 2]", span)
    if isinstance(v, (int, np.integer)):
        return (low.check_dim(v, span, lo=0),)
    out = []
    for d in v:
        if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
            out.append(low.check_dim(d, span, lo=0))
        elif isinstance(d, str):
            out.append(d)
        else:
            raise low.err(TypeErr, f"a dimension must be an integer, got {d!r}", span)
    return tuple(out)


def b_shape(low: Lowerer, e: A.Call, scope: Scope) -> tuple:
    a = _args(low, e, scope, ["x"], {})
    x = a["x"]
    if isinstance(x, Val):
        return tuple(x.shape)
    if isinstance(x, np.ndarray):
        return tuple(x.shape)
    raise low.err(TypeErr, f"shape: expected a tensor, got {low.describe(x)}", e.span)


def b_same_shape(low: Lowerer, e: A.Call, scope: Scope) -> None:
    """`same_shape(pred, target)`: a loss compares a prediction with a target of the same shape
    (a scalar target, such as 1 in `bce_with_logits(D(x), 1)`, broadcasts); emits nothing.
    Without it `mse` of f32[B,1] and f32[B] would silently broadcast to [B,B]."""
    a = _args(low, e, scope, ["pred", "target"], {})
    shapes = [tuple(v.shape) if isinstance(v, Val | np.ndarray) else () for v in a.values()]
    ps, ts = shapes
    if ts == () or ps == ts:
        return None
    p, t = (low.describe(v).removeprefix("a tensor ") for v in a.values())
    n = max(len(ps), len(ts))
    pad_p, pad_t = (1,) * (n - len(ps)) + ps, (1,) * (n - len(ts)) + ts
    if all(x == y or 1 in (x, y) for x, y in zip(pad_p, pad_t)):
        both = [y if x == 1 else x for x, y in zip(pad_p, pad_t)]
        how = f"; they would broadcast to [{', '.join(map(str, both))}]"
    else:
        how = "; they do not broadcast"
    hint = ""
    if ps[:-1] == ts and ps[-1:] == (1,):
        hint = ": give the target the prediction's shape (y[:, None]) or drop the " \
               "prediction's last axis (p[:, 0])"
    elif ts[:-1] == ps and ts[-1:] == (1,):
        hint = ": give the prediction the target's shape (p[:, None]) or drop the target's " \
               "last axis (y[:, 0])"
    raise low.err(ShapeErr, f"the prediction {p} and the target {t} have different shapes"
                  f"{how}{hint}", e.span)


def b_require(low: Lowerer, e: A.Call, scope: Scope) -> None:
    """`require(cond, "message")`: a compile-time check; in a def, the error is reported at
    the user's call (`require(p >= 0 and p < 1, "p must be in [0, 1)")`)."""
    a = _args(low, e, scope, ["cond", "message"], {})
    cond, message = a["cond"], a["message"]
    if isinstance(cond, Val) or not isinstance(message, str):
        raise low.err(TypeErr, "require(cond, \"message\") takes a compile-time condition "
                      "and a string", e.span)
    if not cond:
        raise low.err(TypeErr, message, e.span)


def b_grad(low: Lowerer, e: A.Call, scope: Scope) -> Val:
    a = _args(low, e, scope, ["f", "wrt"], {})
    f, w = a["f"], a["wrt"]
    if not isinstance(f, Val):
        raise low.err(TypeErr, "grad: the first argument must be a scalar tensor", e.span)
    if isinstance(w, Selection) or not isinstance(w, Val):
        raise low.err(TypeErr, "grad: differentiate with respect to one tensor (an input, "
                      "a parameter or an intermediate value)", e.span)
    with low.b.context(role="grad", loc=low._loc(e.span)):
        try:
            (g,) = gradients(low.b, f.id, [w.id])
        except GradError as ex:
            raise low.err(TypeErr, str(ex), e.span) from None
    return or_zeros(low.b, g, w.id)


def b_hessian(low: Lowerer, e: A.Call, scope: Scope) -> Val:
    a = _args(low, e, scope, ["f", "wrt"], {})
    f, w = a["f"], a["wrt"]
    if not isinstance(f, Val) or not isinstance(w, Val):
        raise low.err(TypeErr, "hessian(f, w) takes a scalar and a tensor", e.span)
    with low.b.context(role="grad", loc=low._loc(e.span)):
        try:
            return hessian(low.b, f.id, w.id)
        except GradError as ex:
            raise low.err(TypeErr, str(ex), e.span) from None


def _reduce_builtin(op: str) -> Callable[[Lowerer, A.Call, Scope], Any]:
    def fn(low: Lowerer, e: A.Call, scope: Scope) -> Any:
        a = _args(low, e, scope, ["x", "axis", "keepdims"], {"axis": None, "keepdims": False})
        x = a["x"]
        if isinstance(x, Selection):
            if op != "sum":
                raise low.err(TypeErr, f"{op} of a selection is not defined", e.span)
            return _over_selection(low, x, lambda p: p, e.span)
        axis = tuple(a["axis"]) if isinstance(a["axis"], list) else a["axis"]
        if not isinstance(x, Val):
            arr = np.asarray(x)
            return getattr(np, {"sum": "sum", "mean": "mean", "max": "max", "min": "min"}[op])(
                arr, axis=axis, keepdims=a["keepdims"])
        if op == "mean" and not x.type.is_float:
            x = low.b.emit("cast", x, dtype=low.float_dtype)
        with low.guard(e.span):
            return low.b.emit(op, x, axis=axis, keepdims=a["keepdims"])
    return fn


def _over_selection(low: Lowerer, sel: Selection, f: Callable[[Val], Val],
                    span: A.Span) -> Val:
    if not sel.names:
        return low.const_val(0.0, span)
    total = None
    with low.guard(span):
        for n in sel.names:
            t = low.b.emit("sum", f(Val(low.b, low.var_node[n])))
            total = t if total is None else total + t
    return total


def b_l2(low: Lowerer, e: A.Call, scope: Scope) -> Val:
    """l2(x) = Σ x² over a tensor or over every parameter of a selection."""
    a = _args(low, e, scope, ["x"], {})
    x = a["x"]
    if isinstance(x, Selection):
        return _over_selection(low, x, lambda p: p * p, e.span)
    x = low.to_val(x, e.span)
    return low.b.emit("sum", x * x)


def b_l1(low: Lowerer, e: A.Call, scope: Scope) -> Val:
    """l1(x) = Σ |x| over a tensor or a selection."""
    a = _args(low, e, scope, ["x"], {})
    x = a["x"]
    if isinstance(x, Selection):
        return _over_selection(low, x, lambda p: low.b.emit("abs", p), e.span)
    x = low.to_val(x, e.span)
    return low.b.emit("sum", low.b.emit("abs", x))


def _selection_builtin(kind: str) -> Callable[[Lowerer, A.Call, Scope], Selection]:
    def fn(low: Lowerer, e: A.Call, scope: Scope) -> Selection:
        if len(e.args) != 1 or e.kwargs:
            raise low.err(TypeErr, f"{kind}(net) takes one net name or a pattern string",
                          e.span)
        arg = e.args[0]
        if isinstance(arg, A.Name) and (arg.id in low.defs or not scope.lookup(arg.id)[0]):
            where = arg.id
        else:
            where = low.ev(arg, scope)
            if not isinstance(where, str):
                raise low.err(TypeErr, f"{kind}(...) takes a net name or a pattern string",
                              arg.span)
        sel = low.select(kind, where, e.span)
        if not sel.names:
            raise low.err(NameErr, f"{kind}({where}) selects no parameters", e.span)
        return sel
    return fn


def _random_builtin(op: str, opts: list[str], defaults: dict[str, Any]):
    def fn(low: Lowerer, e: A.Call, scope: Scope) -> Any:
        if not e.args and inits.canonical(e.func):  # `param w: [3] = normal(std = 0.1)`
            return InitSpec(inits.canonical(e.func),
                            {k.name: low.ev(k.value, scope) for k in e.kwargs}, e.span)
        a = _args(low, e, scope, opts, defaults)
        shape = a.pop("shape")
        if isinstance(shape, Val):
            shape = shape.shape
        shape = _shape_list(low, shape, e.span)
        dt = a.pop("dtype", None)
        if any(isinstance(v, Val) or not isinstance(v, int | float) for v in a.values()):
            raise low.err(TypeErr, f"{e.func}: options must be constant numbers", e.span)
        attrs: dict[str, Any] = {k: float(v) for k, v in a.items()}
        attrs["dtype"] = low.float_dtype if dt is None else low.fdt(dt)
        with low.guard(e.span):
            return low.b.emit(op, shape=shape, **attrs)
    return fn


def b_randint(low: Lowerer, e: A.Call, scope: Scope) -> Val:
    a = _args(low, e, scope, ["low", "high", "shape"], {})
    shape = _shape_list(low, a["shape"], e.span)
    with low.guard(e.span):
        return low.b.emit("random_randint", shape=shape, low=int(a["low"]),
                          high=int(a["high"]), dtype="i64")


def _fill_builtin(value: float | None):
    def fn(low: Lowerer, e: A.Call, scope: Scope) -> Any:
        names = ["shape"] + (["value"] if value is None else []) + ["dtype"]
        a = _args(low, e, scope, names, {"dtype": None})
        v = a.get("value", value)
        if isinstance(a["shape"], Val):
            raise low.err(TypeErr, f"{e.func}: give a shape list; for a tensor use "
                          f"{e.func}_like", e.span)
        shape = _shape_list(low, a["shape"], e.span)
        dt = low.fdt(a["dtype"]) if a["dtype"] in (None, *FLOAT_DTYPES) else a["dtype"]
        if all(isinstance(d, int) for d in shape):
            return np.full(shape, v, dtype=TensorType(dt, ()).np_dtype())
        return low.b.emit("full", shape=shape, value=float(v), dtype=dt)
    return fn


def _fill_like_builtin(value: float | None):
    def fn(low: Lowerer, e: A.Call, scope: Scope) -> Any:
        names = ["x"] + (["value"] if value is None else [])
        a = _args(low, e, scope, names, {})
        x = a["x"]
        v = a.get("value", value)
        if not isinstance(x, Val):
            return np.full(np.shape(x), v, dtype=np.float64)
        return low.b.emit("full", shape=x.shape, value=float(v), dtype=x.type.dtype)
    return fn


def b_cast(low: Lowerer, e: A.Call, scope: Scope) -> Val:
    a = _args(low, e, scope, ["x", "dtype"], {})
    dt = a["dtype"]
    if dt not in DTYPES:
        raise low.err(TypeErr, f"cast: unknown dtype {dt!r}", e.span)
    x = low.to_val(a["x"], e.span)
    return low.b.emit("cast", x, dtype=low.fdt(dt))


def b_split(low: Lowerer, e: A.Call, scope: Scope) -> tuple:
    a = _args(low, e, scope, ["x", "sections", "axis"], {"axis": -1})
    x = low.to_val(a["x"], e.span)
    r = x.type.rank
    ax = a["axis"] % r
    d = x.shape[ax]
    n = a["sections"]
    if not isinstance(d, int) or not isinstance(n, int) or n <= 0 or d % n:
        raise low.err(ShapeErr, f"split: cannot split dimension {d} of {x.type} into {n} "
                      "equal parts", e.span)
    k = d // n
    pre = tuple(("s", None, None, None) for _ in range(ax))
    with low.guard(e.span):
        return tuple(low.b.emit("getitem", x, index=pre + (("s", i * k, (i + 1) * k, None),))
                     for i in range(n))


def _tensors_and_axis(low: Lowerer, e: A.Call, scope: Scope) -> tuple[list[Val], Any]:
    """The arguments of concat/stack (lists are spread) and their `axis` option."""
    axis = 0
    for k in e.kwargs:
        if k.name != "axis":
            raise low.err(NameErr, f"{e.func}: unknown option '{k.name}'", k.span)
        axis = low.ev(k.value, scope)
    items = []
    for a in e.args:
        v = low.ev(a, scope)
        items.extend(v if isinstance(v, (list, tuple)) else [v])
    return [low.to_val(v, e.span) for v in items], axis


def b_concat(low: Lowerer, e: A.Call, scope: Scope) -> Val:
    vals, axis = _tensors_and_axis(low, e, scope)
    with low.guard(e.span):
        return low.b.emit("concat", *vals, axis=axis)


def b_stack(low: Lowerer, e: A.Call, scope: Scope) -> Val:
    vals, axis = _tensors_and_axis(low, e, scope)
    with low.guard(e.span):
        ex = []
        for v in vals:
            ax = axis % (v.type.rank + 1)
            ex.append(low.b.emit("reshape", v, shape=v.shape[:ax] + (1,) + v.shape[ax:]))
        return low.b.emit("concat", *ex, axis=axis)


def b_reshape(low: Lowerer, e: A.Call, scope: Scope) -> Val:
    a = _args(low, e, scope, ["x", "shape"], {})
    x = low.to_val(a["x"], e.span)
    shape = tuple(int(d) if isinstance(d, (int, np.integer)) else d for d in a["shape"])
    with low.guard(e.span):
        return low.b.emit("reshape", x, shape=shape)


def b_flatten(low: Lowerer, e: A.Call, scope: Scope) -> Val:
    a = _args(low, e, scope, ["x"], {})
    x = low.to_val(a["x"], e.span)
    with low.guard(e.span):
        return low.b.emit("reshape", x, shape=(x.shape[0], -1))


def b_transpose(low: Lowerer, e: A.Call, scope: Scope) -> Val:
    a = _args(low, e, scope, ["x", "axes"], {"axes": None})
    x = low.to_val(a["x"], e.span)
    axes = tuple(a["axes"]) if a["axes"] is not None else None
    with low.guard(e.span):
        return low.b.emit("transpose", x, axes=axes)


def b_numpy(fn: Callable[..., Any], names: list[str], defaults: dict[str, Any],
            size: Callable[..., float] | None = None):
    """A compile-time NumPy function over constants (linspace, arange, cumprod, ...);
    `size(**args)`: the number of elements it would make, checked before it runs."""
    def call(low: Lowerer, e: A.Call, scope: Scope) -> Any:
        a = _args(low, e, scope, names, defaults)
        if any(isinstance(v, Val) for v in a.values()):
            raise low.err(TypeErr, f"{e.func} runs at compile time and needs constants",
                          e.span)
        try:
            n = size(**a) if size is not None else 0
            if n > MAX_CONST_ELEMENTS:
                raise low.err(ShapeErr, f"{e.func} would make {n:.3g} elements, more than the "
                              f"limit of {MAX_CONST_ELEMENTS:,} for a compile-time constant"
                              + low.override_note(*a.values()), e.span)
            return fn(**a)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError) as ex:
            raise low.err(TypeErr, f"{e.func}: {ex}", e.span) from None
    return call


def b_len(low: Lowerer, e: A.Call, scope: Scope) -> int:
    a = _args(low, e, scope, ["x"], {})
    x = a["x"]
    if isinstance(x, Val):
        d = x.shape[0]
        if not isinstance(d, int):
            raise low.err(TypeErr, "len: the first dimension is symbolic", e.span)
        return d
    if isinstance(x, Selection):
        return len(x.names)
    return len(x)


def b_num_params(low: Lowerer, e: A.Call, scope: Scope) -> int:
    a = _args(low, e, scope, ["sel"], {})
    sel = a["sel"]
    if not isinstance(sel, Selection):
        raise low.err(TypeErr, "count(selection)", e.span)
    return int(sum(low.variables[n].size for n in sel.names))


def b_pair(low: Lowerer, e: A.Call, scope: Scope) -> tuple:
    """pair(3) = (3, 3); pair([3, 5]) = (3, 5): kernel sizes, strides, dilations."""
    a = _args(low, e, scope, ["v"], {})
    v = a["v"]
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v), int(v))
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return (int(v[0]), int(v[1]))
    raise low.err(TypeErr, f"expected an integer or a pair of integers, got {v!r}", e.span)


def b_conv_padding(low: Lowerer, e: A.Call, scope: Scope) -> Any:
    """Resolve a padding option: "valid" = 0, "same" = the padding that keeps the size at
    stride 1 (split low/high like PyTorch), or integers as given."""
    a = _args(low, e, scope, ["padding", "kernel", "dilation"], {"dilation": 1})
    pad, k, dil = a["padding"], a["kernel"], a["dilation"]
    ks = (k,) if isinstance(k, (int, np.integer)) else tuple(k)
    ds = (dil,) * len(ks) if isinstance(dil, (int, np.integer)) else tuple(dil)
    if pad == "valid":
        return 0 if len(ks) == 1 else (0, 0)
    if pad == "same":
        out: list[int] = []
        for kk, dd in zip(ks, ds):
            total = dd * (kk - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    if isinstance(pad, str):
        raise low.err(TypeErr, f"padding must be \"same\", \"valid\" or integers, got {pad!r}"
                      + did_you_mean(pad, ["same", "valid"]), e.span)
    return tuple(pad) if isinstance(pad, list) else pad


BUILTINS: dict[str, Callable[[Lowerer, A.Call, Scope], Any]] = {
    "pair": b_pair,
    "conv_padding": b_conv_padding,
    "shape": b_shape,
    "same_shape": b_same_shape,
    "require": b_require,
    "grad": b_grad,
    "hessian": b_hessian,
    "sum": _reduce_builtin("sum"),
    "mean": _reduce_builtin("mean"),
    "max": _reduce_builtin("max"),
    "min": _reduce_builtin("min"),
    "l1": b_l1,
    "l2": b_l2,
    "params": _selection_builtin("params"),
    "weights": _selection_builtin("weights"),
    "biases": _selection_builtin("biases"),
    "scales": _selection_builtin("scales"),
    "normal": _random_builtin("random_normal", ["shape", "std", "mean", "dtype"],
                              {"std": 1.0, "mean": 0.0, "dtype": None}),
    "uniform": _random_builtin("random_uniform", ["shape", "low", "high", "dtype"],
                               {"low": 0.0, "high": 1.0, "dtype": None}),
    "bernoulli": _random_builtin("random_bernoulli", ["shape", "p", "dtype"],
                                 {"p": 0.5, "dtype": None}),
    "randint": b_randint,
    "zeros": _fill_builtin(0.0),
    "ones": _fill_builtin(1.0),
    "full": _fill_builtin(None),
    "zeros_like": _fill_like_builtin(0.0),
    "ones_like": _fill_like_builtin(1.0),
    "full_like": _fill_like_builtin(None),
    "cast": b_cast,
    "split": b_split,
    "concat": b_concat,
    "stack": b_stack,
    "reshape": b_reshape,
    "flatten": b_flatten,
    "transpose": b_transpose,
    "len": b_len,
    "count": b_num_params,
    "linspace": b_numpy(lambda start, stop, num: np.linspace(start, stop, int(num)),
                        ["start", "stop", "num"], {}, size=lambda start, stop, num: num),
    "arange": b_numpy(lambda start, stop, step: np.arange(start, stop, step),
                      ["start", "stop", "step"], {"step": 1},
                      size=lambda start, stop, step: (stop - start) / step),
    "cumprod": b_numpy(lambda x: np.cumprod(np.asarray(x, dtype=np.float64)), ["x"], {}),
    "cumsum": b_numpy(lambda x: np.cumsum(np.asarray(x, dtype=np.float64)), ["x"], {}),
    "eye": b_numpy(lambda n: np.eye(int(n)), ["n"], {}, size=lambda n: n * n),
    "array": b_numpy(lambda x: np.asarray(x, dtype=np.float64), ["x"], {}),
    "int": b_numpy(lambda x: int(x), ["x"], {}),
    "float": b_numpy(lambda x: float(x), ["x"], {}),
    "pi": b_numpy(lambda: math.pi, [], {}),
}
