"""The catalogue's sequences-and-attention specs: each test checks its "shows" column through
the Python API."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import spec, step_values

import dsl

# small matrices (a step of a loop, a batch of heads): one BLAS thread is faster and steadier
pytestmark = pytest.mark.usefixtures("one_blas_thread")


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


def test_gpt_char_perplexity_falls_and_it_samples_text() -> None:
    m = dsl.load(spec("gpt_char"))
    vocab = m.dataset.vocab
    before = m.evaluate("test")["perplexity"]
    assert before > 0.5 * len(vocab.tokens)  # untrained: about uniform over the vocabulary
    m.fit(steps=60, final_eval=False)
    after = m.evaluate("test")["perplexity"]
    assert after < 0.25 * before
    out = m.run("sample", n=40, seed=3)
    text = out["text"]
    assert text.shape == (40,) and text.dtype == np.int64
    assert 0 <= text.min() and text.max() < len(vocab.tokens)
    np.testing.assert_array_equal(out["prompt"], m.dataset.test["x"][0])
    assert isinstance(vocab.decode(text), str)
    np.testing.assert_array_equal(m.run("sample", n=40, seed=3)["text"], text)  # seeded
    greedy = [m.run("sample", n=10, top_k=1, seed=s)["text"] for s in (0, 1)]
    np.testing.assert_array_equal(greedy[0], greedy[1])  # top_k = 1: argmax, no randomness


# ---------------------------------------------------------------- rnn, lstm, gru, birnn,
# attention_rnn, transformer_classifier


LOOPED_SPECS = [  # (spec, overrides, batch): each RNN spec with `RUNTIME` true and false
    ("rnn", {"T": "12"}, 16),  # a training batch has the state's 16 rows
    ("lstm", {"T": "12"}, 6),
    ("gru", {"T": "12"}, 6),
    ("birnn", {}, 6),  # T is the data's (the series' matrix and the blank's one-hot)
    ("attention_rnn", {}, 6),
]


@pytest.mark.parametrize("name, overrides, batch", LOOPED_SPECS)
def test_the_rnn_specs_give_the_same_gradients_looped_and_unrolled(
        name: str, overrides: dict[str, str], batch: int) -> None:
    looped = step_values(name, True, batch, **overrides)
    unrolled = step_values(name, False, batch, **overrides)
    assert looped.keys() == unrolled.keys() and len(looped) >= 4  # the same parameter names
    for k in looped:
        np.testing.assert_allclose(looped[k], unrolled[k], rtol=1e-11, atol=1e-13, err_msg=k)


def test_rnn_forecasts_the_sine_better_than_the_last_value() -> None:
    m = dsl.load(spec("rnn"))
    result = m.fit(final_eval=False)
    assert result.loss_final < 0.05 * result.loss_first  # training mode, the carried state
    assert result.loss_final < 0.02  # the noise alone gives 0.01
    test = m.evaluate("test")
    assert test["warm"] < 0.3 * test["last_value"]  # ≈ 0.013 against ≈ 0.07
    assert test["loss"] < test["last_value"] < 0.2 * test["zero"]
    carry = m.trainer.get_variables()["carry"]  # the last batch's final states
    assert carry.shape == (16, 32) and np.abs(carry).max() > 0.1
    x, y = m.dataset.test["x"][:5], m.dataset.test["y"][:5]  # evaluation: any batch size
    assert m(x=x, y=y)["prediction"].shape == (5, 25, 1)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_the_standard_cells_solve_the_adding_problem(name: str) -> None:
    m = dsl.load(spec(name))
    m.fit(final_eval=False)
    test = m.evaluate("test")
    assert 0.15 < test["baseline"] < 0.19  # always predicting 1: 1/6
    assert test["loss"] < 0.1 * test["baseline"]


def test_birnn_fills_the_blank_as_a_smoother_and_one_direction_as_a_filter() -> None:
    both = dsl.load(spec("birnn"))
    both.fit(final_eval=False)
    forward = dsl.load(spec("birnn"), overrides={"BIDIRECTIONAL": "false"})
    forward.fit(final_eval=False)
    b, f = both.evaluate("test"), forward.evaluate("test")
    assert b["smoother"] < b["loss"] < 1.1 * b["smoother"]  # ≈ 0.114 against the best 0.110
    assert f["loss"] > 0.97 * f["filter"]  # no causal model beats the filter, 1 − φ² ≈ 0.19
    assert b["loss"] < 0.65 * f["loss"]


def test_attention_rnn_retrieves_the_marked_value_and_the_plain_rnn_does_not() -> None:
    m = dsl.load(spec("attention_rnn"))
    m.fit(final_eval=False)
    test = m.evaluate("test")
    assert test["loss"] < 0.02 * test["baseline"]  # ≈ 0.002 against 1
    plain = dsl.load(spec("attention_rnn"), overrides={"ATTENTION": "false"})
    plain.fit(final_eval=False)
    assert plain.evaluate("test")["loss"] > 0.5 * test["baseline"]


def test_transformer_classifier_needs_its_positions() -> None:
    m = dsl.load(spec("transformer_classifier"))
    m.fit(final_eval=False)
    assert m.evaluate("test")["acc"] >= 0.97
    orderless = dsl.load(spec("transformer_classifier"), overrides={"POSITIONS": "false"})
    orderless.fit(final_eval=False)
    assert orderless.evaluate("test")["acc"] < 0.6  # permutation invariant: chance


def _unigram_entropy(ids: np.ndarray) -> float:
    p = np.bincount(ids) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_word2vec_cbow_predicts_words_from_their_context() -> None:
    m = dsl.load(spec("word2vec_cbow"))
    m.fit(steps=400, final_eval=False)
    baseline = _unigram_entropy(m.dataset.train["x"][:, 2])
    assert m.evaluate("test")["loss"] < baseline - 1.0  # nats below frequency alone


def test_bert_mlm_recovers_hidden_characters() -> None:
    m = dsl.load(spec("bert_mlm"))
    V = len(m.dataset.vocab.tokens)
    assert m.evaluate("test")["loss"] > 0.8 * np.log(V)  # untrained
    m.fit(steps=80, final_eval=False)
    test = m.evaluate("test")
    space = float(np.mean(m.dataset.test["x"] == m.dataset.vocab.encode(" ")[0]))
    assert test["acc"] > space + 0.05  # better than always guessing the commonest character
