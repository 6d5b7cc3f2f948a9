"""The NumPy backend: kernels run with `xp = numpy` on the CPU; its kernel table is
`runtime.plan.out_kernels.NUMPY_KERNELS` (the out= forms of the buffer-reusing step)."""

from __future__ import annotations

import numpy as np

from runtime.backends import Backend


def make() -> Backend:
    from runtime.plan.out_kernels import NUMPY_KERNELS

    return Backend(
        name="numpy",
        xp=np,
        asarray=lambda a, dtype=None: np.asarray(a, dtype=dtype),
        to_numpy=np.asarray,
        make_rng=lambda seed: np.random.Generator(np.random.PCG64(seed)),
        kernels=NUMPY_KERNELS,
    )
