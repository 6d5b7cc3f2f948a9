"""Parameter initializers: each draws an array from a seeded generator given shape and fans.

Fans follow the usual layouts: a dense weight [in, out] has fan_in = in, fan_out = out; a
conv kernel [O, C, k...] has fan_in = C·Πk and fan_out = O·Πk; a vector has fan_in = its size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _orthogonal(rng, shape, gain=1.0):
    rows = shape[0] if len(shape) > 1 else 1
    cols = math.prod(shape) // rows
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    q = q if rows >= cols else q.T
    return gain * q[:rows, :cols].reshape(shape)


INITIALIZERS: dict[str, tuple[Callable[..., np.ndarray], dict[str, float]]] = {
    "zeros": (lambda rng, s: np.zeros(s), {}),
    "ones": (lambda rng, s: np.ones(s), {}),
    "constant": (lambda rng, s, value: np.full(s, value), {"value": 0.0}),
    "normal": (lambda rng, s, std, mean: rng.standard_normal(s) * std + mean,
               {"std": 1.0, "mean": 0.0}),
    "uniform": (lambda rng, s, low, high: rng.uniform(low, high, s), {"low": -1.0, "high": 1.0}),
    # N(0, 1/fan_in)  (B Eq. 4.14)
    "fan_in_normal": (lambda rng, s: rng.standard_normal(s) / math.sqrt(fans(s)[0]), {}),
    # σ² = 2 / (fan_in + fan_out)
    "xavier_normal": (lambda rng, s, gain: gain * rng.standard_normal(s)
                      * math.sqrt(2.0 / sum(fans(s))), {"gain": 1.0}),
    # U(±√(6 / (fan_in + fan_out)))
    "xavier_uniform": (lambda rng, s, gain: gain * rng.uniform(-1, 1, s)
                       * math.sqrt(6.0 / sum(fans(s))), {"gain": 1.0}),
    # σ² = 2 / fan_in
    "he_normal": (lambda rng, s: rng.standard_normal(s) * math.sqrt(2.0 / fans(s)[0]), {}),
    # U(±√(6 / fan_in))
    "he_uniform": (lambda rng, s: rng.uniform(-1, 1, s) * math.sqrt(6.0 / fans(s)[0]), {}),
    # U(±1/√fan_in): the common library default
    "default": (lambda rng, s: rng.uniform(-1, 1, s) / math.sqrt(fans(s)[0]), {}),
    "orthogonal": (lambda rng, s, gain: _orthogonal(rng, s, gain), {"gain": 1.0}),
}
ALIASES = {"glorot_normal": "xavier_normal", "glorot_uniform": "xavier_uniform",
           "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform",
           "lecun_normal": "fan_in_normal"}


def canonical(name: str) -> str | None:
    name = ALIASES.get(name, name)
    return name if name in INITIALIZERS else None


def initialize(name: str, shape: tuple[int, ...], rng: np.random.Generator,
               **options: float) -> np.ndarray:
    fn, defaults = INITIALIZERS[canonical(name) or name]
    unknown = set(options) - set(defaults)
    if unknown:
        raise KeyError(sorted(unknown)[0])
    return np.asarray(fn(rng, tuple(shape), **{**defaults, **options}), dtype=np.float64)


def seeded_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on the seed and the variable's name."""
    import hashlib

    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64([seed, h]))
