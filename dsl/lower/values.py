"""Values during lowering: compile-time values (numbers, strings, lists, NumPy arrays,
selections, initializers) next to tensors (`Val`, a node of the graph). Owns their description
in errors, lifting constants to tensors, type promotion, arithmetic, comparisons, negation,
indexing, parameter selections and static dimensions.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsl import ast as A
from dsl.errors import ShapeErr, TypeErr
from dsl.lower.context import Context
from runtime.dtypes import np_dtype
from runtime.ops import Val
from runtime.passes.rewrite import rewrite_at
from runtime.passes.rules import STABILIZING_RULES

MAX_DIM = 2**31 - 1  # one dimension of a tensor

_PY_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
           "**": operator.pow, "@": operator.matmul, "%": operator.mod, "//": operator.floordiv}
_TENSOR_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow", "@": "matmul"}
_PY_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
               "==": operator.eq, "!=": operator.ne}
_TENSOR_COMPARE = {"<": "less", "<=": "less_equal", ">": "greater", ">=": "greater_equal",
                   "==": "equal", "!=": "not_equal"}


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
    fill: Any = None  # the fill value of full_like(param, value), checked against the dtype


def describe(v: Any) -> str:
    """A value as errors name it: `a tensor f32[B,10]`, `a parameter selection`, `int 3`."""
    if isinstance(v, Val):
        return f"a tensor {v.type}"
    if isinstance(v, Selection):
        return "a parameter selection"
    if isinstance(v, InitSpec):
        return f"an initializer ({v.name})"
    if isinstance(v, np.ndarray):
        return f"a constant array of shape {list(v.shape)}"
    return f"{type(v).__name__} {v!r}"


def check_dim(cx: Context, v: int | np.integer, span: A.Span | None, lo: int = 1) -> int:
    """A static dimension: an integer from `lo` (1; 0 for fills) to MAX_DIM."""
    if not lo <= v <= MAX_DIM:
        want = "positive" if lo == 1 else "non-negative"
        raise cx.err(ShapeErr, f"a dimension must be a {want} integer of at most "
                     f"{MAX_DIM}, got {v}" + cx.overrides.note(v), span)
    return int(v)


# ---------------------------------------------------------------- constants and promotion

def const_val(cx: Context, v: Any, span: A.Span | None, like: Val | None = None) -> Val:
    """A constant node for `v`: floats get the float dtype (or `like`'s), integers i64 (or
    `like`'s integer dtype), next to a float `like` integers become floats."""
    arr = np.asarray(v)
    if arr.dtype.kind == "O" and isinstance(v, int) and not isinstance(v, bool):
        raise cx.err(TypeErr, f"the integer {v} does not fit i64 (from {np.iinfo(np.int64).min} "
                     f"to {np.iinfo(np.int64).max})", span)
    if arr.dtype.kind == "f" or (like is not None and like.type.is_float
                                 and arr.dtype.kind in "iub"):
        dt = like.type.dtype if like is not None and like.type.is_float else cx.float_dtype
    elif arr.dtype.kind in "iu":
        dt = like.type.dtype if like is not None and like.type.dtype.startswith("i") \
            else "i64"
    elif arr.dtype.kind == "b":
        dt = "bool"
    else:
        raise cx.err(TypeErr, f"expected a number or tensor, got {describe(v)}", span)
    with cx.b.context(loc=cx.loc(span)):
        return cx.b.const(fitted(cx, arr, dt, span), dt)


def fitted(cx: Context, arr: np.ndarray, dt: str, span: A.Span | None) -> np.ndarray:
    """`arr` converted to dtype `dt`; a positioned error when a value does not fit (a finite
    number that would become inf, an integer out of range, a float that is not a whole
    number, infinite or out of range for an integer dtype), never NumPy's overflow warning."""
    want = np_dtype(dt)
    if arr.dtype.kind == "O":  # a Python integer beyond 64 bits
        raise cx.err(TypeErr, f"the value {arr.flat[0] if arr.size else arr!r} does not fit "
                     f"{dt}", span)
    if arr.dtype.kind not in "biuf":
        raise cx.err(TypeErr, f"expected a number for {dt}, got {describe(arr.tolist())}", span)
    if want.kind in "iu" and arr.dtype.kind in "iu" and arr.size:
        info = np.iinfo(want)
        low, high = arr.min(), arr.max()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise cx.err(TypeErr, f"the integer {bad} does not fit {dt} (from {info.min} to "
                         f"{info.max})", span)
    if want.kind in "iu" and arr.dtype.kind == "f" and arr.size:
        info = np.iinfo(want)
        # float(info.max) may round up (2**63 for i64): compare against max + 1, exclusive
        out_of_range = ~np.isfinite(arr) | (arr < float(info.min)) | (arr >= float(info.max) + 1)
        if out_of_range.any():
            raise cx.err(TypeErr, f"the constant {arr[out_of_range].flat[0]:.6g} does not fit "
                         f"{dt} (from {info.min} to {info.max})", span)
        fractional = arr != np.trunc(arr)
        if fractional.any():
            raise cx.err(TypeErr, f"the constant {arr[fractional].flat[0]:.6g} is not a whole "
                         f"number, so it does not fit {dt}; write a whole number, or give "
                         "this value a float dtype", span)
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(want)
    if want.kind == "f" and arr.dtype.kind in "fiu":
        lost = np.isfinite(arr) & ~np.isfinite(out)
        if lost.any():
            raise cx.err(TypeErr, f"the constant {arr[lost].flat[0]:.6g} does not fit {dt} "
                         f"(its largest finite value is {np.finfo(want).max:.6g}); write it "
                         "smaller, or give this value another dtype", span)
    return out


def to_val(cx: Context, v: Any, span: A.Span | None, like: Val | None = None) -> Val:
    """`v` as a tensor: a `Val` as it is, a number or array as a constant node."""
    if isinstance(v, Val):
        return v
    if isinstance(v, (Selection, InitSpec, str)) or v is None:
        raise cx.err(TypeErr, f"expected a tensor, got {describe(v)}", span)
    if isinstance(v, (list, tuple)) and any(isinstance(x, Val) for x in v):
        raise cx.err(TypeErr, "a list of tensors is not a tensor; use stack or concat", span)
    return const_val(cx, v, span, like)


def coerce_pair(cx: Context, a: Any, b: Any, span: A.Span) -> tuple[Val, Val]:
    """Lift constants next to a tensor and give mixed int/float operands a float dtype."""
    if not isinstance(a, Val):
        a = to_val(cx, a, span, like=b)
    if not isinstance(b, Val):
        b = to_val(cx, b, span, like=a)
    if a.type.is_float != b.type.is_float:
        if a.type.is_float:
            b = cx.b.emit("cast", b, dtype=a.type.dtype)
        else:
            a = cx.b.emit("cast", a, dtype=b.type.dtype)
    elif a.type.dtype == "bool" and b.type.dtype != "bool":
        a = cx.b.emit("cast", a, dtype=b.type.dtype)
    elif b.type.dtype == "bool" and a.type.dtype != "bool":
        b = cx.b.emit("cast", b, dtype=a.type.dtype)
    return a, b


def emit_stable(cx: Context, op: str, vals: list[Val], attrs: dict[str, Any]) -> Val:
    """Emit with the stabilizing rewrites (`STABILIZING_RULES`) applied on the spot, so
    that gradients taken during lowering are built from the stable forms."""
    nid = cx.b.emit(op, *vals, **attrs).id
    return Val(cx.b, rewrite_at(cx.graph, STABILIZING_RULES, nid))


# ---------------------------------------------------------------- operators

MAX_INT_BITS = 256  # a compile-time integer (i64 holds 64 bits; `10 ** 10 ** 10` never ends)


def _int_bits(v: Any) -> int:
    """The bits of a Python integer (0 for anything else)."""
    return abs(v).bit_length() if isinstance(v, int) and not isinstance(v, bool) else 0


def arith(cx: Context, op: str, a: Any, b: Any, span: A.Span) -> Any:
    """`a op b` for + - * / ** @ % //: computed now for constants, a node for tensors."""
    for v in (a, b):
        if isinstance(v, (Selection, InitSpec)) or v is None:
            raise cx.err(TypeErr, f"'{op}' cannot take {describe(v)}", span)
    if not isinstance(a, Val) and not isinstance(b, Val):
        if isinstance(a, str) or isinstance(b, str):
            if op == "+" and isinstance(a, str) and isinstance(b, str):
                return a + b
            raise cx.err(TypeErr, f"'{op}' cannot take strings", span)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and op == "+":
            return type(a)(list(a) + list(b))
        if isinstance(a, (list, tuple)):
            a = np.asarray(a)
        if isinstance(b, (list, tuple)):
            b = np.asarray(b)
        if op == "**" and _int_bits(a) > 1 and isinstance(b, int | np.integer) \
                and b * _int_bits(a) > MAX_INT_BITS:
            raise cx.err(TypeErr, f"constant expression: {a} ** {b} has about "
                         f"{b * math.log10(abs(a)):,.0f} digits; integers computed at compile "
                         f"time have at most {MAX_INT_BITS} bits", span)
        try:
            with np.errstate(all="raise"):
                r = _PY_OPS[op](a, b)
        except (ZeroDivisionError, FloatingPointError, ValueError, OverflowError) as ex:
            raise cx.err(TypeErr, f"constant expression: {ex}", span) from None
        if _int_bits(r) > MAX_INT_BITS:  # products of products grow without bound
            raise cx.err(TypeErr, f"constant expression: the result has {_int_bits(r):,} "
                         f"bits; integers computed at compile time have at most "
                         f"{MAX_INT_BITS}", span)
        return r
    if op in ("%", "//"):
        raise cx.err(TypeErr, f"'{op}' is only for compile-time numbers", span)
    a, b = coerce_pair(cx, a, b, span)
    name = _TENSOR_OPS[op]
    if name == "pow" and not a.type.is_float:
        a = cx.b.emit("cast", a, dtype=cx.float_dtype)
        b = cx.b.emit("cast", b, dtype=cx.float_dtype) if not b.type.is_float else b
    if name == "div" and not a.type.is_float:
        a = cx.b.emit("cast", a, dtype=cx.float_dtype)
        b = cx.b.emit("cast", b, dtype=cx.float_dtype)
    with cx.guard(span):
        return emit_stable(cx, name, [a, b], {})


def compare(cx: Context, op: str, a: Any, b: Any, span: A.Span) -> Any:
    """`a op b` for < <= > >= == !=: a Python bool for constants, a bool tensor otherwise;
    `x == None` / `x != None` tests at compile time whether an optional argument was given
    (`mask = None`), also when x is a tensor."""
    if op in ("==", "!=") and (a is None or b is None):
        return (a is b) == (op == "==")
    if not isinstance(a, Val) and not isinstance(b, Val):
        try:
            return _PY_COMPARE[op](a, b)
        except TypeError:  # "3" >= 1, [1] < 2: Python refuses the pair
            raise cx.err(TypeErr, f"'{op}' cannot compare {describe(a)} with "
                         f"{describe(b)}", span) from None
    a, b = coerce_pair(cx, a, b, span)
    with cx.guard(span):
        return cx.b.emit(_TENSOR_COMPARE[op], a, b)


def unary(cx: Context, op: str, v: Any, span: A.Span) -> Any:
    """`not v`, `+v`, `-v`."""
    if op == "not":
        if isinstance(v, Val):
            return cx.b.emit("logical_not", v)
        return not v
    if op == "+":
        return v
    if isinstance(v, Val):
        with cx.guard(span):
            return -v
    if isinstance(v, (Selection, InitSpec, str)):
        raise cx.err(TypeErr, f"cannot negate {describe(v)}", span)
    return -np.asarray(v) if isinstance(v, (list, tuple)) else -v


# ---------------------------------------------------------------- indexing

def static_index(cx: Context, items: list[Any], span: A.Span) -> tuple:
    """Evaluated index items (None, slices, integers) as the `getitem` attribute."""
    out = []
    for it in items:
        if it is None:
            out.append(("n",))
        elif isinstance(it, slice):
            out.append(("s", it.start, it.stop, it.step))
        elif isinstance(it, (int, np.integer)) and not isinstance(it, bool):
            out.append(("i", int(it)))
        else:
            raise cx.err(TypeErr, f"cannot index with {describe(it)}", span)
    return tuple(out)


def index(cx: Context, base: Any, items: list[Any], span: A.Span) -> Any:
    """`base[items]`: NumPy (or list) indexing of constants, `take` along the axis of one
    tensor index, else `getitem` with a static index."""
    if not isinstance(base, Val) and not any(isinstance(i, Val) for i in items):
        if isinstance(base, (tuple, list, np.ndarray)):
            try:
                if isinstance(base, (tuple, list)) and len(items) == 1:
                    return base[items[0]]
                return np.asarray(base)[tuple(items)]
            except (IndexError, TypeError) as ex:
                raise cx.err(ShapeErr, f"index: {ex}", span) from None
        raise cx.err(TypeErr, f"cannot index {describe(base)}", span)
    tensor_pos = [k for k, i in enumerate(items) if isinstance(i, Val)]
    if tensor_pos:
        if len(tensor_pos) > 1:
            raise cx.err(TypeErr, "at most one tensor index is supported", span)
        k = tensor_pos[0]
        if any(not (isinstance(i, slice) and i == slice(None)) for j, i in enumerate(items)
               if j != k):
            raise cx.err(TypeErr, "a tensor index must be combined with ':' only", span)
        idx = items[k]
        if idx.type.is_float:
            raise cx.err(TypeErr, f"a tensor index must be an integer, got {idx.type}", span)
        base = to_val(cx, base, span)
        with cx.guard(span):
            return cx.b.emit("take", base, idx, axis=k)
    with cx.guard(span):
        return cx.b.emit("getitem", base, index=static_index(cx, items, span))


# ---------------------------------------------------------------- selections

def select(cx: Context, kind: str, where: Any) -> Selection:
    """The trainable parameters of `kind` (params, weights, biases, scales; frozen_params:
    the frozen ones) whose names match `where` (a net name or a pattern), sorted by name."""
    names = []
    for n, v in sorted(cx.made.variables.items()):
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


def _match(name: str, where: Any) -> bool:
    import fnmatch

    if isinstance(where, str):
        return fnmatch.fnmatchcase(name, where) or name.startswith(where + ".")
    return False
