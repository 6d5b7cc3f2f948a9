"""Synthetic sequence tasks, seeded and deterministic: `adding` (Hochreiter and Schmidhuber's
adding problem), `copy` (copy memory), `parity` (bit sequences) and `sine` (next-value
prediction on one long wave, cut into consecutive windows).

Each takes `n` (samples, or windows for `sine`), `T` (steps per sample), `seed` and
`test_fraction` (0.1): the test split is the last samples (by position), and so is a
`validation` split. The same seed gives the same arrays whatever the test fraction.

This module must not import `dsl`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from runtime.train.data.dataset import DataError, Dataset
from runtime.train.data.registry import Options, register
from runtime.train.data.splits import position_cut

_SEQ_DEFAULTS = {"n": 1000, "seed": 0, "test_fraction": 0.1}


def _steps(opts: Options, least: int, why: str) -> int:
    T = opts.as_int("T", 1, 10**6)
    assert T is not None
    if T < least:
        raise DataError(f"option 'T' of data set '{opts.dataset}' must be at least {least} "
                        f"({why}), not {T}")
    return T


def _by_position(arrays: dict[str, np.ndarray], opts: Options, info: dict[str, Any]
                 ) -> Dataset:
    """The last `test_fraction` of the samples as the test split."""
    n = len(next(iter(arrays.values())))
    cut = position_cut(n, opts.test_fraction())
    train = {k: np.ascontiguousarray(v[:cut]) for k, v in arrays.items()}
    test = {k: np.ascontiguousarray(v[cut:]) for k, v in arrays.items()} if cut < n else None
    return Dataset(train, test, {**info, "split_by": "position"})


def _rng(opts: Options) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(opts.seed()))


@register("adding", **_SEQ_DEFAULTS, T=50)
def _load_adding(opts: Options, dtype: np.dtype) -> Dataset:
    """Hochreiter and Schmidhuber's adding problem: x [n, T, 2] holds at each step a value
    U(0, 1) and a marker 0/1; exactly two steps are marked, one in each half of the
    sequence, and y [n] (float) is the sum of their two values. Always predicting 1 gives a
    mean squared error of 1/6."""
    n, T = opts.n(), _steps(opts, 2, "one marked step in each half")
    rng = _rng(opts)
    values = rng.random((n, T))
    first = rng.integers(0, T // 2, n)
    second = rng.integers(T // 2, T, n)
    rows = np.arange(n)
    markers = np.zeros((n, T))
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(dtype)
    y = (values[rows, first] + values[rows, second]).astype(dtype)
    return _by_position({"x": x, "y": y}, opts, {"task": "regression", "T": T,
                                                  "n_features": 2})


@register("copy", **_SEQ_DEFAULTS, T=30, length=10, symbols=8)
def _load_copy(opts: Options, dtype: np.dtype) -> Dataset:
    """The copy memory task (Arjovsky et al. 2016): x int64 [n, T] starts with `length`
    random symbols 1..symbols, then blanks (0) and, `length` steps before the end, a
    delimiter (symbols + 1) followed by blanks; y int64 [n, T] is blank except at the last
    `length` steps, which must repeat the symbols. Tokens 0..symbols + 1, so
    `data.vocab_size` = symbols + 2. T must be at least 2 length + 1."""
    n = opts.n()
    length = opts.as_int("length", 1, 10**5)
    symbols = opts.as_int("symbols", 1, 10**5)
    assert length is not None and symbols is not None
    T = _steps(opts, 2 * length + 1, f"the {length} symbols, the delimiter and their copy")
    seq = _rng(opts).integers(1, symbols + 1, (n, length))
    x = np.zeros((n, T), dtype=np.int64)
    y = np.zeros((n, T), dtype=np.int64)
    x[:, :length] = seq
    x[:, T - length - 1] = symbols + 1
    y[:, T - length:] = seq
    info = {"task": "classification", "T": T, "length": length, "symbols": symbols,
            "vocab_size": symbols + 2, "n_classes": symbols + 2}
    return _by_position({"x": x, "y": y}, opts, info)


@register("parity", **_SEQ_DEFAULTS, T=16)
def _load_parity(opts: Options, dtype: np.dtype) -> Dataset:
    """The parity of bit sequences: x [n, T, 1] of fair coin flips 0.0/1.0, y int64 [n] is 1
    when the number of ones is odd. Every bit matters; chance accuracy is 0.5."""
    n, T = opts.n(), _steps(opts, 1, "one bit")
    bits = _rng(opts).integers(0, 2, (n, T))
    y = (bits.sum(axis=1) % 2).astype(np.int64)
    x = bits[:, :, None].astype(dtype)
    return _by_position({"x": x, "y": y}, opts, {"task": "classification", "T": T,
                                                  "n_classes": 2, "n_features": 1})


@register("sine", n=256, T=32, period=25.0, noise=0.0, seed=0, test_fraction=0.1)
def _load_sine(opts: Options, dtype: np.dtype) -> Dataset:
    """Next-value prediction on one long sine wave s_t = sin(2π t / period + φ) + noise·ε_t
    (phase φ and ε ~ N(0, 1) from the seed): x [n, T, 1] are n consecutive windows of T
    steps and y [n, T, 1] the values one step later. The windows follow each other, so with
    `sampling = "sequential"` each batch row continues the window of the previous step
    (truncated backpropagation through time). The test split is the last windows."""
    n, T = opts.n(), _steps(opts, 1, "one step")
    period = opts.as_float("period", 1e-6)
    noise = opts.as_float("noise", 0.0)
    assert period is not None and noise is not None
    rng = _rng(opts)
    phase = rng.uniform(0.0, 2 * math.pi)
    t = np.arange(n * T + 1)
    s = np.sin(2 * math.pi * t / period + phase) + noise * rng.standard_normal(n * T + 1)
    x = s[:-1].reshape(n, T, 1).astype(dtype)
    y = s[1:].reshape(n, T, 1).astype(dtype)
    info = {"task": "regression", "T": T, "stride": T, "period": period, "noise": noise,
            "n_features": 1}
    return _by_position({"x": x, "y": y}, opts, info)
