"""User-facing errors: one small hierarchy, compiler-style formatting, did-you-mean.

Every mistake in a spec raises a `DslError` subclass carrying a `Span`; `format()` renders
`file:line:col: error: message`, the source line and a caret under the column.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from dsl.ast import Span
from runtime.errors import UserError

_SOURCES: dict[str, str] = {}


def register_source(file: str, text: str) -> None:
    """Remember a file's text so that errors can quote its lines."""
    _SOURCES[file] = text


class _Positioned:
    """A message at a span of a spec, with notes; `format()` prints it as
    `format_message` does, with the class's `SEVERITY`."""

    SEVERITY = "error"

    def __init__(self, message: str, span: Span | None = None, notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.span = span
        self.notes = notes

    def format(self) -> str:
        return format_message(self.SEVERITY, self.message, self.span, self.notes)

    def __str__(self) -> str:
        return self.format()


class DslError(_Positioned, UserError):
    """A user mistake in a spec (or in its data), located at a span."""


def format_message(severity: str, message: str, span: Span | None,
                   notes: tuple[str, ...] = ()) -> str:
    """`file:line:col: severity: message`, the source line and a caret under the span."""
    if span is None or span.line <= 0:
        return "\n".join([f"{severity}: {message}", *(f"note: {n}" for n in notes)])
    s = span
    lines = [f"{s.file}:{s.line}:{s.col}: {severity}: {message}"]
    text = _SOURCES.get(s.file)
    if text is not None:
        src_lines = text.splitlines()
        if 0 < s.line <= len(src_lines):
            src = src_lines[s.line - 1].expandtabs(1)
            width = s.end_col - s.col if s.end_line == s.line and s.end_col > s.col else 1
            src, col = _window(src, s.col)
            width = min(width, len(src) - col + 2)
            lines.append(f"  {src}")
            lines.append("  " + " " * (col - 1) + "^" + "~" * max(0, width - 1))
    lines.extend(f"note: {n}" for n in notes)
    return "\n".join(lines)


QUOTE_WIDTH = 120  # the most of a source line an error quotes


def _window(src: str, col: int) -> tuple[str, int]:
    """A long source line cut to QUOTE_WIDTH characters around `col` ("..." where cut), and
    the column in the cut line."""
    if len(src) <= QUOTE_WIDTH:
        return src, col
    start = max(0, min(col - 1 - QUOTE_WIDTH // 3, len(src) - QUOTE_WIDTH))
    cut = src[start:start + QUOTE_WIDTH]
    head = "..." if start > 0 else ""
    tail = "..." if start + QUOTE_WIDTH < len(src) else ""
    return head + cut + tail, col - start + len(head)


class DslWarning(_Positioned, UserWarning):
    """A spec that compiles but probably does not do what its author meant; `format()` is
    positioned like an error. The compiler collects them on `Compiled.warnings`; the CLI
    prints them, the Python API passes them to `warnings.warn`."""

    SEVERITY = "warning"


class SyntaxErr(DslError):
    """The text does not parse."""


class NameErr(DslError):
    """An unknown or duplicate name, keyword, option or section."""


class ShapeErr(DslError):
    """Operand shapes do not fit."""


class TypeErr(DslError):
    """Wrong dtype, wrong kind of value, or wrong number of arguments."""


class DataErr(DslError):
    """A data set or data file is missing or malformed."""


class RunErr(DslError):
    """A failure while running: non-finite loss, missing device, bad checkpoint."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
