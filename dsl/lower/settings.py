"""The `train { }` block: one per spec, each setting a known name (`TRAIN_SETTINGS`) with a
constant value; `order` names objectives, `keep_best` a result, `augment` lists
augmentations. The values are recorded as written; the compiler checks their ranges.
"""

from __future__ import annotations

from typing import Any

from dsl import ast as A
from dsl.errors import NameErr, TypeErr, did_you_mean
from dsl.lower import expressions
from dsl.lower.context import Context
from runtime.ops import Val
from runtime.program import TrainSettings

TRAIN_SETTINGS = {f for f in TrainSettings.__dataclass_fields__} | {"order"}


def declare_train(cx: Context, s: A.TrainDecl) -> None:
    """Record the settings of the spec's `train { }` block in `cx.made.train_settings`."""
    if cx.made.train_decl is not None:
        raise cx.err(NameErr, "a spec has one 'train' section", s.span)
    cx.made.train_decl = s
    given = cx.made.train_settings
    for st in s.settings:
        if st.name not in TRAIN_SETTINGS:
            raise cx.err(NameErr, f"unknown train setting '{st.name}'"
                         + did_you_mean(st.name, TRAIN_SETTINGS), st.span)
        if st.name == "augment":
            given["augment"] = augmentations(cx, st)
            continue
        if st.name == "order":
            if not isinstance(st.value, A.ListExpr) or not all(
                    isinstance(i, A.Name) for i in st.value.items):
                raise cx.err(TypeErr, "order is a list of objective names", st.value.span)
            given["order"] = [i.id for i in st.value.items]
            continue
        if st.name == "keep_best" and isinstance(st.value, A.Name):
            given["keep_best"] = st.value.id  # a metric, named as in order
            continue
        v = expressions.ev(cx, st.value, cx.globals)
        if isinstance(v, Val):
            raise cx.err(TypeErr, f"train setting '{st.name}' must be a constant", st.span)
        given[st.name] = v


def augmentations(cx: Context, st: A.Setting) -> list[tuple[str, dict[str, Any]]]:
    """`augment = [hflip(p = 0.5), crop(pad = 1), noise(std = 0.05)]` (B 6.1)."""
    from runtime.train import augment

    items = st.value.items if isinstance(st.value, A.ListExpr) else None
    if items is None:
        raise cx.err(TypeErr, "augment is a list such as [hflip(), crop(pad = 1)]",
                     st.value.span)
    out = []
    for it in items:
        call = it if isinstance(it, A.Call) else (
            A.Call(it.id, (), (), it.span) if isinstance(it, A.Name) else None)
        if call is None or call.args:
            raise cx.err(TypeErr, "each augmentation is name(option = value)", it.span)
        opts = {k.name: expressions.ev(cx, k.value, cx.globals) for k in call.kwargs}
        problem = augment.check(call.func, opts)
        if problem:
            raise cx.err(NameErr, problem, call.span)
        out.append((call.func, opts))
    return out
