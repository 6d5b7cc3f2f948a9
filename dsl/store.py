"""The private per-user store behind dslrun's caches (Lark's parser tables in `dsl.parser`,
parsed ASTs in `dsl.cache`): where it is, whether it is safe to use, and atomic publishing of
its entries; and where the grammar file is, which both key their entries on.

The directory is `$DSLRUN_CACHE_DIR`, else `$XDG_CACHE_HOME/dslrun`, else `~/.cache/dslrun`,
created 0700 and used only while nobody else can write to it (its entries are pickles);
`DSLRUN_NO_CACHE=1` turns caching off. Entries are published with an atomic rename, and a
missing, unusable or corrupt entry only costs the work it would have saved.
"""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Callable
from pathlib import Path


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
