"""Array backends: NumPy, and CuPy on a GPU, behind one small `Backend` record.

A backend supplies the array module `xp` that every kernel is written against, conversion to
and from host arrays, and a seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.errors import UserError


class BackendError(UserError):
    """The requested backend cannot run here (one clear sentence for the user)."""


@dataclass
class Backend:
    name: str
    xp: Any
    asarray: Callable[..., Any]
    to_numpy: Callable[[Any], Any]
    make_rng: Callable[[int], Any]


def get_backend(name: str) -> Backend:
    """'numpy' or 'cupy'; raises BackendError with the reason when CuPy or a GPU is missing."""
    if name == "numpy":
        from runtime.backends.numpy_backend import make

        return make()
    if name == "cupy":
        from runtime.backends.cupy_backend import make

        return make()
    raise BackendError(f"unknown backend {name!r}; choose 'numpy' or 'cupy'")
