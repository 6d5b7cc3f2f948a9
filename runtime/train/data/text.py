"""Text for language models, offline on every machine: the documentation text that ships with
CPython (`pydoc_data.topics`) or a UTF-8 file of the user's, tokenized (`vocab.py`) and cut into
windows for next-token prediction.

The test split is taken by position: the last `test_fraction` of the tokens, windowed on its
own (no window crosses the cut). Windows: x = ids[s : s + T], y = ids[s + 1 : s + T + 1] for
s = 0, stride, 2 stride, ... while the window fits.

This module must not import `dsl`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from runtime.train.data.dataset import DataError, Dataset, ensure_room
from runtime.train.data.files import resolve_path
from runtime.train.data.registry import Options, register
from runtime.train.data.splits import position_cut
from runtime.train.data.vocab import LEVELS, Vocabulary

__all__ = ["python_docs", "read_text", "windows"]

SOURCES = ("python_docs",)


@functools.cache
def python_docs() -> str:
    """The documentation topics shipped with CPython (`pydoc_data.topics`, about 460,000
    characters), joined in sorted key order with a blank line between topics. The text is
    that of the running Python's version."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:
        raise DataError("this Python installation has no pydoc_data module (the "
                        "documentation text of source = \"python_docs\"); give a text file "
                        "instead: data text(\"corpus.txt\")") from e
    return "\n\n".join(topics[key].strip("\n") for key in sorted(topics))


def read_text(path: Path) -> str:
    """The UTF-8 text of the file `path` (a byte-order mark dropped, newlines as "\\n")."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"data file {path} cannot be read: {e.strerror or e}") from e
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"data file {path} is not a text file: byte {nul} is a NUL byte")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"data file {path} is not UTF-8 text: line {line} holds the byte "
                        f"0x{raw[e.start]:02x}, which UTF-8 does not allow there") from None
    if not text.strip():
        raise DataError(f"data file {path} holds no text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def windows(ids: np.ndarray, T: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) int64 [N, T]: the windows of `ids` starting every `stride` tokens, and the same
    windows one token later (the next-token targets)."""
    count = (len(ids) - 1 - T) // stride + 1
    idx = (np.arange(count) * stride)[:, None] + np.arange(T)[None, :]
    return ids[idx], ids[idx + 1]


@register("text", source="python_docs", path=None, level="char", T=64, stride=None,
          max_vocab=None, test_fraction=0.1)
def _load_text(opts: Options, dtype: np.dtype) -> Dataset:
    """Next-token prediction on a text: x and y int64 [N, T], y the tokens that follow x's
    (x shifted by one). The text: `source = "python_docs"`, the documentation shipped with
    CPython (pydoc_data.topics, ~460k characters, no download), or a UTF-8 file `path`
    (`data text("corpus.txt")`). `level = "char"` tokens are characters, `"word"` tokens are
    words, punctuation marks and newlines. The vocabulary is built once from the whole text:
    characters in code-point order, words most frequent first (ties alphabetical);
    `max_vocab` keeps the most frequent tokens and maps the rest to `<unk>` (id 0). Windows
    of `T` tokens start every `stride` tokens (default T: consecutive, as
    `sampling = "sequential"` needs). The test split is the last `test_fraction` of the text.
    `data.vocab_size` is the vocabulary size as a compile-time constant; the vocabulary is
    `model.dataset.vocab` (`decode(ids)`, `encode(text)`)."""
    level = opts.choice("level", LEVELS)
    T = opts.as_int("T", 1, 10**6)
    stride = opts.as_int("stride", 1, 10**6)
    stride = T if stride is None else stride
    max_vocab = opts.as_int("max_vocab", 2, 10**7)
    frac = opts.test_fraction()
    assert T is not None
    if opts.raw("path") is not None:
        if opts.has("source"):
            raise DataError("data set 'text' reads the option 'source' or a file 'path', "
                            "not both")
        path = resolve_path(opts)
        text, origin = read_text(path), {"path": str(path)}
    else:
        source = opts.choice("source", SOURCES)
        text, origin = python_docs(), {"source": source}
    where = origin.get("path") or f'source = "{origin["source"]}"'
    vocab, ids = Vocabulary.build(text, level, max_vocab)
    cut = position_cut(len(ids), frac, f"{level} tokens")
    parts = [("train", ids[:cut])] + ([("test", ids[cut:])] if cut < len(ids) else [])
    for split, part in parts:
        if len(part) < T + 1:
            raise DataError(
                f"the {split} part of the text ({where}) has {len(part)} {level} tokens, "
                f"fewer than the T + 1 = {T + 1} one window needs"
                + ("; lower T or test_fraction" if split == "test" else "; lower T"))
    count = sum((len(part) - 1 - T) // stride + 1 for _, part in parts)
    ensure_room(2 * count * T * 8, f"the {count:,} windows of T = {T} tokens (stride = "
                f"{stride}) of data set 'text'", "raise stride")
    arrays = {}
    for split, part in parts:
        x, y = windows(part, T, stride)
        arrays[split] = {"x": x, "y": y}
    info = {**origin, "task": "next_token", "level": level, "vocab_size": len(vocab),
            "T": T, "stride": stride, "n_tokens": len(ids), "split_by": "position"}
    return Dataset(arrays["train"], arrays.get("test"), info, vocab=vocab)
