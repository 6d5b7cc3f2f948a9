"""The catalogue's sequences-and-attention specs: each test checks its "shows" column through
the Python API."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import spec

import dsl
from runtime.backends import get_backend
from runtime.plan import Plan


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


def step_values(name: str, runtime: bool, batch: int = 6, **overrides: str
                ) -> dict[str, np.ndarray]:
    """The loss and every parameter's gradient of one float64 step of spec `name`, with the
    time loop run at run time or unrolled by `for` (`RUNTIME`)."""
    m = dsl.load(spec(name), dtype="float64",
                 overrides={"RUNTIME": "true" if runtime else "false", **overrides})
    g = m.compiled.stages["grad"][0][1]
    feeds = {k: v[:batch].astype(np.float64) if v.dtype.kind == "f" else v[:batch]
             for k, v in m.dataset.train.items() if k in m.program.inputs}
    names = ["loss", *sorted(n for n in g.outputs if n.endswith(".grad"))]
    values = {k: v.value.astype(np.float64) for k, v in m.program.variables.items()}
    plan = Plan(g, {"B": batch}, get_backend("numpy"), values, names, apply_updates=False)
    out = plan.run({**feeds, "step": 1.0, "epoch": 0.0})
    return dict(zip(names, (np.asarray(v) for v in out)))


@pytest.mark.parametrize("name", ["gru_notes", "lstm_notes"])
def test_the_notes_cells_give_the_same_gradients_looped_and_unrolled(name: str) -> None:
    looped, unrolled = step_values(name, True, T="12"), step_values(name, False, T="12")
    assert looped.keys() == unrolled.keys() and len(looped) > 4
    for k in looped:
        np.testing.assert_allclose(looped[k], unrolled[k], rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("name", ["gru_notes", "lstm_notes"])
def test_the_notes_cells_remember_the_sum_through_the_silence(name: str) -> None:
    m = dsl.load(spec(name))
    m.fit()
    assert m.evaluate("test")["acc"] >= 0.9
