"""The catalogue's sequences-and-attention specs: each test checks its "shows" column through
the Python API."""

from __future__ import annotations

import numpy as np
from conftest import spec

import dsl


def _entropy(w: np.ndarray) -> float:
    return float(np.mean(-np.sum(w * np.log(w + 1e-30), axis=-1)))


def test_kernel_regression_fits_and_its_heat_map_spreads_with_sigma() -> None:
    m = dsl.load(spec("kernel_regression"))
    m.fit()
    test = m.evaluate("test")
    assert test["loss"] < 0.5 * test["baseline"]  # the fit beats the mean of the targets
    x = m.dataset.test["x"]
    out = m(x=x)
    sigma = float(out["bandwidth"])
    assert 0.1 < sigma < 1.0, sigma  # learned by leave-one-out, away from 0 and from ∞
    w = np.asarray(out["weights"])
    assert w.shape == (40, 40)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    spread = []
    for s in ("0.1", "0.5", "2.0"):  # Fig. 8.4: a larger bandwidth gives a more diffuse map
        fixed = dsl.load(spec("kernel_regression"), overrides={"SIGMA": s})
        spread.append(_entropy(np.asarray(fixed(x=x)["weights"])))
    assert spread[0] < spread[1] < spread[2], spread


def test_deep_sets_count_and_are_invariant_to_the_order_of_the_set() -> None:
    m = dsl.load(spec("deep_sets"))
    m.fit()
    acc = m.evaluate("test")["acc"]
    assert acc >= 0.9
    x = m.dataset.test["x"][:32]
    perm = np.random.default_rng(0).permutation(x.shape[1])
    np.testing.assert_allclose(m(x=x[:, perm])["scores"], m(x=x)["scores"], rtol=1e-4,
                               atol=1e-5)
    pooled_by_max = dsl.load(spec("deep_sets"), overrides={"POOL": '"max"'})
    pooled_by_max.fit()
    assert pooled_by_max.evaluate("test")["acc"] < acc - 0.05  # max cannot count


def test_clip_contrastive_matches_images_with_their_captions() -> None:
    m = dsl.load(spec("clip_contrastive"))
    result = m.fit()
    assert result.loss_final < 0.1 * result.loss_first
    assert m.evaluate("test")["retrieval"] >= 0.85  # chance: 1/64
