"""The spec AST: frozen dataclasses with source spans, built by `dsl.parser`.

Every node carries a `span` (file, line, col, end_line, end_col; 1-based). Equality ignores
spans (`compare=False`), so `parse(print(ast)) == ast` is the round-trip law.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A source range: 1-based line and column of the first and last character."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NO_SPAN = Span("<none>", 0, 0, 0, 0)


def _span() -> Span:
    return field(default=NO_SPAN, compare=False, repr=False)


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Num:
    """A numeric literal; `text` keeps the spelling (`1e-3`), `value` is int or float."""

    value: int | float
    text: str
    span: Span = _span()


@dataclass(frozen=True)
class Str:
    value: str
    span: Span = _span()


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span = _span()


@dataclass(frozen=True)
class NoneLit:
    """`None` inside an index (new axis) or as an argument value."""

    span: Span = _span()


@dataclass(frozen=True)
class Name:
    id: str
    span: Span = _span()


@dataclass(frozen=True)
class Attribute:
    """`value.attr`, e.g. `train.x` or a hierarchical parameter name `enc.dense1.W`."""

    value: Expr
    attr: str
    span: Span = _span()


@dataclass(frozen=True)
class BinOp:
    """op is one of + - * / @ ** % // and or."""

    op: str
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True)
class UnaryOp:
    """op is one of - + not."""

    op: str
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Compare:
    """op is one of < <= > >= == != (non-associative)."""

    op: str
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Call:
    """`func(args, name=value)`; `func` is a bare name (op, layer, net, helper)."""

    func: str
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Slice:
    """`start:stop:step` inside an index; missing parts are None."""

    start: Expr | None
    stop: Expr | None
    step: Expr | None
    span: Span = _span()


@dataclass(frozen=True)
class Index:
    """`value[i, j:k, None]`: items are expressions, Slice, or NoneLit (new axis)."""

    value: Expr
    items: tuple[Expr | Slice, ...]
    span: Span = _span()


@dataclass(frozen=True)
class TupleExpr:
    """`(a, b)` or a bare `a, b` on the right of `=` / after `return`."""

    items: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True)
class ListExpr:
    """`[a, b, c]`: a compile-time list (shapes, piecewise schedules, order lists)."""

    items: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True)
class EllipsisLit:
    """`...` as a type dimension: `i32[...]` (any shape)."""

    span: Span = _span()


Expr = (
    Num | Str | Bool | NoneLit | Name | Attribute | BinOp | UnaryOp | Compare | Call | Index
    | TupleExpr | ListExpr | EllipsisLit
)


# ---------------------------------------------------------------- types


@dataclass(frozen=True)
class TypeExpr:
    """`f32[B, 64]`, `i64[B]`, `f64[]`, or `[n, m]` (dtype None: the float dtype)."""

    dtype: str | None
    dims: tuple[Expr, ...]
    span: Span = _span()


# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class Param:
    """A formal parameter of a net/def/optimizer/procedure: `name`, `name = default`,
    or `name: type` (procedures take typed tensor arguments)."""

    name: str
    default: Expr | None = None
    type: TypeExpr | None = None
    span: Span = _span()


@dataclass(frozen=True)
class ModelDecl:
    name: str
    span: Span = _span()


@dataclass(frozen=True)
class Include:
    path: str
    span: Span = _span()


@dataclass(frozen=True)
class DataDecl:
    """`data digits(test_fraction = 0.2)`; `source.func` names the data set."""

    source: Call
    span: Span = _span()


@dataclass(frozen=True)
class InputDecl:
    """`input x: f32[B, 64]` or with a default value `input x: f64[] = 1.0`."""

    name: str
    type: TypeExpr
    default: Expr | None
    span: Span = _span()


@dataclass(frozen=True)
class ConstDecl:
    name: str
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class ParamDecl:
    """`param W: [n, m] = xavier_normal as weight` / `frozen S: [2, P] = normal(std = 1)`.

    `kind` is the optional `as NAME` tag (weight, bias, scale); `frozen` marks
    a non-trainable parameter.
    """

    name: str
    type: TypeExpr
    init: Expr
    frozen: bool
    kind: str | None
    span: Span = _span()


@dataclass(frozen=True)
class StateDecl:
    """`state v = zeros_like(param)` or `state run_mean: [n] = zeros`."""

    name: str
    type: TypeExpr | None
    init: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Target:
    """An assignment target: a name, optionally indexed (`alpha[i] = ...`)."""

    name: str
    index: tuple[Expr | Slice, ...] | None
    span: Span = _span()


@dataclass(frozen=True)
class Assign:
    """`a = e`, `a, b = e`, `alpha[i] = e`."""

    targets: tuple[Target, ...]
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class ExprStmt:
    """A bare expression statement (e.g. a call for its effect inside a procedure)."""

    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Return:
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Emit:
    """`emit e` inside a run-time loop: append e to the procedure's output series."""

    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class For:
    """`for t in a .. b { }`: compile-time unrolled; the body shares weights across iterations.
    `reverse` is true for `for t in b .. a` written with `reversed`: `for t in reversed a .. b`."""

    var: str
    start: Expr
    stop: Expr
    reverse: bool
    body: tuple[Stmt, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Repeat:
    """`repeat blocks i in 0 .. N { }`: compile-time unrolled; each repetition owns its weights,
    named `blocks.0.*`, `blocks.1.*` (`name` is the scope name)."""

    name: str
    var: str
    start: Expr
    stop: Expr
    body: tuple[Stmt, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Loop:
    """`loop s in a .. b { }`: a run-time loop, body compiled once (procedures)."""

    var: str
    start: Expr
    stop: Expr
    body: tuple[Stmt, ...]
    span: Span = _span()


@dataclass(frozen=True)
class If:
    """Compile-time conditional on constants; `orelse` may hold a nested If."""

    cond: Expr
    body: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]
    span: Span = _span()


@dataclass(frozen=True)
class NetDef:
    """`net NAME(params) { }` (one set of weights shared by every call) or
    `def NAME(params) { }` (each call site owns its weights: layers)."""

    kind: str  # "net" | "def"
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span = _span()


@dataclass(frozen=True)
class ObjectiveDecl:
    name: str
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class MetricDecl:
    name: str
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class OutputDecl:
    name: str
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class OptimizerDef:
    """`optimizer NAME(params) { state ...; assignments to state and `param` }`."""

    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span = _span()


@dataclass(frozen=True)
class OptimizerUse:
    """`optimizer adam(lr = 1e-3) minimize loss over params(D)`."""

    rule: Call
    objective: str
    over: Expr | None
    span: Span = _span()


@dataclass(frozen=True)
class Setting:
    name: str
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class TrainDecl:
    settings: tuple[Setting, ...]
    span: Span = _span()


@dataclass(frozen=True)
class UpdateBlock:
    """`update { alpha[i] = ... }`: a non-gradient update rule run every step."""

    body: tuple[Stmt, ...]
    span: Span = _span()


@dataclass(frozen=True)
class ProcedureDef:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span = _span()


Stmt = (
    ModelDecl | Include | DataDecl | InputDecl | ConstDecl | ParamDecl | StateDecl | Assign
    | ExprStmt | Return | Emit | For | Repeat | Loop | If | NetDef | ObjectiveDecl | MetricDecl
    | OutputDecl | OptimizerDef | OptimizerUse | TrainDecl | UpdateBlock | ProcedureDef
)


@dataclass(frozen=True)
class Program:
    body: tuple[Stmt, ...]
    file: str = field(default="<string>", compare=False)
    span: Span = _span()
