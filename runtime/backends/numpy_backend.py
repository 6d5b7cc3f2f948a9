"""The NumPy backend: kernels run with `xp = numpy` on the CPU."""

from __future__ import annotations

import numpy as np

from runtime.backends import Backend


def make() -> Backend:
    return Backend(
        name="numpy",
        xp=np,
        asarray=lambda a, dtype=None: np.asarray(a, dtype=dtype),
        to_numpy=np.asarray,
        make_rng=lambda seed: np.random.Generator(np.random.PCG64(seed)),
    )
