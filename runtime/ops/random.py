"""Seeded random primitives. Kernels draw from the executor's generator (`rng`), so a run is
reproducible from its seed and resumable from the generator state in a checkpoint."""

from __future__ import annotations

import functools

from runtime.dtypes import INTS, np_dtype
from runtime.ir import TensorType
from runtime.ops.registry import REGISTRY, OpDef, ShapeError, register


def _rand_shape(op):
    def rule(attrs):
        if op == "random_randint" and attrs["dtype"] not in INTS:
            raise ShapeError(f"{op}: dtype must be an integer type")
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
