"""Parameter initializers: each draws an array from a seeded generator given shape and fans.

Fans follow the usual layouts: a dense weight [in, out] has fan_in = in, fan_out = out; a
conv kernel [O, C, k...] has fan_in = C·Πk and fan_out = O·Πk; a vector has fan_in = its size.

An initializer is a draw (float64 numbers from the generator, or none for a fill) and an
elementwise formula over them. `initialize` writes into an array of the target dtype chunk by
chunk, so a float32 weight never exists in float64 as a whole (the peak is the weight plus one
chunk), and the values are those of one float64 draw of the whole shape, cast.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK = 1 << 20  # elements drawn at a time: 8 MiB of float64


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _orthogonal(rng: np.random.Generator, shape: tuple[int, ...], gain: float = 1.0) -> Any:
    rows = shape[0] if len(shape) > 1 else 1
    cols = math.prod(shape) // rows
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    q = q if rows >= cols else q.T
    return gain * q[:rows, :cols].reshape(shape)


Draw = Callable[..., Any]  # (rng, n, **options) -> n float64 numbers, or None for a fill


@dataclass(frozen=True)
class Init:
    """`draw` gives the raw numbers of n elements (None: no draw), `value(z, shape, **options)`
    turns them into initial values elementwise; `whole` draws the whole shape at once (an
    orthogonal matrix is not elementwise): `value(rng, shape, **options)`."""

    draw: Draw | None
    value: Callable[..., Any]
    whole: bool = False


def _normal(rng: np.random.Generator, n: int, **_: float) -> np.ndarray:
    return rng.standard_normal(n)


def _unit_uniform(rng: np.random.Generator, n: int, **_: float) -> np.ndarray:
    return rng.uniform(-1, 1, n)


INITIALIZERS: dict[str, tuple[Init, dict[str, float]]] = {
    "zeros": (Init(None, lambda z, s: 0.0), {}),
    "ones": (Init(None, lambda z, s: 1.0), {}),
    "constant": (Init(None, lambda z, s, value: value), {"value": 0.0}),
    "normal": (Init(_normal, lambda z, s, std, mean: z * std + mean), {"std": 1.0, "mean": 0.0}),
    "uniform": (Init(lambda rng, n, low, high: rng.uniform(low, high, n),
                     lambda z, s, low, high: z), {"low": -1.0, "high": 1.0}),
    # N(0, 1/fan_in)  (B Eq. 4.14)
    "fan_in_normal": (Init(_normal, lambda z, s: z / math.sqrt(fans(s)[0])), {}),
    # σ² = 2 / (fan_in + fan_out)
    "xavier_normal": (Init(_normal, lambda z, s, gain: gain * z * math.sqrt(2.0 / sum(fans(s)))),
                      {"gain": 1.0}),
    # U(±√(6 / (fan_in + fan_out)))
    "xavier_uniform": (Init(_unit_uniform,
                            lambda z, s, gain: gain * z * math.sqrt(6.0 / sum(fans(s)))),
                       {"gain": 1.0}),
    # σ² = 2 / fan_in
    "he_normal": (Init(_normal, lambda z, s: z * math.sqrt(2.0 / fans(s)[0])), {}),
    # U(±√(6 / fan_in))
    "he_uniform": (Init(_unit_uniform, lambda z, s: z * math.sqrt(6.0 / fans(s)[0])), {}),
    # U(±1/√fan_in): the common library default
    "default": (Init(_unit_uniform, lambda z, s: z / math.sqrt(fans(s)[0])), {}),
    "orthogonal": (Init(None, _orthogonal, whole=True), {"gain": 1.0}),
}
ALIASES = {"glorot_normal": "xavier_normal", "glorot_uniform": "xavier_uniform",
           "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform",
           "lecun_normal": "fan_in_normal"}


def canonical(name: str) -> str | None:
    name = ALIASES.get(name, name)
    return name if name in INITIALIZERS else None


def initialize(name: str, shape: tuple[int, ...], rng: np.random.Generator,
               dtype: Any = np.float64, **options: float) -> np.ndarray:
    """The initial value of a variable of `shape` in `dtype`, drawn from `rng`."""
    init, defaults = INITIALIZERS[canonical(name) or name]
    unknown = set(options) - set(defaults)
    if unknown:
        raise KeyError(sorted(unknown)[0])
    opts = {**defaults, **options}
    shape = tuple(shape)
    if init.whole:
        return np.asarray(init.value(rng, shape, **opts), dtype=np.float64).astype(dtype)
    out = np.empty(shape, dtype=dtype)
    if init.draw is None:
        out.fill(init.value(None, shape, **opts))
        return out
    flat = out.reshape(-1)  # a view: `out` is contiguous
    for start in range(0, flat.size, CHUNK):
        n = min(CHUNK, flat.size - start)
        flat[start:start + n] = init.value(init.draw(rng, n, **opts), shape, **opts)
    return out


def seeded_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on the seed and the variable's name."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64([seed, h]))
