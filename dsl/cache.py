"""The private per-user cache: Lark's parser tables and parsed ASTs of unchanged files.

The directory is `$DSLRUN_CACHE_DIR`, else `$XDG_CACHE_HOME/dslrun`, else `~/.cache/dslrun`,
created 0700 and used only while nobody else can write to it (its entries are pickles);
`DSLRUN_NO_CACHE=1` turns caching off. Entries are published with an atomic rename, and a
missing, unusable or corrupt entry only costs the work it would have saved.

`parse_cached` serves the prelude and spec files read from disk. It does not import Lark (or
`dsl.parser`) on a hit: importing Lark, loading its tables and lexing cost ~0.1 s of every
`dslrun check`. An entry is keyed by the text, its file name, the grammar, the sources of
`dsl.parser` and `dsl.ast`, Lark's version and Python's; there is one entry per file name.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pickle
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from dsl import ast as A
from dsl.errors import register_source

HERE = Path(__file__).resolve().parent


def cache_dir() -> Path | None:
    """The private cache directory, or None when caching is off or unsafe."""
    if os.environ.get("DSLRUN_NO_CACHE"):
        return None
    try:
        base = os.environ.get("DSLRUN_CACHE_DIR")
        if base:
            path = Path(base)
        else:
            xdg = os.environ.get("XDG_CACHE_HOME")
            path = Path(xdg) / "dslrun" if xdg else Path.home() / ".cache" / "dslrun"
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
        if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
            return None  # somebody else could write there: do not unpickle from it
    except (OSError, RuntimeError, KeyError):
        return None
    return path


def is_own_file(path: Path) -> bool:
    """A regular file (not a link) owned by this user."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (not hasattr(os, "getuid") or st.st_uid == os.getuid())


def grammar_path() -> Path:
    spec = importlib.util.find_spec("grammar")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the 'grammar' package is not installed")
    return Path(spec.origin).parent / "dsl.lark"


@functools.cache
def _parser_version() -> bytes:
    """What the AST of a text depends on besides the text: hashed file contents, read
    without importing Lark."""
    h = hashlib.sha256(sys.version.encode())
    lark = importlib.util.find_spec("lark")
    files = [grammar_path(), HERE / "parser.py", HERE / "ast.py"]
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
    from dsl.parser import parse

    prog = parse(text, file)
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


def publish(path: Path, stale: str, write: Callable[[str], None]) -> None:
    """Make cache entry `path` atomically: `write(tmp)` creates a file at the new private
    temporary path `tmp` in the same directory, which is then renamed to `path`; then the
    entries matching the glob `stale` (older versions of the same entry) are deleted."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".new-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # `write` creates it (Lark insists on writing its cache file itself)
    try:
        write(tmp)
        if os.path.exists(tmp):
            os.replace(tmp, path)
            for old in path.parent.glob(stale):
                if old != path:
                    old.unlink(missing_ok=True)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
