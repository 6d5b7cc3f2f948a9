"""`--set NAME=VALUE` and `overrides={...}`: a value replaces a const or an input default, and is
read strictly by the type of what it replaces.

From the command line every value is text: `--set H=64` for `const H = 256` is the integer 64,
`--set NORM=no` for `const NORM = false` is an error (true or false), `--set H=abc` is not an
integer. From Python a value of the right type is taken as it is (an int for a float const, a
string is read like command-line text). Each mistake is a `TypeErr` at the declaration, in the
user's terms: what NAME is and what would be accepted.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from dsl.ast import Span
from dsl.errors import TypeErr
from runtime.ir import TensorType

__all__ = ["const_override", "input_override"]

_BOOLS = {"true": True, "false": False}


def _kind(value: Any) -> str | None:
    """The kind of a const's declared value: bool, int, float, str, list; None for others."""
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    return None


_WANT = {"bool": "true or false", "int": "an integer", "float": "a number",
         "str": "a string", "list": "a list such as [1, 2]"}
_NOUN = {"bool": "a boolean", "int": "an integer", "float": "a number", "str": "a string",
         "list": "a list"}


def _from_text(text: str, kind: str) -> Any:
    """`text` read as `kind`; ValueError when it is not one."""
    t = text.strip()
    if kind == "bool":
        if t.lower() not in _BOOLS:
            raise ValueError
        return _BOOLS[t.lower()]
    if kind == "int":
        return int(t)
    if kind == "float":
        return float(t)
    if kind == "str":
        return text
    value = json.loads(t)
    if not isinstance(value, list):
        raise ValueError
    return value


def _typed(value: Any, kind: str) -> Any:
    """A Python value of `kind` (ints serve as floats); ValueError otherwise."""
    if isinstance(value, str):
        return _from_text(value, kind)
    got = _kind(value)
    if got == kind or (kind == "float" and got == "int"):
        return list(value) if kind == "list" else value
    raise ValueError


def const_override(name: str, raw: Any, declared: Any, span: Span, what: str = "const") -> Any:
    """The value of `const NAME` (or of another `what`, such as a procedure's argument) given
    `raw` from `--set` (text) or `overrides` (Python)."""
    kind = _kind(declared)
    if kind is None:
        raise TypeErr(f"--set {name}: {what} '{name}' is {type(declared).__name__} value, which "
                      "cannot be set from outside the spec", span)
    try:
        return _typed(raw, kind)
    except (ValueError, TypeError):
        shown = raw if isinstance(raw, str) else repr(raw)
        spelled = str(declared).lower() if kind == "bool" else json.dumps(declared) \
            if kind == "str" else declared
        raise TypeErr(f"--set {name}={shown}: {what} '{name}' is {_NOUN[kind]} "
                      f"(declared {spelled}), so the value must be {_WANT[kind]}",
                      span) from None


def input_override(name: str, raw: Any, t: TensorType, span: Span) -> np.ndarray:
    """The default of `input NAME: t` given `raw`: a number for a scalar, a list for a tensor."""
    kind = "bool" if t.dtype == "bool" else "float" if t.is_float else "int"
    shown = raw if isinstance(raw, str) else repr(raw)
    try:
        if isinstance(raw, str):
            value = _from_text(raw, kind) if t.rank == 0 else _from_text(raw, "list")
        else:
            value = raw
        arr = np.asarray(value)
        if arr.dtype.kind not in ("b" if kind == "bool" else "biuf" if kind == "float" else "iu"):
            raise ValueError
        arr = arr.astype(t.np_dtype())
    except (ValueError, TypeError):
        what = _WANT[kind] if t.rank == 0 else f"a list of {_WANT[kind].removeprefix('an ')}s"
        raise TypeErr(f"--set {name}={shown}: input '{name}' is {t}, so the value must be "
                      f"{what}", span) from None
    fits = arr.ndim == t.rank and all(isinstance(d, str) or d == s
                                      for d, s in zip(t.shape, arr.shape))
    if not fits:
        raise TypeErr(f"--set {name}={shown}: input '{name}' is {t}, but the value has shape "
                      f"{list(arr.shape)}", span)
    return arr
