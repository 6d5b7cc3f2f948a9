"""The spec AST: immutable records with source spans, built by `dsl.parser`.

Every node carries a `span` (file, line, col, end_line, end_col; 1-based). Equality ignores
spans, so `parse(print(ast)) == ast` is the round-trip law.

The records behave like `@dataclass(frozen=True)` classes (positional or keyword fields,
defaults, equality and hash over the compared fields, a repr, no assignment) but are built
by the `Node` base class without generating code: creating ~50 dataclasses compiles ~300
methods, ~45 ms of every `dslrun` start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar


class FrozenError(AttributeError):
    """Raised on an attempt to change an AST node."""


class Node:
    """Base of the AST records: the annotated class attributes are the fields, in order."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _field_set: ClassVar[frozenset[str]] = frozenset()
    _defaults: ClassVar[dict[str, Any]] = {}
    _compared: ClassVar[tuple[str, ...]] = ()
    _uncompared: ClassVar[frozenset[str]] = frozenset({"span"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = tuple(n for n, t in cls.__dict__.get("__annotations__", {}).items()
                      if not str(t).startswith("ClassVar"))
        cls._fields = names
        cls._field_set = frozenset(names)
        cls._defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
        cls._compared = tuple(n for n in names if n not in cls._uncompared)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self._fields
        name = type(self).__name__
        if len(args) > len(fields):
            raise TypeError(f"{name}() takes {len(fields)} fields, got {len(args)}")
        d = self.__dict__
        d.update(zip(fields, args))
        for k, v in kwargs.items():
            if k not in self._field_set or k in d:
                raise TypeError(f"{name}() got an unexpected or repeated field {k!r}")
            d[k] = v
        if len(d) < len(fields):
            for f in fields:
                if f not in d:
                    if f not in self._defaults:
                        raise TypeError(f"{name}() is missing field {f!r}")
                    d[f] = self._defaults[f]

    def _key(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[f] for f in self._compared)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={self.__dict__[f]!r}" for f in self._fields if f != "span")
        return f"{type(self).__name__}({shown})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenError(f"cannot assign to field {name!r} of an AST node")

    def __delattr__(self, name: str) -> None:
        raise FrozenError(f"cannot delete field {name!r} of an AST node")


class Span(Node):
    """A source range: 1-based line and column of the first and last character."""

    _uncompared = frozenset()

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NO_SPAN = Span("<none>", 0, 0, 0, 0)


# ---------------------------------------------------------------- expressions


class Num(Node):
    """A numeric literal; `text` keeps the spelling (`1e-3`), `value` is int or float."""

    value: int | float
    text: str
    span: Span = NO_SPAN


class Str(Node):
    value: str
    span: Span = NO_SPAN


class Bool(Node):
    value: bool
    span: Span = NO_SPAN


class NoneLit(Node):
    """`None` inside an index (new axis) or as an argument value."""

    span: Span = NO_SPAN


class Name(Node):
    id: str
    span: Span = NO_SPAN


class Attribute(Node):
    """`value.attr`, e.g. `train.x` or a hierarchical parameter name `enc.dense1.W`."""

    value: Expr
    attr: str
    span: Span = NO_SPAN


class BinOp(Node):
    """op is one of + - * / @ ** % // and or."""

    op: str
    left: Expr
    right: Expr
    span: Span = NO_SPAN


class UnaryOp(Node):
    """op is one of - + not."""

    op: str
    operand: Expr
    span: Span = NO_SPAN


class Compare(Node):
    """op is one of < <= > >= == != (non-associative)."""

    op: str
    left: Expr
    right: Expr
    span: Span = NO_SPAN


class Keyword(Node):
    name: str
    value: Expr
    span: Span = NO_SPAN


class Call(Node):
    """`func(args, name=value)`; `func` is a bare name (op, layer, net, helper)."""

    func: str
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...]
    span: Span = NO_SPAN


class Slice(Node):
    """`start:stop:step` inside an index; missing parts are None."""

    start: Expr | None
    stop: Expr | None
    step: Expr | None
    span: Span = NO_SPAN


class Index(Node):
    """`value[i, j:k, None]`: items are expressions, Slice, or NoneLit (new axis)."""

    value: Expr
    items: tuple[Expr | Slice, ...]
    span: Span = NO_SPAN


class TupleExpr(Node):
    """`(a, b)` or a bare `a, b` on the right of `=` / after `return`."""

    items: tuple[Expr, ...]
    span: Span = NO_SPAN


class ListExpr(Node):
    """`[a, b, c]`: a compile-time list (shapes, piecewise schedules, order lists)."""

    items: tuple[Expr, ...]
    span: Span = NO_SPAN


class EllipsisLit(Node):
    """`...` as a type dimension: `i32[...]` (any shape)."""

    span: Span = NO_SPAN


Expr = (
    Num | Str | Bool | NoneLit | Name | Attribute | BinOp | UnaryOp | Compare | Call | Index
    | TupleExpr | ListExpr | EllipsisLit
)


# ---------------------------------------------------------------- types


class TypeExpr(Node):
    """`f32[B, 64]`, `i64[B]`, `f64[]`, or `[n, m]` (dtype None: the float dtype)."""

    dtype: str | None
    dims: tuple[Expr, ...]
    span: Span = NO_SPAN


# ---------------------------------------------------------------- statements


class Param(Node):
    """A formal parameter of a net/def/optimizer/procedure: `name`, `name = default`,
    or `name: type` (procedures take typed tensor arguments)."""

    name: str
    default: Expr | None = None
    type: TypeExpr | None = None
    span: Span = NO_SPAN


class ModelDecl(Node):
    name: str
    span: Span = NO_SPAN


class Include(Node):
    path: str
    span: Span = NO_SPAN


class DataDecl(Node):
    """`data digits(test_fraction = 0.2)`; `source.func` names the data set."""

    source: Call
    span: Span = NO_SPAN


class InputDecl(Node):
    """`input x: f32[B, 64]` or with a default value `input x: f64[] = 1.0`."""

    name: str
    type: TypeExpr
    default: Expr | None
    span: Span = NO_SPAN


class ConstDecl(Node):
    name: str
    value: Expr
    span: Span = NO_SPAN


class ParamDecl(Node):
    """`param W: [n, m] = xavier_normal as weight` / `frozen S: [2, P] = normal(std = 1)`.

    `kind` is the optional `as NAME` tag (weight, bias, scale); `frozen` marks
    a non-trainable parameter.
    """

    name: str
    type: TypeExpr
    init: Expr
    frozen: bool
    kind: str | None
    span: Span = NO_SPAN


class StateDecl(Node):
    """`state v = zeros_like(param)` or `state run_mean: [n] = zeros`."""

    name: str
    type: TypeExpr | None
    init: Expr
    span: Span = NO_SPAN


class Target(Node):
    """An assignment target: a name, optionally indexed (`alpha[i] = ...`)."""

    name: str
    index: tuple[Expr | Slice, ...] | None
    span: Span = NO_SPAN


class Assign(Node):
    """`a = e`, `a, b = e`, `alpha[i] = e`."""

    targets: tuple[Target, ...]
    value: Expr
    span: Span = NO_SPAN


class ExprStmt(Node):
    """A bare expression statement (e.g. a call for its effect inside a procedure)."""

    value: Expr
    span: Span = NO_SPAN


class Return(Node):
    value: Expr
    span: Span = NO_SPAN


class Emit(Node):
    """`emit e [as name]` inside a run-time loop: e of every iteration, stacked, is bound to
    `name` (default: e's own name) after the loop."""

    value: Expr
    name: str | None = None
    span: Span = NO_SPAN


class For(Node):
    """`for t in a .. b { }`: compile-time unrolled; the body shares weights across iterations.
    `reverse` is true for `for t in b .. a` written with `reversed`: `for t in reversed a .. b`."""

    var: str
    start: Expr
    stop: Expr
    reverse: bool
    body: tuple[Stmt, ...]
    span: Span = NO_SPAN


class Repeat(Node):
    """`repeat blocks i in 0 .. N { }`: compile-time unrolled; each repetition owns its weights,
    named `blocks.0.*`, `blocks.1.*` (`name` is the scope name)."""

    name: str
    var: str
    start: Expr
    stop: Expr
    body: tuple[Stmt, ...]
    span: Span = NO_SPAN


class Loop(Node):
    """`loop t in [reversed] a .. b [until c] [, max = N] [, checkpoint = K] [, count = n] { }`:
    a run-time loop whose body is compiled once; t runs over a, ..., b - 1 (downwards when
    reversed). `until` is the stop condition, evaluated after each iteration; `options` are
    the `name = value` clauses (`max`, `checkpoint`, `count`), in source order."""

    var: str
    start: Expr
    stop: Expr
    body: tuple[Stmt, ...]
    reverse: bool = False
    until: Expr | None = None
    options: tuple[Setting, ...] = ()
    span: Span = NO_SPAN


class If(Node):
    """Compile-time conditional on constants; `orelse` may hold a nested If."""

    cond: Expr
    body: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]
    span: Span = NO_SPAN


class NetDef(Node):
    """`net NAME(params) { }` (one set of weights shared by every call) or
    `def NAME(params) { }` (each call site owns its weights: layers)."""

    kind: str  # "net" | "def"
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span = NO_SPAN


class ObjectiveDecl(Node):
    name: str
    value: Expr
    span: Span = NO_SPAN


class MetricDecl(Node):
    name: str
    value: Expr
    span: Span = NO_SPAN


class OutputDecl(Node):
    name: str
    value: Expr
    span: Span = NO_SPAN


class OptimizerDef(Node):
    """`optimizer NAME(params) { state ...; assignments to state and `param` }`."""

    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span = NO_SPAN


class OptimizerUse(Node):
    """`optimizer adam(lr = 1e-3) minimize loss over params(D)`."""

    rule: Call
    objective: str
    over: Expr | None
    span: Span = NO_SPAN


class Setting(Node):
    name: str
    value: Expr
    span: Span = NO_SPAN


class TrainDecl(Node):
    settings: tuple[Setting, ...]
    span: Span = NO_SPAN


class UpdateBlock(Node):
    """`update { alpha[i] = ... }`: a non-gradient update rule run every step."""

    body: tuple[Stmt, ...]
    span: Span = NO_SPAN


class ProcedureDef(Node):
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span = NO_SPAN


Stmt = (
    ModelDecl | Include | DataDecl | InputDecl | ConstDecl | ParamDecl | StateDecl | Assign
    | ExprStmt | Return | Emit | For | Repeat | Loop | If | NetDef | ObjectiveDecl | MetricDecl
    | OutputDecl | OptimizerDef | OptimizerUse | TrainDecl | UpdateBlock | ProcedureDef
)


class Program(Node):
    _uncompared = frozenset({"span", "file"})

    body: tuple[Stmt, ...]
    file: str = "<string>"
    span: Span = NO_SPAN


def contains(node: Any, pred: Callable[[Node], bool]) -> bool:
    """Whether `node` (a node, or a tuple or list of them) or a node below it satisfies
    `pred`. Iterative, as `deeper_than`."""
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple | list):
            stack.extend(item)
        elif isinstance(item, Node) and not isinstance(item, Span):
            if pred(item):
                return True
            stack.extend(item.__dict__[f] for f in item._fields if f != "span")
    return False


def deeper_than(node: Node, limit: int) -> Node | None:
    """The first node (in source order) nested more than `limit` levels below `node`, or
    None. Iterative: the check that keeps the recursive walks (lowering, printing, hashing)
    within Python's recursion limit must not hit it itself."""
    stack: list[tuple[Any, int]] = [(node, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, tuple):
            stack.extend((x, depth) for x in reversed(item))
            continue
        if not isinstance(item, Node) or isinstance(item, Span):
            continue
        if depth > limit:
            return item
        stack.extend((item.__dict__[f], depth + 1) for f in reversed(item._fields)
                     if f != "span")
    return None
