"""The CuPy backend: the same kernels with `xp = cupy` on a CUDA device.

`make()` fails with one sentence when CuPy is not installed or no GPU is usable; nothing here
runs on a machine without a device, so `tests/test_backends.py` checks instead that every
array function the kernels use exists in `cupy`.
"""

from __future__ import annotations

from runtime.backends import Backend, BackendError, KernelTable

# CuPy's table: every op keeps its plain kernel (the buffer-reusing step is NumPy's; CuPy's
# memory pool already hands freed device blocks back without a system call)
KERNELS = KernelTable({}, {}, default="the buffer-reusing step runs on NumPy only; CuPy's "
                      "memory pool reuses freed device memory")


def make() -> Backend:
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA install raising at import
        raise BackendError("the cupy backend needs CuPy: pip install 'dslrun[cuda]' "
                           f"({type(e).__name__}: {e})") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        raise BackendError(f"the cupy backend needs a CUDA GPU, and none is usable here "
                           f"({type(e).__name__}: {e})") from None
    if count < 1:
        raise BackendError("the cupy backend needs a CUDA GPU, and none was found")
    return Backend(
        name="cupy",
        xp=cupy,
        asarray=lambda a, dtype=None: cupy.asarray(a, dtype=dtype),
        to_numpy=cupy.asnumpy,
        make_rng=lambda seed: cupy.random.default_rng(seed),
        kernels=KERNELS,
    )
