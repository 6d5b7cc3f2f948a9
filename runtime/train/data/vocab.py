"""Token vocabularies of text data: `Vocabulary.build(text, level, max_vocab)` tokenizes a text
and numbers its tokens once, deterministically; `encode` and `decode` map text to int64 ids
and back.

Levels: "char" (every character is a token) and "word" (runs of letters, digits and `_`, each
other non-space character, and each newline are tokens; spaces and tabs separate tokens and
are dropped). The order of the tokens: characters by code point, words by frequency (most
frequent first, ties alphabetical). With `max_vocab`, the `max_vocab - 1` most frequent tokens
are kept and every other one becomes `<unk>`, id 0.

This module must not import `dsl`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LEVELS", "UNK", "Vocabulary", "tokenize"]

LEVELS = ("char", "word")
UNK = "<unk>"

_WORD = re.compile(r"<unk>|\w+|[^\w\s]|\n")


def tokenize(text: str, level: str) -> list[str]:
    """The tokens of `text` at `level` ("char" or "word")."""
    if level == "char":
        return list(text)
    if level == "word":
        return _WORD.findall(text)
    raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")


@dataclass(frozen=True)
class Vocabulary:
    """Tokens numbered 0 .. len - 1 (`tokens[i]` has id i); `unk` is the id of `<unk>`, the
    token of everything outside the vocabulary, or None when every token of the text is in."""

    tokens: tuple[str, ...]
    level: str
    unk: int | None = None
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {t: i for i, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, text: str, level: str, max_vocab: int | None = None
              ) -> tuple[Vocabulary, np.ndarray]:
        """The vocabulary of `text` and the text's ids (int64), built in one pass."""
        if level == "char" and max_vocab is None:
            # every character: the sorted code points and their ranks, without a Python loop
            codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            uniq, ids = np.unique(codes, return_inverse=True)
            return cls(tuple(chr(c) for c in uniq.tolist()), level), ids.astype(np.int64)
        tokens = tokenize(text, level)
        counts = Counter(tokens)
        ranked = sorted(counts, key=lambda t: (-counts[t], t))
        if max_vocab is not None and len(ranked) > max_vocab:
            kept = ranked[: max_vocab - 1]
            ordered = [UNK, *(sorted(kept) if level == "char" else kept)]
            vocab = cls(tuple(ordered), level, unk=0)
        else:
            vocab = cls(tuple(sorted(ranked) if level == "char" else ranked), level)
        return vocab, vocab.ids(tokens)

    def ids(self, tokens: Iterable[str]) -> np.ndarray:
        """int64 ids of tokens (`<unk>` for unknown ones; KeyError without `<unk>`)."""
        index = self._ids
        if self.unk is None:
            return np.fromiter((index[t] for t in tokens), dtype=np.int64)
        return np.fromiter((index.get(t, self.unk) for t in tokens), dtype=np.int64)

    def encode(self, text: str) -> np.ndarray:
        """The ids of `text`'s tokens (int64). A token outside the vocabulary is `<unk>`; a
        vocabulary without `<unk>` raises ValueError naming the token."""
        tokens = tokenize(text, self.level)
        if self.unk is None:
            missing = next((t for t in tokens if t not in self._ids), None)
            if missing is not None:
                raise ValueError(f"the token {missing!r} is not in the vocabulary")
        return self.ids(tokens)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text of `ids`: characters joined as they are; words joined by a space, with
        no space around a newline."""
        tokens = [self.tokens[int(i)] for i in np.asarray(ids).reshape(-1)]
        if self.level == "char":
            return "".join(tokens)
        out: list[str] = []
        for t in tokens:
            if out and t != "\n" and out[-1] != "\n":
                out.append(" ")
            out.append(t)
        return "".join(out)
