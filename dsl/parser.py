"""Spec text -> `dsl.ast.Program`.

The grammar is `grammar/dsl.lark` (package data), parsed by Lark's LALR(1) parser with the
basic lexer (keywords are reserved words) and `propagate_positions=True`. Two pieces live here:

* `_PostLexer` drops newline tokens inside `( )` / `[ ]` and directly before `else`, and
  tracks the open brackets so that errors can say which bracket was never closed;
* `_Builder`, a Lark `Transformer`, turns the parse tree into the immutable AST records, with a
  `Span` on every node.

The syntax errors moved to `dsl.syntax_errors`: `parse` hands any Lark exception to its
`syntax_error`, which makes a `SyntaxErr` with a readable message.

The Lark parser is built once per process. Building the LALR tables costs ~0.4 s, so the
built parser is cached (Lark's `cache=` option) in the private store of `dsl.store`,
published with an atomic rename. A missing, unusable or corrupt cache only costs the rebuild.
`dsl.cache.parse_cached` also keeps parsed ASTs of unchanged files there.
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsl import ast as A
from dsl.errors import DslError, SyntaxErr, did_you_mean, register_source
from dsl.store import cache_dir, grammar_path, is_own_file, publish
from runtime.dtypes import DTYPES

if "lark" not in sys.modules and "regex" not in sys.modules:
    # Lark imports the third-party `regex` package when installed (~15 ms) but only uses it
    # for Lark(regex=True); hide it while lark loads. Later `import regex` works as usual.
    sys.modules["regex"] = None  # type: ignore[assignment]
    try:
        import lark
    finally:
        del sys.modules["regex"]

import lark  # noqa: E402
from lark import Lark, Token, Tree, v_args  # noqa: E402
from lark.exceptions import (  # noqa: E402
    LarkError,
    UnexpectedInput,
    VisitError,
)
from lark.visitors import Transformer_NonRecursive  # noqa: E402

from dsl.syntax_errors import CLOSERS, OPENERS, syntax_error, token_span  # noqa: E402

__all__ = ["LOOP_OPTIONS", "MAX_NESTING", "check_nesting", "get_parser", "parse"]

LOOP_OPTIONS = ("max", "checkpoint", "count")  # `loop t in a .. b, NAME = value { }`
# AST levels a spec may nest: lowering walks the AST recursively, about 5 Python frames a
# level for calls, and must stay within Python's default recursion limit of 1000
MAX_NESTING = 100

_LARK_OPTIONS: dict[str, Any] = {
    "parser": "lalr",
    "lexer": "basic",
    "propagate_positions": True,
    "maybe_placeholders": True,
}


# ---------------------------------------------------------------- postlexer


class _ParseState(threading.local):
    """Per-thread state of the parse in progress: the open brackets, for error messages."""

    def __init__(self) -> None:
        self.open: list[Token] = []
        self.stray: Token | None = None


_STATE = _ParseState()


class _PostLexer:
    """Drop `_NL` inside ( ) and [ ] and before `else`; remember the open brackets.

    The basic lexer does not depend on the parser state, so holding one newline back to see
    whether `else` follows it is safe.
    """

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        state = _STATE
        opened: list[Token] = []
        state.open = opened
        state.stray = None
        newline: Token | None = None
        for tok in stream:
            kind = tok.type
            if kind == "_NL":
                if (not opened or opened[-1].type == "LBRACE") and newline is None:
                    newline = tok
                continue
            if newline is not None:
                if kind != "ELSE":
                    yield newline
                newline = None
            if kind in OPENERS:
                opened.append(tok)
            elif kind in CLOSERS:
                if opened and opened[-1].type == CLOSERS[kind]:
                    opened.pop()
                else:
                    state.stray = tok  # does not close the innermost open bracket
            yield tok
        if newline is not None:
            yield newline


# ---------------------------------------------------------------- building the parser


def _grammar_text() -> str:
    return grammar_path().read_text(encoding="utf-8")


def _build_parser() -> Lark:
    text = _grammar_text()
    directory = cache_dir()
    if directory is not None:
        try:
            return _build_cached(text, directory)
        except Exception:  # noqa: BLE001 - a broken cache must never break parsing
            pass
    return Lark(text, postlex=_PostLexer(), **_LARK_OPTIONS)


def _build_cached(text: str, directory: Path) -> Lark:
    key = "\0".join([text, repr(sorted(_LARK_OPTIONS.items())), lark.__version__, sys.version])
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    cache = directory / f"grammar-{digest}.lark"
    if is_own_file(cache):
        # Lark checks the grammar hash stored in the file and rebuilds if it is unusable.
        return Lark(text, postlex=_PostLexer(), cache=str(cache), **_LARK_OPTIONS)
    built: list[Lark] = []
    publish(cache, "grammar-*.lark", lambda tmp: built.append(
        Lark(text, postlex=_PostLexer(), cache=tmp, **_LARK_OPTIONS)))
    return built[0]


_PARSER: Lark | None = None
_PARSER_LOCK = threading.Lock()


def get_parser() -> Lark:
    """The process-wide Lark parser (built, or loaded from the cache, on first use)."""
    global _PARSER
    if _PARSER is None:
        with _PARSER_LOCK:
            if _PARSER is None:
                _PARSER = _build_parser()
    return _PARSER


# ---------------------------------------------------------------- tree -> AST

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)

_STMT_DESC = {
    A.Call: "a call",
    A.Attribute: "an attribute",
    A.Num: "a number",
    A.Str: "a string",
    A.BinOp: "an expression",
    A.UnaryOp: "an expression",
    A.Compare: "a comparison",
    A.TupleExpr: "a tuple",
    A.ListExpr: "a list",
    A.Bool: "a literal",
    A.NoneLit: "None",
}


def _decode_string(tok: Token, span: A.Span) -> str:
    def repl(m: re.Match[str]) -> str:
        esc = m.group(1)
        if esc.startswith("u") and len(esc) == 5:
            return chr(int(esc[1:], 16))
        if esc in _ESCAPES:
            return _ESCAPES[esc]
        raise SyntaxErr(f"unknown escape sequence '\\{esc}' in string", span)

    return _ESCAPE_RE.sub(repl, str(tok)[1:-1])


@v_args(inline=True, meta=True)
class _Builder(Transformer_NonRecursive):
    """Parse tree -> AST. Every method receives the rule's `meta` and its named children.

    Non-recursive, so that a long chain like `a + b + ... + z` cannot hit the recursion limit.
    """

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    def _span(self, meta: Any) -> A.Span:
        if getattr(meta, "empty", True):
            return A.Span(self.file, 1, 1, 1, 1)
        return A.Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    # ---- program and blocks

    def start(self, meta: Any, *body: A.Stmt) -> A.Program:
        return A.Program(tuple(body), file=self.file, span=self._span(meta))

    def block(self, meta: Any, *body: A.Stmt) -> tuple[A.Stmt, ...]:
        return tuple(body)

    # ---- declarations

    def model_stmt(self, meta: Any, name: Token) -> A.ModelDecl:
        return A.ModelDecl(str(name), span=self._span(meta))

    def include_stmt(self, meta: Any, path: Token) -> A.Include:
        span = self._span(meta)
        return A.Include(_decode_string(path, span), span=span)

    def data_stmt(self, meta: Any, source: A.Call) -> A.DataDecl:
        return A.DataDecl(source, span=self._span(meta))

    def input_stmt(
        self, meta: Any, name: Token, type_: A.TypeExpr, default: A.Expr | None
    ) -> A.InputDecl:
        return A.InputDecl(str(name), type_, default, span=self._span(meta))

    def const_stmt(self, meta: Any, name: Token, value: A.Expr) -> A.ConstDecl:
        return A.ConstDecl(str(name), value, span=self._span(meta))

    def param_stmt(
        self, meta: Any, name: Token, type_: A.TypeExpr, init: A.Expr, kind: Token | None
    ) -> A.ParamDecl:
        return A.ParamDecl(
            str(name),
            type_,
            init,
            False,
            None if kind is None else str(kind),
            span=self._span(meta),
        )

    def frozen_stmt(
        self, meta: Any, name: Token, type_: A.TypeExpr, init: A.Expr, kind: Token | None
    ) -> A.ParamDecl:
        return A.ParamDecl(
            str(name), type_, init, True, None if kind is None else str(kind), span=self._span(meta)
        )

    def state_stmt(
        self, meta: Any, name: Token, type_: A.TypeExpr | None, init: A.Expr
    ) -> A.StateDecl:
        return A.StateDecl(str(name), type_, init, span=self._span(meta))

    def objective_stmt(self, meta: Any, name: Token, value: A.Expr) -> A.ObjectiveDecl:
        return A.ObjectiveDecl(str(name), value, span=self._span(meta))

    def metric_stmt(self, meta: Any, name: Token, value: A.Expr) -> A.MetricDecl:
        return A.MetricDecl(str(name), value, span=self._span(meta))

    def output_stmt(self, meta: Any, name: Token, value: A.Expr) -> A.OutputDecl:
        return A.OutputDecl(str(name), value, span=self._span(meta))

    # ---- simple statements

    def assign(self, meta: Any, targets: tuple[A.Target, ...], value: A.Expr) -> A.Assign:
        return A.Assign(targets, value, span=self._span(meta))

    def targets(self, meta: Any, *exprs: A.Expr) -> tuple[A.Target, ...]:
        return tuple(self._target(e) for e in exprs)

    def _target(self, e: A.Expr) -> A.Target:
        if isinstance(e, A.Name):
            return A.Target(e.id, None, span=e.span)
        if isinstance(e, A.Index) and isinstance(e.value, A.Name):
            return A.Target(e.value.id, e.items, span=e.span)
        what = _STMT_DESC.get(type(e), "this expression")
        if isinstance(e, A.Index):
            what = "an index of this expression"
        raise SyntaxErr(
            f"cannot assign to {what}: an assignment target is a name or an indexed name",
            e.span,
        )

    def expr_stmt(self, meta: Any, value: A.Expr) -> A.ExprStmt:
        return A.ExprStmt(value, span=self._span(meta))

    def return_stmt(self, meta: Any, value: A.Expr) -> A.Return:
        return A.Return(value, span=self._span(meta))

    def emit_stmt(self, meta: Any, value: A.Expr, name: Token | None) -> A.Emit:
        return A.Emit(value, str(name) if name is not None else None, span=self._span(meta))

    # ---- compound statements

    def for_stmt(
        self,
        meta: Any,
        var: Token,
        reverse: Token | None,
        start: A.Expr,
        stop: A.Expr,
        body: tuple[A.Stmt, ...],
    ) -> A.For:
        return A.For(str(var), start, stop, reverse is not None, body, span=self._span(meta))

    def repeat_stmt(
        self,
        meta: Any,
        name: Token,
        var: Token,
        start: A.Expr,
        stop: A.Expr,
        body: tuple[A.Stmt, ...],
    ) -> A.Repeat:
        return A.Repeat(str(name), str(var), start, stop, body, span=self._span(meta))

    def loop_stmt(
        self,
        meta: Any,
        var: Token,
        reverse: Token | None,
        start: A.Expr,
        stop: A.Expr,
        _until: Token | None,
        until: A.Expr | None,
        options: tuple[A.Setting, ...],
        body: tuple[A.Stmt, ...],
    ) -> A.Loop:
        seen: set[str] = set()
        for o in options:
            if o.name not in LOOP_OPTIONS:
                raise SyntaxErr(f"a loop has no option '{o.name}'"
                                f"{did_you_mean(o.name, LOOP_OPTIONS)}; its options are: "
                                f"{', '.join(LOOP_OPTIONS)}", o.span)
            if o.name in seen:
                raise SyntaxErr(f"loop option '{o.name}' is given twice", o.span)
            seen.add(o.name)
            if o.name == "count" and not isinstance(o.value, A.Name):
                raise SyntaxErr("'count' names the variable that holds the iterations run: "
                                "count = NAME", o.value.span)
        return A.Loop(str(var), start, stop, body, reverse is not None, until, options,
                      span=self._span(meta))

    def loop_options(self, meta: Any, *options: A.Setting) -> tuple[A.Setting, ...]:
        return options

    def loop_option(self, meta: Any, name: Token, value: A.Expr) -> A.Setting:
        return A.Setting(str(name), value, span=self._span(meta))

    def if_stmt(
        self,
        meta: Any,
        cond: A.Expr,
        body: tuple[A.Stmt, ...],
        orelse: tuple[A.Stmt, ...] | A.If | None,
    ) -> A.If:
        if orelse is None:
            orelse = ()
        elif isinstance(orelse, A.If):
            orelse = (orelse,)
        return A.If(cond, body, orelse, span=self._span(meta))

    def net_stmt(
        self,
        meta: Any,
        kind: Token,
        name: Token,
        params: tuple[A.Param, ...] | None,
        body: tuple[A.Stmt, ...],
    ) -> A.NetDef:
        return A.NetDef(str(kind), str(name), params or (), body, span=self._span(meta))

    def procedure_stmt(
        self, meta: Any, name: Token, params: tuple[A.Param, ...] | None, body: tuple[A.Stmt, ...]
    ) -> A.ProcedureDef:
        return A.ProcedureDef(str(name), params or (), body, span=self._span(meta))

    def update_stmt(self, meta: Any, body: tuple[A.Stmt, ...]) -> A.UpdateBlock:
        return A.UpdateBlock(body, span=self._span(meta))

    def optimizer_def(self, meta: Any, head: A.Call, body: tuple[A.Stmt, ...]) -> A.OptimizerDef:
        params: list[A.Param] = []
        for arg in head.args:
            if not isinstance(arg, A.Name):
                raise SyntaxErr(
                    "optimizer parameters are names with optional defaults: "
                    "optimizer rms(lr = 1e-2, beta = 0.9) { ... }",
                    arg.span,
                )
            params.append(A.Param(arg.id, span=arg.span))
        params.extend(A.Param(k.name, k.value, span=k.span) for k in head.kwargs)
        return A.OptimizerDef(head.func, tuple(params), body, span=self._span(meta))

    def optimizer_use(
        self, meta: Any, rule: A.Call, objective: Token, over: A.Expr | None
    ) -> A.OptimizerUse:
        return A.OptimizerUse(rule, str(objective), over, span=self._span(meta))

    def train_stmt(self, meta: Any, *settings: A.Setting) -> A.TrainDecl:
        return A.TrainDecl(tuple(settings), span=self._span(meta))

    def setting(self, meta: Any, name: Token, value: A.Expr) -> A.Setting:
        return A.Setting(str(name), value, span=self._span(meta))

    def params(self, meta: Any, *params: A.Param) -> tuple[A.Param, ...]:
        return tuple(params)

    def param(
        self, meta: Any, name: Token, type_: A.TypeExpr | None, default: A.Expr | None
    ) -> A.Param:
        return A.Param(str(name), default, type_, span=self._span(meta))

    # ---- types

    def type(self, meta: Any, dtype: Token | None, *dims: A.Expr) -> A.TypeExpr:
        if dtype is not None and str(dtype) not in DTYPES:
            raise SyntaxErr(
                f"unknown dtype '{dtype}'{did_you_mean(str(dtype), DTYPES)}; "
                f"the dtypes are {', '.join(DTYPES)}, or none for the float type: [n, m]",
                token_span(self.file, dtype),
            )
        return A.TypeExpr(None if dtype is None else str(dtype), tuple(dims), span=self._span(meta))

    def ellipsis(self, meta: Any) -> A.EllipsisLit:
        return A.EllipsisLit(span=self._span(meta))

    # ---- expressions

    def bare_tuple(self, meta: Any, *items: A.Expr) -> A.TupleExpr:
        return A.TupleExpr(tuple(items), span=self._span(meta))

    def paren_tuple(self, meta: Any, *items: A.Expr) -> A.TupleExpr:
        return A.TupleExpr(tuple(items), span=self._span(meta))

    def list_(self, meta: Any, *items: A.Expr) -> A.ListExpr:
        return A.ListExpr(tuple(items), span=self._span(meta))

    def binop(self, meta: Any, left: A.Expr, op: Token, right: A.Expr) -> A.BinOp:
        return A.BinOp(str(op), left, right, span=self._span(meta))

    def compare(self, meta: Any, left: A.Expr, op: Token, right: A.Expr) -> A.Compare:
        return A.Compare(str(op), left, right, span=self._span(meta))

    def unary(self, meta: Any, op: Token, operand: A.Expr) -> A.UnaryOp:
        return A.UnaryOp(str(op), operand, span=self._span(meta))

    def index(self, meta: Any, value: A.Expr, *items: A.Expr | A.Slice) -> A.Index:
        return A.Index(value, tuple(items), span=self._span(meta))

    def slice(
        self, meta: Any, start: A.Expr | None, stop: A.Expr | None, step: A.Expr | None
    ) -> A.Slice:
        return A.Slice(start, stop, step, span=self._span(meta))

    def attribute(self, meta: Any, value: A.Expr, attr: Token) -> A.Attribute:
        return A.Attribute(value, str(attr), span=self._span(meta))

    def call(self, meta: Any, func: Token, *args: A.Expr | A.Keyword) -> A.Call:
        positional: list[A.Expr] = []
        keywords: list[A.Keyword] = []
        for arg in args:
            if isinstance(arg, A.Keyword):
                if any(k.name == arg.name for k in keywords):
                    raise SyntaxErr(f"keyword argument '{arg.name}' repeated", arg.span)
                keywords.append(arg)
            elif keywords:
                raise SyntaxErr(
                    "positional argument after keyword arguments "
                    "(write positional arguments first: f(a, b, k = v))",
                    arg.span,
                )
            else:
                positional.append(arg)
        return A.Call(str(func), tuple(positional), tuple(keywords), span=self._span(meta))

    def kwarg(self, meta: Any, name: A.Name, value: A.Expr) -> A.Keyword:
        return A.Keyword(name.id, value, span=self._span(meta))

    def name(self, meta: Any, tok: Token) -> A.Name:
        return A.Name(str(tok), span=self._span(meta))

    def int_(self, meta: Any, tok: Token) -> A.Num:
        return A.Num(int(tok), str(tok), span=self._span(meta))

    def float_(self, meta: Any, tok: Token) -> A.Num:
        return A.Num(float(tok), str(tok), span=self._span(meta))

    def string(self, meta: Any, tok: Token) -> A.Str:
        span = self._span(meta)
        return A.Str(_decode_string(tok, span), span=span)

    def true(self, meta: Any, tok: Token) -> A.Bool:
        return A.Bool(True, span=self._span(meta))

    def false(self, meta: Any, tok: Token) -> A.Bool:
        return A.Bool(False, span=self._span(meta))

    def none(self, meta: Any, tok: Token) -> A.NoneLit:
        return A.NoneLit(span=self._span(meta))


# ---------------------------------------------------------------- public API


def parse(text: str, file: str = "<string>") -> A.Program:
    """Parse spec text into a `Program`; any syntax error raises `dsl.errors.SyntaxErr`."""
    register_source(file, text)
    parser = get_parser()
    try:
        tree: Tree = parser.parse(text)
    except UnexpectedInput as e:
        opened, stray = list(_STATE.open), _STATE.stray
        raise syntax_error(e, file, text, opened, stray, parser) from None
    except LarkError as e:  # pragma: no cover - defensive: never leak a Lark exception
        raise SyntaxErr(f"cannot parse: {e}", A.Span(file, 1, 1, 1, 2)) from None
    try:
        return _Builder(file).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, DslError):
            raise e.orig_exc from None
        raise


def check_nesting(prog: A.Program) -> A.Program:
    """`prog`, or a SyntaxErr where it nests more than MAX_NESTING levels. Parsing and
    printing do not recurse, but lowering, pickling (the AST cache) and hashing do, so the
    compiler checks before any of them."""
    deep = A.deeper_than(prog, MAX_NESTING)
    if deep is not None:
        raise SyntaxErr(f"this is nested more than {MAX_NESTING} levels deep (calls, "
                        "operators and blocks inside one another; a chain a + b + ... nests "
                        "one level per operator): give parts of it names", deep.span)
    return prog

