"""Train/test and train/valid splits.

Two kinds: a seeded shuffle split (`split_indices`, stratified by class when given labels;
both parts keep the source order), and a split by position (`position_cut`: the last part is
held out), for data whose order matters — a text, windows cut from one series. A data set
split by position says so in its facts (`info["split_by"] == "position"`), and then
`split_validation` holds out the last training rows too.

This module must not import `dsl`.
"""

from __future__ import annotations

import math

import numpy as np

from runtime.train.data.dataset import DataError, Dataset, n_samples
from runtime.train.data.registry import Options

__all__ = ["position_cut", "split_by_options", "split_indices", "split_validation"]


def split_indices(
    n: int, test_fraction: float, seed: int, strata: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices: a seeded random subset of round(test_fraction * n) (at
    least 1) samples for test, allocated over the classes of `strata` by largest remainder."""
    n_test = max(1, int(math.floor(test_fraction * n + 0.5)))
    if n_test >= n:
        raise DataError(
            f"test_fraction = {test_fraction:g} of {n} samples leaves no training samples"
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    if strata is None:
        test = rng.permutation(n)[:n_test]
    else:
        classes, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
        quota = test_fraction * counts
        take = np.minimum(np.floor(quota).astype(np.int64), counts)
        # Give the remaining test slots to the classes with the largest fractional quotas.
        priority = np.argsort(-(quota - take), kind="stable")
        remaining = n_test - int(take.sum())
        while remaining > 0:
            for c in priority:
                if remaining > 0 and take[c] < counts[c]:
                    take[c] += 1
                    remaining -= 1
        parts = []
        for c in range(len(classes)):
            members = np.flatnonzero(inverse == c)
            parts.append(rng.permutation(members)[: take[c]])
        test = np.concatenate(parts)
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def position_cut(n: int, fraction: float, what: str = "samples") -> int:
    """Where a split by position cuts `n` items: the last round(fraction * n) (at least one
    when fraction > 0) are held out; the first `position_cut(...)` stay."""
    if fraction == 0.0:
        return n
    held = max(1, int(math.floor(fraction * n + 0.5)))
    if held >= n:
        raise DataError(f"test_fraction = {fraction:g} of {n} {what} leaves none for training")
    return n - held


def split_by_options(
    arrays: dict[str, np.ndarray], opts: Options, strata: np.ndarray | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """(train, test) by the options `test_fraction` and `seed`: a seeded shuffle split,
    stratified by `strata`; no test part when test_fraction is 0."""
    frac = opts.test_fraction()
    if frac == 0.0:
        return arrays, None
    tr, te = split_indices(n_samples(arrays), frac, opts.seed(), strata)
    return {k: v[tr] for k, v in arrays.items()}, {k: v[te] for k, v in arrays.items()}


def split_validation(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """A copy of `ds` whose `valid` part is `fraction` of its training rows (at least one),
    removed from `train`: a seeded shuffle split (the same `seed` holds out the same rows),
    stratified by class when `y` holds integer labels; both parts keep the source order. A set
    split by position (`info["split_by"] == "position"`) gives its last training rows."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the validation fraction must be between 0 and 1, not {fraction!r}")
    n = n_samples(ds.train)
    too_few = DataError(f"validation = {fraction:g} of {n} training samples leaves no "
                        "training samples")
    if ds.info.get("split_by") == "position":
        try:
            cut = position_cut(n, fraction)
        except DataError:
            raise too_few from None
        keep, held = np.arange(cut), np.arange(cut, n)
    else:
        y = ds.train.get("y")
        strata = y if y is not None and y.ndim == 1 and y.dtype.kind in "iu" else None
        sub = int(np.random.SeedSequence([seed, 0x7A11D]).generate_state(1, np.uint32)[0])
        try:
            keep, held = split_indices(n, fraction, sub, strata)
        except DataError:
            raise too_few from None
    return Dataset({k: v[keep] for k, v in ds.train.items()}, ds.test,
                   {**ds.info, "n_train": len(keep), "n_valid": len(held)},
                   {k: v[held] for k, v in ds.train.items()}, ds.vocab)
