"""Reading `.npz` archives safely, for checkpoints and data files: never unpickles.

`read_npz` returns every array of the archive, or raises `NpzError` with a reason the caller
wraps in its own error. A file that is not a zip archive is recognized by its first bytes:
NumPy would take it for a pickle and suggest loading it unsafely. A zip archive whose members
are not `.npy` arrays is not an `.npz` file either.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


class NpzError(Exception):
    """Why an archive (or its array `key`) cannot be read."""

    def __init__(self, reason: str, key: str | None = None) -> None:
        super().__init__(f"array '{key}': {reason}" if key is not None else reason)


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise NpzError(str(e.strerror or e)) from e
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise NpzError("it is not a zip archive")
    try:
        loaded = np.load(path, allow_pickle=False)
    except zipfile.BadZipFile as e:
        raise NpzError(f"it is a damaged or truncated zip archive ({e})") from e
    except _READ_ERRORS as e:
        raise NpzError(str(e)) from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise NpzError("it is a single .npy array")
    arrays: dict[str, np.ndarray] = {}
    with loaded as npz:
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise NpzError("it holds Python objects, which are never loaded "
                                   "(allow_pickle=False)", key) from e
                raise NpzError(f"it cannot be read: {e}", key) from e
            except _READ_ERRORS as e:
                raise NpzError(f"it cannot be read: {e}", key) from e
            if not isinstance(arrays[key], np.ndarray):  # a member that is not a .npy file
                raise NpzError(f"the zip archive holds '{key}', which is not a NumPy array "
                               "(.npy): it is not an .npz file")
    return arrays
