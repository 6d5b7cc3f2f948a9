"""Seeded random primitives. Kernels draw from the executor's generator (`rng`), so a run is
reproducible from its seed and resumable from the generator state in a checkpoint.

`random_normal`, `random_uniform`, `random_bernoulli` and `random_randint` make a tensor of
a given shape; `random_categorical` draws one class per row of its logits input (sampling
from a language model). None carries a gradient (they are `nondiff`)."""

from __future__ import annotations

import functools
import math

import numpy as np

from runtime.dtypes import INTS, np_dtype
from runtime.ir import TensorType
from runtime.ops.registry import REGISTRY, OpDef, ShapeError, register

_INT64 = np.iinfo(np.int64)  # the generator draws int64: randint's range

# the options each draw needs, checked when the node is made: (test, what it must be)
_VALID = {
    "random_normal": (lambda a: math.isfinite(a["mean"]) and math.isfinite(a["std"])
                      and a["std"] >= 0, "mean finite and std finite and >= 0"),
    "random_uniform": (lambda a: math.isfinite(a["low"]) and math.isfinite(a["high"])
                       and a["low"] <= a["high"], "low <= high, both finite"),
    "random_bernoulli": (lambda a: 0 <= a["p"] <= 1, "p from 0 to 1"),
    "random_randint": (lambda a: all(isinstance(a[k], int) and not isinstance(a[k], bool)
                                     for k in ("low", "high")) and a["low"] < a["high"]
                       and _holds(a["dtype"], a["low"]) and _holds(a["dtype"], a["high"] - 1),
                       "low < high, both integers, low and high - 1 (high is excluded) in "
                       "the range of the dtype (i64: from -2**63 to 2**63 - 1)"),
}


def _holds(dtype: str, v: int) -> bool:
    """The integer dtype holds `v` (the generator draws int64, then casts)."""
    info = np.iinfo(np_dtype(dtype)) if dtype in INTS else _INT64
    return max(info.min, _INT64.min) <= v <= min(info.max, _INT64.max)


def _rand_shape(op):
    def rule(attrs):
        if op == "random_randint" and attrs["dtype"] not in INTS:
            raise ShapeError(f"{op}: dtype must be an integer type")
        valid, want = _VALID[op]
        if not valid(attrs):
            given = ", ".join(f"{k} = {attrs[k]!r}" for k in ("mean", "std", "low", "high", "p")
                              if k in attrs)
            raise ShapeError(f"{op}: needs {want}, got {given}")
        return TensorType(attrs["dtype"], tuple(attrs["shape"]))
    return rule


def _normal(xp, rng, shape, mean, std, dtype):
    return (rng.standard_normal(tuple(shape)) * std + mean).astype(np_dtype(dtype), copy=False)


def _uniform(xp, rng, shape, low, high, dtype):
    return rng.uniform(low, high, tuple(shape)).astype(np_dtype(dtype), copy=False)


def _bernoulli(xp, rng, shape, p, dtype):
    return (rng.random(tuple(shape)) < p).astype(np_dtype(dtype), copy=False)


def _randint(xp, rng, shape, low, high, dtype):
    return rng.integers(low, high, tuple(shape)).astype(np_dtype(dtype), copy=False)


def with_generator(ctx, node, attrs):
    """The compile hook of every random op: its kernel draws from the plan's generator."""
    forward = REGISTRY[node.op].forward
    return functools.partial(forward, ctx.xp, ctx.rng, **attrs)


for _name, _fwd, _attrs in [
    ("random_normal", _normal, {"mean": 0.0, "std": 1.0}),
    ("random_uniform", _uniform, {"low": 0.0, "high": 1.0}),
    ("random_bernoulli", _bernoulli, {"p": 0.5}),
    ("random_randint", _randint, {"low": 0, "high": 2}),
]:
    register(OpDef(_name, _rand_shape(_name), _fwd, None,
                   attrs={"shape": (), **_attrs,
                          "dtype": "i64" if _name == "random_randint" else "f32"},
                   arity=0, random=True, nondiff=True, compile=with_generator))


def _categorical_shape(attrs, t):
    if t.rank < 1:
        raise ShapeError(f"random_categorical: logits need a class axis, got {t}")
    if not attrs["temperature"] > 0:
        raise ShapeError("random_categorical: temperature must be positive, got "
                         f"{attrs['temperature']}")
    k = attrs["top_k"]
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ShapeError(f"random_categorical: top_k must be an integer >= 0, got {k!r}")
    return TensorType("i64", t.shape[:-1])


def _categorical(xp, rng, logits, temperature, top_k):
    """One index per row of `logits` [..., m], drawn from softmax(logits / temperature) over
    the top_k largest logits (all when top_k is 0 or >= m), by inverting the CDF at one
    uniform draw per row: the first class whose cumulative weight reaches u·total, u in
    (0, 1] (so a class of weight 0 is never drawn)."""
    z = logits.astype("float64") / temperature  # cumulative sums over many classes: f64
    m = z.shape[-1]
    if 0 < top_k < m:  # keep logits >= the k-th largest (ties at the threshold stay)
        kth = xp.partition(z, m - top_k, axis=-1)[..., m - top_k:m - top_k + 1]
        z = xp.where(z >= kth, z, -xp.inf)
    w = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    cdf = xp.cumsum(w, axis=-1)
    u = 1.0 - rng.random(z.shape[:-1] + (1,))
    picked = xp.sum(cdf < u * cdf[..., -1:], axis=-1)
    return xp.minimum(picked, m - 1).astype("int64")


register(OpDef("random_categorical", _categorical_shape, _categorical, None,
               attrs={"temperature": 1.0, "top_k": 0}, arity=1, random=True, nondiff=True,
               compile=with_generator,
               doc="one class per row of the logits, from softmax(logits / temperature) over "
                   "the top_k largest (0: all)"))
