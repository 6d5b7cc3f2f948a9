"""AST -> canonical spec text.

`format_program` prints one statement per line, blocks indented by 4 spaces, binary operators
spaced, the fewest parentheses the precedence rules allow, numbers with their original
spelling (`Num.text`), keyword arguments as `name = value` and `train { ... }` settings on one
line. Round-trip laws (checked by tests/test_parser.py):

    parse(format_program(p)) == p
    format_program(parse(format_program(p))) == format_program(p)
"""

from __future__ import annotations

from dsl import ast as A

__all__ = ["format_program", "format_stmt", "format_expr", "format_type"]

INDENT = "    "

# Binding strength, loosest first (mirrors grammar/dsl.lark).
_OR, _AND, _NOT, _CMP, _ADD, _MUL, _UNARY, _POW, _POSTFIX, _ATOM = range(1, 11)
_BINOP_PREC = {
    "or": _OR,
    "and": _AND,
    "+": _ADD,
    "-": _ADD,
    "*": _MUL,
    "/": _MUL,
    "//": _MUL,
    "%": _MUL,
    "@": _MUL,
    "**": _POW,
}
# Statements printed over several lines; at top level they get a blank line around them.
_BLOCK_STMTS = (
    A.NetDef,
    A.OptimizerDef,
    A.ProcedureDef,
    A.UpdateBlock,
    A.For,
    A.Repeat,
    A.Loop,
    A.If,
)


def _prec(e: A.Expr) -> int:
    if isinstance(e, A.BinOp):
        return _BINOP_PREC.get(e.op, _MUL)
    if isinstance(e, A.UnaryOp):
        return _NOT if e.op == "not" else _UNARY
    if isinstance(e, A.Compare):
        return _CMP
    if isinstance(e, A.Call | A.Index | A.Attribute):
        return _POSTFIX
    return _ATOM


def _string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _wrap(e: A.Expr, min_prec: int) -> str:
    text = format_expr(e)
    return f"({text})" if _prec(e) < min_prec else text


def _items(items: tuple[A.Expr, ...]) -> str:
    return ", ".join(format_expr(i) for i in items)


def _index_item(item: A.Expr | A.Slice) -> str:
    if isinstance(item, A.Slice):
        text = (format_expr(item.start) if item.start is not None else "") + ":"
        text += format_expr(item.stop) if item.stop is not None else ""
        if item.step is not None:
            text += ":" + format_expr(item.step)
        return text
    return format_expr(item)


def format_expr(e: A.Expr) -> str:
    """One expression, parenthesised only where precedence requires it."""
    if isinstance(e, A.Num):
        return e.text or repr(e.value)
    if isinstance(e, A.Str):
        return _string(e.value)
    if isinstance(e, A.Bool):
        return "true" if e.value else "false"
    if isinstance(e, A.NoneLit):
        return "None"
    if isinstance(e, A.EllipsisLit):
        return "..."
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.Attribute):
        base = _wrap(e.value, _POSTFIX)
        if isinstance(e.value, A.Num):  # `1.x` would lex as the number `1.`
            base = f"({base})"
        return f"{base}.{e.attr}"
    if isinstance(e, A.Call):
        args = [format_expr(a) for a in e.args]
        args += [f"{k.name} = {format_expr(k.value)}" for k in e.kwargs]
        return f"{e.func}({', '.join(args)})"
    if isinstance(e, A.Index):
        return f"{_wrap(e.value, _POSTFIX)}[{', '.join(_index_item(i) for i in e.items)}]"
    if isinstance(e, A.BinOp):
        p = _BINOP_PREC.get(e.op, _MUL)
        if e.op == "**":  # right-associative; the base is a postfix expression
            return f"{_wrap(e.left, _POSTFIX)} ** {_wrap(e.right, _UNARY)}"
        # Walk the left spine iteratively: long chains (`a + b + ... + z`) stay flat and
        # cannot hit the recursion limit.
        tail: list[str] = []
        node: A.Expr = e
        while isinstance(node, A.BinOp) and node.op != "**" and _prec(node) == p:
            tail.append(f" {node.op} {_wrap(node.right, p + 1)}")
            node = node.left
        return _wrap(node, p) + "".join(reversed(tail))
    if isinstance(e, A.UnaryOp):
        if e.op == "not":
            return f"not {_wrap(e.operand, _NOT)}"
        return f"{e.op}{_wrap(e.operand, _UNARY)}"
    if isinstance(e, A.Compare):  # non-associative
        return f"{_wrap(e.left, _ADD)} {e.op} {_wrap(e.right, _ADD)}"
    if isinstance(e, A.TupleExpr):
        if len(e.items) == 1:
            return f"({format_expr(e.items[0])},)"
        return f"({_items(e.items)})"
    if isinstance(e, A.ListExpr):
        return f"[{_items(e.items)}]"
    raise TypeError(f"format_expr: not an expression: {e!r}")


def _rhs(e: A.Expr) -> str:
    """The right of `=` / after `return`: a tuple of two or more items goes bare."""
    if isinstance(e, A.TupleExpr) and len(e.items) >= 2:
        return _items(e.items)
    return format_expr(e)


def format_type(t: A.TypeExpr) -> str:
    """`f32[B, 64]`, `[n, m]`, `f64[]`."""
    return f"{t.dtype or ''}[{_items(t.dims)}]"


def _param(p: A.Param) -> str:
    text = p.name
    if p.type is not None:
        text += f": {format_type(p.type)}"
    if p.default is not None:
        text += f" = {format_expr(p.default)}"
    return text


def _params(params: tuple[A.Param, ...]) -> str:
    return ", ".join(_param(p) for p in params)


def _target(t: A.Target) -> str:
    if t.index is None:
        return t.name
    return f"{t.name}[{', '.join(_index_item(i) for i in t.index)}]"


def _block(head: str, body: tuple[A.Stmt, ...], indent: str) -> list[str]:
    if not body:
        return [f"{indent}{head} {{ }}"]
    lines = [f"{indent}{head} {{"]
    for stmt in body:
        lines.extend(_stmt_lines(stmt, indent + INDENT))
    lines.append(f"{indent}}}")
    return lines


def _if_lines(s: A.If, indent: str) -> list[str]:
    lines = _block(f"if {format_expr(s.cond)}", s.body, indent)
    orelse = s.orelse
    while orelse:
        if len(orelse) == 1 and isinstance(orelse[0], A.If):
            nested = orelse[0]
            more = _block(f"else if {format_expr(nested.cond)}", nested.body, indent)
            orelse = nested.orelse
        else:
            more = _block("else", orelse, indent)
            orelse = ()
        lines[-1] += " " + more[0][len(indent) :]  # `} else ... {` on one line
        lines.extend(more[1:])
    return lines


def _stmt_lines(s: A.Stmt, indent: str) -> list[str]:
    if isinstance(s, A.NetDef):
        return _block(f"{s.kind} {s.name}({_params(s.params)})", s.body, indent)
    if isinstance(s, A.ProcedureDef):
        return _block(f"procedure {s.name}({_params(s.params)})", s.body, indent)
    if isinstance(s, A.OptimizerDef):
        return _block(f"optimizer {s.name}({_params(s.params)})", s.body, indent)
    if isinstance(s, A.UpdateBlock):
        return _block("update", s.body, indent)
    if isinstance(s, A.For):
        rev = "reversed " if s.reverse else ""
        head = f"for {s.var} in {rev}{format_expr(s.start)} .. {format_expr(s.stop)}"
        return _block(head, s.body, indent)
    if isinstance(s, A.Repeat):
        head = f"repeat {s.name} {s.var} in {format_expr(s.start)} .. {format_expr(s.stop)}"
        return _block(head, s.body, indent)
    if isinstance(s, A.Loop):
        rev = "reversed " if s.reverse else ""
        head = f"loop {s.var} in {rev}{format_expr(s.start)} .. {format_expr(s.stop)}"
        if s.until is not None:
            head += f" until {format_expr(s.until)}"
        head += "".join(f", {o.name} = {format_expr(o.value)}" for o in s.options)
        return _block(head, s.body, indent)
    if isinstance(s, A.If):
        return _if_lines(s, indent)
    return [indent + format_stmt(s)]


def format_stmt(s: A.Stmt) -> str:
    """One statement (block statements over several lines, unindented)."""
    if isinstance(s, A.ModelDecl):
        return f"model {s.name}"
    if isinstance(s, A.Include):
        return f"include {_string(s.path)}"
    if isinstance(s, A.DataDecl):
        return f"data {format_expr(s.source)}"
    if isinstance(s, A.InputDecl):
        text = f"input {s.name}: {format_type(s.type)}"
        return text if s.default is None else f"{text} = {format_expr(s.default)}"
    if isinstance(s, A.ConstDecl):
        return f"const {s.name} = {format_expr(s.value)}"
    if isinstance(s, A.ParamDecl):
        kw = "frozen" if s.frozen else "param"
        text = f"{kw} {s.name}: {format_type(s.type)} = {format_expr(s.init)}"
        return text if s.kind is None else f"{text} as {s.kind}"
    if isinstance(s, A.StateDecl):
        typ = "" if s.type is None else f": {format_type(s.type)}"
        return f"state {s.name}{typ} = {format_expr(s.init)}"
    if isinstance(s, A.Assign):
        return f"{', '.join(_target(t) for t in s.targets)} = {_rhs(s.value)}"
    if isinstance(s, A.ExprStmt):
        return format_expr(s.value)
    if isinstance(s, A.Return):
        return f"return {_rhs(s.value)}"
    if isinstance(s, A.Emit):
        return f"emit {format_expr(s.value)}" + (f" as {s.name}" if s.name else "")
    if isinstance(s, A.ObjectiveDecl):
        return f"objective {s.name} = {format_expr(s.value)}"
    if isinstance(s, A.MetricDecl):
        return f"metric {s.name} = {format_expr(s.value)}"
    if isinstance(s, A.OutputDecl):
        return f"output {s.name} = {format_expr(s.value)}"
    if isinstance(s, A.OptimizerUse):
        text = f"optimizer {format_expr(s.rule)} minimize {s.objective}"
        return text if s.over is None else f"{text} over {format_expr(s.over)}"
    if isinstance(s, A.TrainDecl):
        if not s.settings:
            return "train { }"
        inner = ", ".join(f"{t.name} = {format_expr(t.value)}" for t in s.settings)
        return f"train {{ {inner} }}"
    if isinstance(s, _BLOCK_STMTS):
        return "\n".join(_stmt_lines(s, ""))
    raise TypeError(f"format_stmt: not a statement: {s!r}")


def format_program(prog: A.Program) -> str:
    """Canonical text of a whole spec (ends with a newline; empty program -> '')."""
    out: list[str] = []
    prev_block = False
    for i, stmt in enumerate(prog.body):
        is_block = isinstance(stmt, _BLOCK_STMTS)
        if i > 0 and (is_block or prev_block):
            out.append("")
        out.extend(_stmt_lines(stmt, ""))
        prev_block = is_block
    return "\n".join(out) + "\n" if out else ""
