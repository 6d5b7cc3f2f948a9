"""Tests for the text data set (runtime/train/data/text.py, vocab.py): the CPython
documentation and user files, vocabularies, windows, the split by position, `data.NAME`
facts in specs, sequential streams over the windows, and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dsl
from dsl.compiler import compile_spec
from dsl.errors import DataErr, NameErr
from runtime.train.data import (
    Batcher,
    DataError,
    Vocabulary,
    check_sampling,
    load_dataset,
    split_validation,
)
from runtime.train.data.text import python_docs
from runtime.train.data.vocab import UNK, tokenize
from runtime.train.loop import Trainer, TrainError

CORPUS = ("The cat sat on the mat.\nThe dog sat on the log, and the cat saw the dog.\n"
          "A bird sang; the cat and the dog did not.\n") * 4


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


def _held(n: int, fraction: float) -> int:
    return max(1, math.floor(fraction * n + 0.5))


# --------------------------------------------------------------------------- python_docs


def test_python_docs_is_the_pydoc_topics_in_sorted_key_order():
    from pydoc_data.topics import topics

    text = python_docs()
    assert len(text) > 400_000
    first, last = sorted(topics)[0], sorted(topics)[-1]
    assert text.startswith(topics[first].strip("\n"))
    assert text.endswith(topics[last].strip("\n"))


def test_python_docs_char_windows_shapes_and_split_by_position():
    ds = load_dataset("text", {"T": 32})
    text = python_docs()
    n_test = _held(len(text), 0.1)
    cut = len(text) - n_test
    assert ds.field_info() == {"x": ("i64", ((cut - 1 - 32) // 32 + 1, 32)),
                               "y": ("i64", ((cut - 1 - 32) // 32 + 1, 32))}
    assert ds.field_info("test")["x"][1] == ((n_test - 1 - 32) // 32 + 1, 32)
    assert ds.info["vocab_size"] == len(ds.vocab) == len(set(text))
    assert list(ds.vocab.tokens) == sorted(set(text))  # code-point order
    # windows in order, y = x shifted by one, the test part starts at the cut
    assert ds.vocab.decode(ds.train["x"][0]) == text[:32]
    assert ds.vocab.decode(ds.train["y"][0]) == text[1:33]
    assert ds.vocab.decode(ds.train["x"][5]) == text[160:192]
    assert ds.vocab.decode(ds.test["x"][0]) == text[cut:cut + 32]
    assert ds.info["split_by"] == "position" and ds.info["stride"] == 32


def test_deterministic():
    a = load_dataset("text", {"level": "word", "T": 16, "max_vocab": 500})
    b = load_dataset("text", {"level": "word", "T": 16, "max_vocab": 500})
    assert a.vocab.tokens == b.vocab.tokens
    for split in ("train", "test"):
        for k in ("x", "y"):
            np.testing.assert_array_equal(a.split(split)[k], b.split(split)[k])


def test_word_level_vocabulary_and_unk():
    ds = load_dataset("text", {"level": "word", "T": 16, "max_vocab": 500})
    assert ds.info["vocab_size"] == 500 and ds.vocab.tokens[0] == UNK and ds.vocab.unk == 0
    counts: dict[str, int] = {}
    for t in tokenize(python_docs(), "word"):
        counts[t] = counts.get(t, 0) + 1
    kept = ds.vocab.tokens[1:]
    assert [counts[t] for t in kept] == sorted((counts[t] for t in kept), reverse=True)
    assert min(counts[t] for t in kept) >= max(c for t, c in counts.items() if t not in kept)
    assert (ds.train["x"] == 0).any()  # rare words became <unk>


# --------------------------------------------------------------------------- vocabularies


@pytest.mark.parametrize("level", ["char", "word"])
def test_vocabulary_round_trip(level):
    vocab, ids = Vocabulary.build(CORPUS, level)
    text = vocab.decode(ids)
    np.testing.assert_array_equal(vocab.encode(text), ids)
    if level == "char":
        assert text == CORPUS
    else:
        assert text.startswith("The cat sat on the mat .\nThe dog sat")


def test_vocabulary_with_unk_round_trips_ids():
    vocab, ids = Vocabulary.build(CORPUS, "word", max_vocab=6)
    assert len(vocab) == 6 and vocab.tokens[0] == UNK
    # most frequent first, ties in code-point order
    assert vocab.tokens[1:] == ("the", "\n", ".", "cat", "dog")
    np.testing.assert_array_equal(vocab.encode(vocab.decode(ids)), ids)
    assert vocab.encode("the zebra")[1] == vocab.unk


def test_vocabulary_encode_unknown_token_without_unk():
    vocab, _ = Vocabulary.build("abcabc", "char")
    assert vocab.tokens == ("a", "b", "c")
    np.testing.assert_array_equal(vocab.encode("cab"), [2, 0, 1])
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        vocab.encode("abz")


# --------------------------------------------------------------------------- user files


def test_user_file_positional_and_path_option(corpus, tmp_path):
    by_name = load_dataset(str(corpus), {"T": 8, "test_fraction": 0.25})
    by_option = load_dataset("text", {"path": str(corpus), "T": 8, "test_fraction": 0.25})
    relative = load_dataset("text", {"path": "corpus.txt", "_base_dir": str(tmp_path),
                                     "T": 8, "test_fraction": 0.25})
    for ds in (by_option, relative):
        np.testing.assert_array_equal(ds.train["x"], by_name.train["x"])
    assert by_name.info["path"] == str(corpus)
    cut = len(CORPUS) - _held(len(CORPUS), 0.25)
    assert by_name.vocab.decode(by_name.test["x"][0]) == CORPUS[cut:cut + 8]
    last = (len(by_name.train["x"]) - 1) * 8  # where the last training window starts
    assert by_name.vocab.decode(by_name.train["y"][-1]) == CORPUS[last + 1:last + 9]
    assert cut - 8 < last + 9 <= cut  # as many windows as fit, none crossing the cut


def test_stride_makes_overlapping_windows(corpus):
    ds = load_dataset("text", {"path": str(corpus), "T": 8, "stride": 2, "test_fraction": 0})
    n = len(CORPUS)
    assert ds.test is None and ds.train["x"].shape == ((n - 9) // 2 + 1, 8)
    np.testing.assert_array_equal(ds.train["x"][1, :6], ds.train["x"][0, 2:])


@pytest.mark.parametrize("content, says", [
    (b"", "holds no text"),
    (b"caf\xe9 au lait\n", "is not UTF-8 text: line 1 holds the byte 0xe9"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "is not a text file: byte 8 is a NUL byte"),
])
def test_bad_files_are_one_clear_error(tmp_path, content, says):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=says):
        load_dataset("text", {"path": str(path)})


def test_bad_paths_and_options(tmp_path, corpus):
    with pytest.raises(DataError, match=r"data file .*missing\.txt does not exist"):
        load_dataset("text", {"path": str(tmp_path / "missing.txt")})
    with pytest.raises(DataError, match="is not a regular file"):
        load_dataset("text", {"path": str(tmp_path)})
    with pytest.raises(DataError, match="'source' or a file 'path', not both"):
        load_dataset("text", {"path": str(corpus), "source": "python_docs"})
    with pytest.raises(DataError, match='option \'source\' .* must be one of "python_docs"'):
        load_dataset("text", {"source": "wikipedia"})
    with pytest.raises(DataError, match='option \'level\' .* one of "char", "word"'):
        load_dataset("text", {"level": "byte"})
    with pytest.raises(DataError, match="unknown option 'strides' .*did you mean 'stride'"):
        load_dataset("text", {"strides": 8})
    with pytest.raises(DataError, match=r"fewer than the T \+ 1 = 1001"):
        load_dataset("text", {"path": str(corpus), "T": 1000})


# --------------------------------------------------------------------------- sequential streams


def test_sequential_windows_continue_across_steps():
    ds = load_dataset("text", {"T": 16})
    b = Batcher(ds.train, batch=8, seed=0, sampling="sequential", drop_last=True,
                reuse_buffers=False)
    batches = list(b.epoch())
    assert len(batches) == len(ds.train["x"]) // 8
    text = python_docs()
    for k, (prev, nxt) in enumerate(zip(batches, batches[1:])):
        # row i of step k + 1 starts where row i of step k ended
        np.testing.assert_array_equal(nxt["x"][:, 0], prev["y"][:, -1])
        if k < 3:
            for i in range(8):
                joined = ds.vocab.decode(np.concatenate([prev["x"][i], nxt["x"][i]]))
                assert joined in text
    # the 8 streams are contiguous eighths of the training windows
    stream = np.concatenate([bb["x"][3] for bb in batches])
    length = len(batches)
    np.testing.assert_array_equal(stream, ds.train["x"][3 * length:4 * length].reshape(-1))


def test_validation_split_by_position_keeps_the_stream():
    ds = load_dataset("text", {"T": 16})
    v = split_validation(ds, 0.2, seed=3)
    n = len(ds.train["x"])
    held = _held(n, 0.2)
    np.testing.assert_array_equal(v.train["x"], ds.train["x"][: n - held])
    np.testing.assert_array_equal(v.valid["x"], ds.train["x"][n - held:])
    assert v.vocab is ds.vocab


def test_sequential_sampling_over_overlapping_windows_is_an_error(corpus):
    ds = load_dataset("text", {"path": str(corpus), "T": 8, "stride": 4})
    with pytest.raises(DataError, match=r"windows of data set '.*' overlap \(stride = 4, "
                       r"T = 8\); give the data set stride = 8"):
        check_sampling(ds.info, "sequential")
    check_sampling(ds.info, "shuffle")
    check_sampling(load_dataset("text", {"path": str(corpus), "T": 8}).info, "sequential")


# --------------------------------------------------------------------------- in specs

LM = """model lm
data text(T = 16)
input x: i64[B, 16]
input y: i64[B, 16]
param E: [data.vocab_size, 8] = normal(std = 0.1)
logits = dense(take(E, x), data.vocab_size)
objective loss = cross_entropy(logits, y)
optimizer adam(lr = 1e-2) minimize loss
train { batch = 16, steps = 30, sampling = "sequential", seed = 0 }
"""


def test_vocab_size_is_a_compile_time_constant_and_loss_falls():
    model = dsl.compile(LM)
    v = model.dataset.info["vocab_size"]
    assert model.params["E"].shape == (v, 8)
    assert model.dataset.vocab.decode(model.dataset.train["x"][0]) == python_docs()[:16]
    result = model.fit()
    assert result.loss_final < result.loss_first < math.log(v) + 0.5


def test_sequential_sampling_in_a_spec_and_through_the_trainer(corpus):
    bad = LM.replace("data text(T = 16)", "data text(T = 16, stride = 8)")
    with pytest.raises(DataErr) as e:
        compile_spec(bad, "lm.dl")
    assert e.value.span.line == 9 and "overlap (stride = 8, T = 16)" in e.value.message
    shuffled = compile_spec(bad.replace('sampling = "sequential", ', ""), "lm.dl")
    with pytest.raises(TrainError, match="overlap"):
        Trainer(shuffled.program, dataset=shuffled.dataset, sampling="sequential")


def test_check_compares_token_windows_with_i64_inputs():
    with pytest.raises(DataErr, match=r"input 'x' is i64\[B,16\], but axis 1 of its field "
                       r"has size 8, not 16 in the train split of text"):
        compile_spec(LM.replace("data text(T = 16)", "data text(T = 8)"), "lm.dl")
    small = LM.replace("param E: [data.vocab_size, 8]", "param E: [50, 8]")
    with pytest.raises(DataErr, match="'x' of text go from 0 to"):
        compile_spec(small, "lm.dl")


def test_unknown_fact_and_fact_without_data():
    with pytest.raises(NameErr, match="states no fact 'vocab_sise' .*did you mean "
                       "'vocab_size'"):
        compile_spec(LM.replace("[data.vocab_size, 8]", "[data.vocab_sise, 8]"), "lm.dl")
    with pytest.raises(NameErr, match="'data.x' is not a fact of the data set; its field "
                       "'x' is train.x"):
        compile_spec(LM.replace("[data.vocab_size, 8]", "[data.x, 8]"), "lm.dl")
    no_data = "model m\nconst V = data.vocab_size\ninput x: f32[B]\noutput y = x * V\n"
    with pytest.raises(NameErr, match="'data.vocab_size' needs a 'data' line before it"):
        compile_spec(no_data, "m.dl")
