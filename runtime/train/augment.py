"""Data augmentation in the data pipeline (B 6.1): seeded, per batch, on the image field.

Each augmentation is a function `(x, rng, **options) -> x` over a batch [N, C, H, W] (flips,
crops) or any shape (noise, brightness, contrast). The generator for step t is derived from
(seed, t), so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


class AugmentError(Exception):
    """An unknown augmentation or option, or one that does not fit the data."""


def _per_sample(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    return rng.random(n) < p


def _image(name: str, x: np.ndarray) -> None:
    if x.ndim != 4:
        raise AugmentError(f"{name} needs images [N, C, H, W], got an array of shape "
                           f"{list(x.shape)} (load digits with image = true)")


def hflip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    _image("hflip", x)
    m = _per_sample(rng, len(x), p)
    x = x.copy()
    x[m] = x[m][..., ::-1]
    return x


def vflip(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    _image("vflip", x)
    m = _per_sample(rng, len(x), p)
    x = x.copy()
    x[m] = x[m][..., ::-1, :]
    return x


def crop(x: np.ndarray, rng: np.random.Generator, pad: int = 2) -> np.ndarray:
    """Zero-pad by `pad` and cut a random window of the original size from each image."""
    _image("crop", x)
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    out = np.empty_like(x)
    for i in range(n):
        out[i] = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return out


def noise(x: np.ndarray, rng: np.random.Generator, std: float = 0.05) -> np.ndarray:
    return (x + rng.standard_normal(x.shape) * std).astype(x.dtype)


def _per_sample_shape(x: np.ndarray) -> tuple[int, ...]:
    return (len(x),) + (1,) * (x.ndim - 1)


def brightness(x: np.ndarray, rng: np.random.Generator, delta: float = 0.1) -> np.ndarray:
    return (x + rng.uniform(-delta, delta, _per_sample_shape(x))).astype(x.dtype)


def contrast(x: np.ndarray, rng: np.random.Generator, low: float = 0.8,
             high: float = 1.2) -> np.ndarray:
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    return ((x - mean) * rng.uniform(low, high, _per_sample_shape(x)) + mean).astype(x.dtype)


AUGMENTATIONS: dict[str, tuple[Callable[..., np.ndarray], dict[str, float]]] = {
    "hflip": (hflip, {"p": 0.5}),
    "vflip": (vflip, {"p": 0.5}),
    "crop": (crop, {"pad": 2}),
    "noise": (noise, {"std": 0.05}),
    "brightness": (brightness, {"delta": 0.1}),
    "contrast": (contrast, {"low": 0.8, "high": 1.2}),
}


# option -> (kind, low, high): the values an option may take, the same in every augmentation
OPTION_RANGES: dict[str, tuple[type, float, float]] = {
    "p": (float, 0.0, 1.0),
    "pad": (int, 0, 1024),
    "std": (float, 0.0, 1e3),
    "delta": (float, 0.0, 1e3),
    "low": (float, 0.0, 1e3),
    "high": (float, 0.0, 1e3),
}


def _value_problem(name: str, option: str, value: Any) -> str | None:
    kind, low, high = OPTION_RANGES[option]
    number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool)
    if not number or (kind is int and not isinstance(value, int | np.integer)):
        what = "an integer" if kind is int else "a number"
        return f"augmentation '{name}': option '{option}' must be {what}, got {value!r}"
    if not low <= value <= high:  # also false for nan
        return (f"augmentation '{name}': option '{option}' must be in [{low:g}, {high:g}], "
                f"got {value!r}")
    return None


def check(name: str, options: Mapping[str, Any]) -> str | None:
    """None if fine, else a one-sentence problem (unknown name or option, a value out of its
    range, low above high)."""
    if name not in AUGMENTATIONS:
        return f"unknown augmentation '{name}'; known: {', '.join(AUGMENTATIONS)}"
    defaults = AUGMENTATIONS[name][1]
    bad = set(options) - set(defaults)
    if bad:
        opts = ", ".join(defaults)
        return f"augmentation '{name}' has no option '{sorted(bad)[0]}' (options: {opts})"
    for option, value in options.items():
        problem = _value_problem(name, option, value)
        if problem:
            return problem
    merged = {**defaults, **options}
    if "low" in merged and merged["low"] > merged["high"]:
        return (f"augmentation '{name}': low = {merged['low']!r} is above "
                f"high = {merged['high']!r}")
    return None


def apply(batch: dict[str, np.ndarray], steps: Sequence[tuple[str, dict[str, Any]]],
          seed: int, step: int, field: str = "x") -> dict[str, np.ndarray]:
    """The batch with `steps` applied in order to `field`, drawn from (seed, step)."""
    if not steps or field not in batch:
        return batch
    rng = np.random.Generator(np.random.PCG64([seed, 0xA06, step]))
    x = batch[field]
    for name, opts in steps:
        fn, defaults = AUGMENTATIONS[name]
        x = fn(x, rng, **{**defaults, **opts})
    return {**batch, field: x}
