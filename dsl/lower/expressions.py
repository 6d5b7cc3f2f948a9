"""The expression walker: `ev` gives an expression's value, a compile-time value or a tensor
(`Val`), dispatching on the AST type through `EXPRESSIONS`. Owns names (locals, `step` and
`epoch`, `training`, selections, initializers), dotted parameter names, the data set's
`train.x`/`test.y` constants and `data.vocab_size` facts, and index items; calls are
`calls.call`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dsl import ast as A
from dsl.errors import NameErr, TypeErr, did_you_mean
from dsl.lower import builtins, calls, loops
from dsl.lower.context import Context
from dsl.lower.scope import Scope
from dsl.lower.values import InitSpec, arith, compare, describe, index, select, unary
from runtime import init as inits
from runtime.ir import TensorType
from runtime.ops import REGISTRY, Val

SELECTIONS = ("params", "weights", "biases", "scales", "frozen_params")


def ev(cx: Context, e: A.Expr, scope: Scope) -> Any:
    """The value of `e` in `scope`. Literals, names, tuples and lists leave `cx.span` where
    it is; other expressions move it to themselves."""
    if isinstance(e, (A.Num, A.Str, A.Bool)):
        return e.value
    if isinstance(e, A.NoneLit):
        return None
    if isinstance(e, A.Name):
        return name(cx, e, scope)
    if isinstance(e, A.TupleExpr):
        return tuple(ev(cx, i, scope) for i in e.items)
    if isinstance(e, A.ListExpr):
        return [ev(cx, i, scope) for i in e.items]
    cx.span = e.span
    rule = EXPRESSIONS.get(type(e))
    if rule is None:
        raise cx.err(TypeErr, f"unsupported expression {type(e).__name__}", e.span)
    return rule(cx, e, scope)


def ev_int(cx: Context, e: A.Expr, scope: Scope) -> int:
    """A compile-time integer (a loop bound)."""
    v = ev(cx, e, scope)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise cx.err(TypeErr, f"expected a compile-time integer, got {describe(v)}", e.span)
    return int(v)


def ev_index_item(cx: Context, item: Any, scope: Scope) -> Any:
    """An index item: a slice of compile-time integers, None (a new axis) or a value."""
    if isinstance(item, A.Slice):
        parts = []
        for p in (item.start, item.stop, item.step):
            if p is None:
                parts.append(None)
                continue
            v = ev(cx, p, scope)
            if isinstance(v, Val) or isinstance(v, bool) or not isinstance(
                    v, (int, np.integer)):
                raise cx.err(TypeErr, "slice bounds must be compile-time integers", p.span)
            parts.append(int(v))
        return slice(*parts)
    if isinstance(item, A.NoneLit):
        return None
    return ev(cx, item, scope)


def _binop(cx: Context, e: A.BinOp, scope: Scope) -> Any:
    if e.op in ("and", "or"):
        left = ev(cx, e.left, scope)
        if isinstance(left, Val):
            raise cx.err(TypeErr, f"'{e.op}' needs compile-time values; use "
                         "logical_and/logical_or for tensors", e.span)
        if (e.op == "and" and not left) or (e.op == "or" and left):
            return left
        return ev(cx, e.right, scope)
    return arith(cx, e.op, ev(cx, e.left, scope), ev(cx, e.right, scope), e.span)


def _unary(cx: Context, e: A.UnaryOp, scope: Scope) -> Any:
    return unary(cx, e.op, ev(cx, e.operand, scope), e.span)


def _compare(cx: Context, e: A.Compare, scope: Scope) -> Any:
    a, b = ev(cx, e.left, scope), ev(cx, e.right, scope)
    return compare(cx, e.op, a, b, e.span)


def _call(cx: Context, e: A.Call, scope: Scope) -> Any:
    return calls.call(cx, e, scope)


def _index(cx: Context, e: A.Index, scope: Scope) -> Any:
    base = ev(cx, e.value, scope)
    items = [ev_index_item(cx, i, scope) for i in e.items]
    if cx.loop is not None and isinstance(base, Val):  # x[:, t]: a slice per iteration
        hit = loops.sequence_slice(cx, base, items)
        if hit is not None:
            base, items = hit
            if not items:
                return base
    return index(cx, base, items, e.span)


def _attribute(cx: Context, e: A.Attribute, scope: Scope) -> Any:
    """`classifier.dense1.W` (a parameter by its full name), `train.x` (data) or
    `data.vocab_size` (a fact of the data set)."""
    parts: list[str] = []
    node: A.Expr = e
    while isinstance(node, A.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, A.Name):
        raise cx.err(TypeErr, "attributes apply to names only", e.span)
    parts.append(node.id)
    dotted = ".".join(reversed(parts))
    if node.id in ("train", "test") and len(parts) == 2:
        return data_field(cx, node.id, e.attr, e.span)
    if node.id == "data" and len(parts) == 2:
        return data_fact(cx, e.attr, e.span)
    if dotted in cx.made.var_node:
        return Val(cx.root, cx.made.var_node[dotted])
    raise cx.err(NameErr, f"unknown parameter '{dotted}'"
                 + did_you_mean(dotted, cx.made.var_node), e.span)


EXPRESSIONS: dict[type, Callable[[Context, Any, Scope], Any]] = {
    A.BinOp: _binop,
    A.UnaryOp: _unary,
    A.Compare: _compare,
    A.Call: _call,
    A.Index: _index,
    A.Attribute: _attribute,
}


def name(cx: Context, e: A.Name, scope: Scope) -> Any:
    """A name: a binding, a counter, `training`, a selection or an initializer."""
    found, v = scope.lookup(e.id)
    if found:
        return v
    if e.id in ("step", "epoch"):
        return counter(cx, e.id)
    if e.id == "training":
        return cx.mode == "train"
    if e.id in SELECTIONS:
        return select(cx, e.id, None)
    if inits.canonical(e.id):
        return InitSpec(inits.canonical(e.id), {}, e.span)
    if e.id in cx.defs.nets or e.id in REGISTRY or e.id in builtins.BUILTINS:
        raise cx.err(TypeErr, f"'{e.id}' is a function; call it: {e.id}(...)", e.span)
    candidates = scope.names() | {"step", "epoch", "params", "weights", "biases",
                                  *inits.INITIALIZERS}
    raise cx.err(NameErr, f"unknown name '{e.id}'" + did_you_mean(e.id, candidates), e.span)


def counter(cx: Context, which: str) -> Val:
    """`step` or `epoch`: a scalar input the trainer feeds, made on first use."""
    made = cx.made
    if which not in made.input_nodes:
        t = TensorType(cx.float_dtype, ())
        made.input_nodes[which] = cx.root.graph.add("input", (), {}, t, role="input",
                                                     name=which)
        made.inputs[which] = t
        made.input_defaults[which] = np.asarray(1.0 if which == "step" else 0.0,
                                                dtype=t.np_dtype())
    return Val(cx.root, made.input_nodes[which])


def data_field(cx: Context, split: str, field_name: str, span: A.Span) -> np.ndarray:
    """`train.x`: a field of the data set as a constant (the data set is loaded once)."""
    ds = _dataset(cx, f"{split}.{field_name}", span)
    arrays = ds.train if split == "train" else ds.test
    if arrays is None:
        raise cx.err(NameErr, "this data set has no test split", span)
    if field_name not in arrays:
        raise cx.err(NameErr, f"data set has no field '{field_name}'"
                     + did_you_mean(field_name, arrays), span)
    return arrays[field_name]


def _dataset(cx: Context, what: str, span: A.Span) -> Any:
    """The spec's data set, loaded on first use."""
    if cx.made.data_decl is None or cx.load_data is None:
        raise cx.err(NameErr, f"'{what}' needs a 'data' line before it", span)
    if cx.dataset is None:
        cx.dataset = cx.load_data(cx.made.data_decl)
    return cx.dataset


def data_fact(cx: Context, fact: str, span: A.Span) -> int | float | bool:
    """`data.vocab_size`: a number the data set states about itself, as a compile-time
    constant (the data set is loaded once)."""
    ds = _dataset(cx, f"data.{fact}", span)
    facts = ds.facts()
    if fact not in facts:
        if fact in ds.train:
            raise cx.err(NameErr, f"'data.{fact}' is not a fact of the data set; its field "
                         f"'{fact}' is train.{fact} (or test.{fact})", span)
        raise cx.err(NameErr, f"data set '{ds.info.get('name', '?')}' states no fact "
                     f"'{fact}'" + did_you_mean(fact, facts)
                     + f"; its facts: {', '.join(sorted(facts)) or 'none'}", span)
    return facts[fact]
