"""Keep freed memory in the process (glibc malloc), for plans that reuse buffers.

A training step frees and allocates the same large arrays every step (a run-time loop's
stacked values: megabytes). By default glibc serves large requests with fresh `mmap`s and
returns free memory at the top of its heap to the system (both thresholds start at 128 KiB),
so every step faults the same pages in again (about 3 ms of a 20 ms LSTM step). Raising the
trim and mmap thresholds keeps freed memory for the next step, as PyTorch's and JAX's CPU
allocators do; the process keeps its peak footprint. Done once, on the first buffer-reusing
NumPy step (`runtime.plan.buffers`); a no-op where malloc is not glibc's.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TRIM_BYTES = 1 << 30  # keep up to 1 GiB of free heap
MMAP_BYTES = 1 << 26  # 64 MiB: requests below it come from the heap

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc malloc's trim and mmap thresholds (once per process); whether it did."""
    global _done
    if _done:
        return True
    _done = True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        gnu = libc.gnu_get_libc_version  # glibc only (musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    del gnu
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)) and bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_BYTES))
