"""The compile-time builtins: `BUILTINS` maps a name to a function of (context, call, scope),
called when no def or net of that name is being expanded. This module holds the table and the
builtins that compute compile-time values or check (`pair`, `conv_padding`, `shape`,
`same_shape`, `require`, selections, `len`, `count`, NumPy constants such as `linspace`);
those that make tensors are in `tensor_builtins`. `dslrun doc` describes each row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from dsl import ast as A
from dsl.errors import NameErr, ShapeErr, TypeErr, did_you_mean
from dsl.lower import calls, expressions
from dsl.lower.context import Context
from dsl.lower.scope import Scope
from dsl.lower.tensor_builtins import (
    MAX_CONST_ELEMENTS,
    Builtin,
    b_cast,
    b_concat,
    b_flatten,
    b_grad,
    b_hessian,
    b_hvp,
    b_l1,
    b_l2,
    b_randint,
    b_reshape,
    b_split,
    b_stack,
    b_transpose,
    fill_builtin,
    fill_like_builtin,
    random_builtin,
    reduce_builtin,
)
from dsl.lower.values import Selection, describe, select
from runtime.ops import Val


def b_shape(cx: Context, e: A.Call, scope: Scope) -> tuple:
    a = calls.builtin_args(cx, e, scope, ["x"], {})
    x = a["x"]
    if isinstance(x, Val):
        return tuple(x.shape)
    if isinstance(x, np.ndarray):
        return tuple(x.shape)
    raise cx.err(TypeErr, f"shape: expected a tensor, got {describe(x)}", e.span)


def b_same_shape(cx: Context, e: A.Call, scope: Scope) -> None:
    """`same_shape(pred, target)`: a loss compares a prediction with a target of the same shape
    (a scalar target, such as 1 in `bce_with_logits(D(x), 1)`, broadcasts); emits nothing.
    Without it `mse` of f32[B,1] and f32[B] would silently broadcast to [B,B]."""
    a = calls.builtin_args(cx, e, scope, ["pred", "target"], {})
    shapes = [tuple(v.shape) if isinstance(v, Val | np.ndarray) else () for v in a.values()]
    ps, ts = shapes
    if ts == () or ps == ts:
        return None
    p, t = (describe(v).removeprefix("a tensor ") for v in a.values())
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
    raise cx.err(ShapeErr, f"the prediction {p} and the target {t} have different shapes"
                 f"{how}{hint}", e.span)


def b_require(cx: Context, e: A.Call, scope: Scope) -> None:
    """`require(cond, "message")`: a compile-time check; in a def, the error is reported at
    the user's call (`require(p >= 0 and p < 1, "p must be in [0, 1)")`)."""
    a = calls.builtin_args(cx, e, scope, ["cond", "message"], {})
    cond, message = a["cond"], a["message"]
    if isinstance(cond, Val) or not isinstance(message, str):
        raise cx.err(TypeErr, "require(cond, \"message\") takes a compile-time condition "
                     "and a string", e.span)
    if not cond:
        raise cx.err(TypeErr, message, e.span)


def selection_builtin(kind: str) -> Callable[[Context, A.Call, Scope], Selection]:
    """params/weights/biases/scales(net or "pattern"): the parameters it selects (some)."""
    def fn(cx: Context, e: A.Call, scope: Scope) -> Selection:
        if len(e.args) != 1 or e.kwargs:
            raise cx.err(TypeErr, f"{kind}(net) takes one net name or a pattern string",
                         e.span)
        arg = e.args[0]
        if isinstance(arg, A.Name) and (arg.id in cx.defs.nets or not scope.lookup(arg.id)[0]):
            where = arg.id
        else:
            where = expressions.ev(cx, arg, scope)
            if not isinstance(where, str):
                raise cx.err(TypeErr, f"{kind}(...) takes a net name or a pattern string",
                             arg.span)
        sel = select(cx, kind, where)
        if not sel.names:
            raise cx.err(NameErr, f"{kind}({where}) selects no parameters", e.span)
        return sel
    return fn


def b_numpy(fn: Callable[..., Any], names: list[str], defaults: dict[str, Any],
            size: Callable[..., float] | None = None) -> Builtin:
    """A compile-time NumPy function over constants (linspace, arange, cumprod, ...);
    `size(**args)`: the number of elements it would make, checked before it runs."""
    def call(cx: Context, e: A.Call, scope: Scope) -> Any:
        a = calls.builtin_args(cx, e, scope, names, defaults)
        if any(isinstance(v, Val) for v in a.values()):
            raise cx.err(TypeErr, f"{e.func} runs at compile time and needs constants",
                         e.span)
        try:
            n = size(**a) if size is not None else 0
            if n > MAX_CONST_ELEMENTS:
                raise cx.err(ShapeErr, f"{e.func} would make {n:.3g} elements, more than the "
                             f"limit of {MAX_CONST_ELEMENTS:,} for a compile-time constant"
                             + cx.overrides.note(*a.values()), e.span)
            return fn(**a)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError) as ex:
            raise cx.err(TypeErr, f"{e.func}: {ex}", e.span) from None
    return call


def b_len(cx: Context, e: A.Call, scope: Scope) -> int | str:
    """The length of a list, the size of a tensor's first axis (its name when symbolic: a
    run-time loop may run over it) or the number of parameters in a selection."""
    a = calls.builtin_args(cx, e, scope, ["x"], {})
    x = a["x"]
    if isinstance(x, Val):
        if x.type.rank == 0:
            raise cx.err(TypeErr, f"len: a scalar ({x.type}) has no length", e.span)
        return x.shape[0]
    if isinstance(x, Selection):
        return len(x.names)
    return len(x)


def b_num_params(cx: Context, e: A.Call, scope: Scope) -> int:
    a = calls.builtin_args(cx, e, scope, ["sel"], {})
    sel = a["sel"]
    if not isinstance(sel, Selection):
        raise cx.err(TypeErr, "count(selection)", e.span)
    return int(sum(cx.made.variables[n].size for n in sel.names))


def b_pair(cx: Context, e: A.Call, scope: Scope) -> tuple:
    """pair(3) = (3, 3); pair([3, 5]) = (3, 5): kernel sizes, strides, dilations."""
    a = calls.builtin_args(cx, e, scope, ["v"], {})
    v = a["v"]
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v), int(v))
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return (int(v[0]), int(v[1]))
    raise cx.err(TypeErr, f"expected an integer or a pair of integers, got {v!r}", e.span)


def b_conv_padding(cx: Context, e: A.Call, scope: Scope) -> Any:
    """Resolve a padding option: "valid" = 0, "same" = the padding that keeps the size at
    stride 1 (split low/high like PyTorch), or integers as given."""
    a = calls.builtin_args(cx, e, scope, ["padding", "kernel", "dilation"], {"dilation": 1})
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
        raise cx.err(TypeErr, f"padding must be \"same\", \"valid\" or integers, got {pad!r}"
                     + did_you_mean(pad, ["same", "valid"]), e.span)
    return tuple(pad) if isinstance(pad, list) else pad


BUILTINS: dict[str, Builtin] = {
    "pair": b_pair,
    "conv_padding": b_conv_padding,
    "shape": b_shape,
    "same_shape": b_same_shape,
    "require": b_require,
    "grad": b_grad,
    "hessian": b_hessian,
    "hvp": b_hvp,
    "sum": reduce_builtin("sum"),
    "mean": reduce_builtin("mean"),
    "max": reduce_builtin("max"),
    "min": reduce_builtin("min"),
    "l1": b_l1,
    "l2": b_l2,
    "params": selection_builtin("params"),
    "weights": selection_builtin("weights"),
    "biases": selection_builtin("biases"),
    "scales": selection_builtin("scales"),
    "normal": random_builtin("random_normal", ["shape", "std", "mean", "dtype"],
                             {"std": 1.0, "mean": 0.0, "dtype": None}),
    "uniform": random_builtin("random_uniform", ["shape", "low", "high", "dtype"],
                              {"low": 0.0, "high": 1.0, "dtype": None}),
    "bernoulli": random_builtin("random_bernoulli", ["shape", "p", "dtype"],
                                {"p": 0.5, "dtype": None}),
    "randint": b_randint,
    "zeros": fill_builtin(0.0),
    "ones": fill_builtin(1.0),
    "full": fill_builtin(None),
    "zeros_like": fill_like_builtin(0.0),
    "ones_like": fill_like_builtin(1.0),
    "full_like": fill_like_builtin(None),
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
