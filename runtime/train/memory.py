"""Will a run fit: the bytes its variables need, checked against the machine's available memory
before anything is allocated, so that a spec with `--set H=100000000` is one sentence and not
NumPy's allocation error (or the kernel's OOM killer) after minutes of drawing weights.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np

from runtime.errors import UserError
from runtime.ir import TensorType

__all__ = ["ResourceError", "available_bytes", "check_fits", "variable_bytes"]


class ResourceError(UserError):
    """The run needs more memory than the machine has available."""


def available_bytes() -> int | None:
    """Memory the process can still get (MemAvailable on Linux), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def variable_bytes(types: Iterable[TensorType], float_dtype: np.dtype) -> int:
    """Bytes of host arrays for variables of these types (floats in `float_dtype`)."""
    total = 0
    for t in types:
        item = float_dtype.itemsize if t.is_float else t.np_dtype().itemsize
        total += math.prod(int(d) for d in t.shape) * item
    return total


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_fits(needed: int, what: str, available: int | None = None) -> None:
    """ResourceError when `needed` bytes (of `what`) exceed the available memory."""
    have = available_bytes() if available is None else available
    if have is not None and needed > have:
        raise ResourceError(f"{what} need {_gib(needed)}, more than the {_gib(have)} of memory "
                            "available on this machine; make the model smaller")
