"""Parsed ASTs of unchanged files, kept in the private per-user store (`dsl.store`).

`parse_cached` serves the prelude and spec files read from disk. It does not import Lark (or
`dsl.parser`) on a hit: importing Lark, loading its tables and lexing cost ~0.1 s of every
`dslrun check`. An entry is keyed by the text, its file name, the grammar, the sources of
`dsl.parser`, `dsl.syntax_errors` (the bracket tokens its postlexer tracks), `dsl.ast` and
`runtime.dtypes` (the dtype names the parser accepts), Lark's version and Python's; there is
one entry per file name.
Only this module imports `dsl.parser` (on a miss); the parser imports `dsl.store` alone.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pickle
import sys
from pathlib import Path

from dsl import ast as A
from dsl.errors import register_source
from dsl.store import cache_dir, grammar_path, is_own_file, publish

HERE = Path(__file__).resolve().parent


@functools.cache
def _parser_version() -> bytes:
    """What the AST of a text depends on besides the text: hashed file contents, read
    without importing Lark."""
    h = hashlib.sha256(sys.version.encode())
    lark = importlib.util.find_spec("lark")
    dtypes = importlib.util.find_spec("runtime.dtypes")
    files = [grammar_path(), HERE / "parser.py", HERE / "syntax_errors.py", HERE / "ast.py"]
    if dtypes is not None and dtypes.origin is not None:
        files.append(Path(dtypes.origin))
    if lark is not None and lark.origin is not None:
        files.append(Path(lark.origin))  # lark/__init__.py names its version
    for f in files:
        h.update(f.read_bytes())
    return h.digest()


def parse_cached(text: str, file: str) -> A.Program:
    """`dsl.parser.parse(text, file)`, kept in the cache for the next process. Syntax errors
    are raised as by `parse` (only successful parses are stored)."""
    register_source(file, text)
    directory = cache_dir()
    path = None
    stem = "ast-" + hashlib.sha256(file.encode()).hexdigest()[:8]
    if directory is not None:
        try:
            digest = hashlib.sha256(_parser_version() + file.encode() + b"\0" + text.encode())
            path = directory / f"{stem}-{digest.hexdigest()[:24]}.pickle"
        except OSError:  # the grammar or parser sources cannot be read: no caching
            pass
    if path is not None and is_own_file(path):
        try:
            prog = pickle.loads(path.read_bytes())
            if isinstance(prog, A.Program):
                return prog
        except Exception:  # noqa: BLE001 - a corrupt entry only costs the parse
            pass
    from dsl.parser import check_nesting, parse

    prog = check_nesting(parse(text, file))  # what nests deeper cannot be pickled
    if path is not None:
        _store(path, stem, prog)
    return prog


def _store(path: Path, stem: str, obj: object) -> None:
    def write(tmp: str) -> None:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)

    try:
        publish(path, f"{stem}-*.pickle", write)
    except OSError:
        pass
