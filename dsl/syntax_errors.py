"""Syntax errors: a Lark exception from `dsl.parser` -> a `SyntaxErr` with a readable message.

A mistake is recognised, in this order, as: a character no token starts with; a bracket left
open or closed by the wrong closer (from the brackets the postlexer of `dsl.parser` tracks,
by the token types in `OPENERS` and `CLOSERS`); one of the known mistakes in `_EXAMPLES`,
classified by the LALR state the example texts fail in; `=` in a condition; else "unexpected
X, expected ..." listing the terminals the parser would really accept there, in words.
This module does not import `dsl.parser`: `syntax_error` is given the parser.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput
from lark.lexer import PatternStr

from dsl import ast as A
from dsl.errors import SyntaxErr

# bracket token types (the postlexer of `dsl.parser` tracks them too): opener -> its closer,
# closer -> its opener
OPENERS = {"LPAR": ")", "LSQB": "]", "LBRACE": "}"}
CLOSERS = {"RPAR": "LPAR", "RSQB": "LSQB", "RBRACE": "LBRACE"}

_TERMINAL_WORDS = {
    "NAME": "a name",
    "INT": "a number",
    "FLOAT": "a number",
    "STRING": "a string",
    "_NL": "end of line",
    "$END": "end of input",
}
_STATEMENT_KEYWORDS = frozenset(
    "model include data input const param frozen state net def objective metric output "
    "optimizer train update procedure return emit for repeat loop if".split()
)
_EXPR_START = frozenset(
    [
        "a name",
        "a number",
        "a string",
        "'('",
        "'['",
        "'-'",
        "'+'",
        "'not'",
        "'true'",
        "'false'",
        "'None'",
        "'param'",
        "'train'",
        "'data'",
    ]
)
_OPERATORS = frozenset(f"'{op}'" for op in "+ - * / // % @ ** < <= > >= == != and or [ .".split())
_WORD_ORDER = [
    "a name",
    "a number",
    "a string",
    "an expression",
    "an operator",
    "a statement",
    "end of line",
    "end of input",
]

# Mistakes recognised by the parser state they fail in (Lark's `match_examples` idea, but
# comparing only the LALR state, not the stack depth, so they match inside blocks too).
# label -> (example texts, whether the unexpected token's type must match as well)
_EXAMPLES: dict[str, tuple[list[str], bool]] = {
    "param_type": (["param W = 1", "param W [n] = 1"], False),
    "frozen_type": (["frozen W = 1"], False),
    "input_type": (["input x = 1", "input x f32[B]"], False),
    "const_eq": (["const H 1", "const H: 1"], False),
    "objective_eq": (["objective loss f(x)"], False),
    "metric_eq": (["metric acc f(x)"], False),
    "output_eq": (["output y f(x)"], False),
    "chained_compare": (
        ["x = a < b < c", "x = a < b == c", "x = a == b > c", "x = a != b <= c", "x = a >= b != c"],
        True,
    ),
    "setting_colon": (["train { batch: 64 }"], True),
}
_EXAMPLE_TABLE: dict[tuple[int, str | None], str] | None = None


def _example_table(parser: Lark) -> dict[tuple[int, str | None], str]:
    global _EXAMPLE_TABLE
    if _EXAMPLE_TABLE is None:
        table: dict[tuple[int, str | None], str] = {}
        for label, (texts, by_token) in _EXAMPLES.items():
            for text in texts:
                try:
                    parser.parse(text)
                except UnexpectedInput as e:
                    state = getattr(e, "state", None)
                    position = getattr(state, "position", None)
                    token = getattr(e, "token", None)
                    if position is not None:
                        key = (position, token.type if by_token and token is not None else None)
                        table.setdefault(key, label)
        _EXAMPLE_TABLE = table
    return _EXAMPLE_TABLE


def _accepts(state: Any) -> set[str]:
    """The terminals that the parser would really accept next: unlike `expected`, this
    follows the pending reductions, so a shared LALR state does not list the union of the
    tokens every context allows."""
    try:
        conf = copy.copy(state.parse_conf)
        conf.callbacks = {}
        choices = conf.parse_table.states[state.position]
    except (AttributeError, KeyError, TypeError):
        return set()
    accepted: set[str] = set()
    for name in choices:
        if not name.isupper() and name != "$END":
            continue
        trial = state.copy(deepcopy_values=False)
        trial.parse_conf = conf
        try:
            trial.feed_token(Token(name, ""))
        except Exception:  # noqa: BLE001 - any failure means "not accepted"
            continue
        accepted.add(name)
    return accepted


def _describe_expected(expected: set[str], parser: Lark) -> str:
    words: set[str] = set()
    for name in expected:
        if name in _TERMINAL_WORDS:
            words.add(_TERMINAL_WORDS[name])
            continue
        try:
            pattern = parser.get_terminal(name).pattern
        except KeyError:
            words.add(name.lower())
            continue
        words.add(f"'{pattern.value}'" if isinstance(pattern, PatternStr) else name.lower())
    if "'model'" in words and "'if'" in words:
        words -= {f"'{k}'" for k in _STATEMENT_KEYWORDS} | _EXPR_START
        words.add("a statement")
    elif "a name" in words and "a number" in words:
        words -= _EXPR_START
        words.add("an expression")
    if "'*'" in words and "'+'" in words:
        words -= _OPERATORS
        words.add("an operator")
    literal = sorted(w for w in words if w.startswith("'"))
    named = sorted(
        (w for w in words if not w.startswith("'")),
        key=lambda w: _WORD_ORDER.index(w) if w in _WORD_ORDER else len(_WORD_ORDER),
    )
    items = literal + named
    if len(items) == 1:
        return items[0]
    return "one of: " + ", ".join(items)


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of input"
    if tok.type == "_NL":
        return "end of line"
    text = str(tok)
    if len(text) > 30:
        text = text[:27] + "..."
    return f"'{text}'"


def _end_span(file: str, text: str) -> A.Span:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return A.Span(file, 1, 1, 1, 1)
    col = len(lines[-1]) + 1
    return A.Span(file, len(lines), col, len(lines), col + 1)


def token_span(file: str, tok: Token) -> A.Span:
    """Where token `tok` of `file` stands (a newline token: one column)."""
    line = tok.line or 1
    col = tok.column or 1
    if tok.type == "_NL":
        return A.Span(file, line, col, line, col + 1)
    end_line = tok.end_line or line
    end_col = tok.end_column or col + 1
    return A.Span(file, line, col, end_line, end_col)


def _special_message(label: str, tok: Token, stack_values: list[Any]) -> str:
    names = [v for v in stack_values if isinstance(v, Token) and v.type == "NAME"]
    name = str(names[-1]) if names else "x"
    if label == "param_type":
        return f"param declarations need a type: param {name}: [n, m] = init"
    if label == "frozen_type":
        return f"frozen declarations need a type: frozen {name}: [n, m] = init"
    if label == "input_type":
        return f"input declarations need a type: input {name}: f32[B, n]"
    if label == "const_eq":
        return f"expected '=' after the constant name: const {name} = value"
    if label in ("objective_eq", "metric_eq", "output_eq"):
        kw = label.split("_")[0]
        return f"expected '=' after the {kw} name: {kw} {name} = expression"
    if label == "chained_compare":
        return (
            f"comparisons cannot be chained: unexpected {_describe_token(tok)}; "
            "combine them with 'and'"
        )
    if label == "setting_colon":
        return "train settings are written name = value: train { batch = 64, epochs = 20 }"
    return f"unexpected {_describe_token(tok)}"


_BRACKETS = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[()\[\]{}]')
_PAIRS = {")": "(", "]": "[", "}": "{"}


def _is_closed(text: str, pos: int) -> bool:
    """Whether the bracket at `pos` has a matching closer later in the text."""
    stack: list[tuple[str, int]] = []
    for m in _BRACKETS.finditer(text):
        ch = m.group()
        if ch in "([{":
            stack.append((ch, m.start()))
        elif ch in _PAIRS and stack and stack[-1][0] == _PAIRS[ch]:
            if stack.pop()[1] == pos:
                return True
    return False


def syntax_error(
    e: UnexpectedInput, file: str, text: str, opened: list[Token], stray: Token | None,
    parser: Lark,
) -> SyntaxErr:
    """The `SyntaxErr` for Lark's exception `e` in `text`, given the brackets the postlexer
    saw open (`opened`) and the closer that matched none of them (`stray`)."""
    if isinstance(e, UnexpectedCharacters):
        line, col = e.line, e.column
        char = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else ""
        span = A.Span(file, line, col, line, col + 1)
        if char == '"':
            return SyntaxErr("unterminated string: missing closing '\"' on this line", span)
        if char in "'`":
            return SyntaxErr('strings are written with double quotes: "text"', span)
        return SyntaxErr(f"unexpected character {char!r}", span)

    tok: Token = e.token  # type: ignore[attr-defined]
    at_end = tok.type == "$END"
    span = _end_span(file, text) if at_end else token_span(file, tok)

    # A bracket left open: ( [ swallow the newlines that follow, so the parser stumbles later.
    if opened:
        top = opened[-1]
        closer = OPENERS[top.type]
        if (
            top.type != "LBRACE"
            and (at_end or (tok.line or 0) > (top.line or 0))
            and not _is_closed(text, top.start_pos or 0)
        ):
            return SyntaxErr(
                f"missing '{closer}': this '{top}' is never closed",
                token_span(file, top),
                notes=(f"the parser reached {_describe_token(tok)} at {span}",),
            )
        if at_end:
            braces = [t for t in opened if t.type == "LBRACE"]
            if braces:
                return SyntaxErr(
                    "missing '}': this '{' is never closed", token_span(file, braces[-1])
                )

    if stray is not None and tok.type in CLOSERS and tok.start_pos == stray.start_pos:
        if not any(t.type == CLOSERS[tok.type] for t in opened):
            return SyntaxErr(f"unmatched '{tok}': there is no open '{_PAIRS[str(tok)]}'", span)
        top = opened[-1]
        return SyntaxErr(
            f"'{tok}' does not close the '{top}' opened at line {top.line} col {top.column}; "
            f"expected '{OPENERS[top.type]}'",
            span,
        )

    state = getattr(e, "state", None)
    position = getattr(state, "position", None)
    stack_values = list(getattr(state, "value_stack", []) or [])
    if position is not None:
        table = _example_table(parser)
        label = table.get((position, tok.type)) or table.get((position, None))
        if label is not None:
            return SyntaxErr(_special_message(label, tok, stack_values), span)

    # `if x = 2 {`: '=' where a comparison would fit.
    if tok.type == "EQUAL":
        for v in reversed(stack_values):
            if isinstance(v, Token) and v.type in ("_NL", "SEMICOLON", "LBRACE"):
                break
            if isinstance(v, Token) and v.type == "IF":
                return SyntaxErr("unexpected '=' in a condition: use '==' to compare", span)

    expected = _accepts(state) if state is not None else set()
    if not expected:
        expected = set(getattr(e, "expected", None) or ())
    message = f"unexpected {_describe_token(tok)}"
    if expected:
        message += f", expected {_describe_expected(expected, parser)}"
    return SyntaxErr(message, span)
