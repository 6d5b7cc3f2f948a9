"""Array backends: NumPy, and CuPy on a GPU, behind one small `Backend` record.

A backend supplies the array module `xp` that every kernel is written against, conversion to
and from host arrays, a seeded generator, and its kernel table (`KernelTable`): for each op
of the registry, the kernel the buffer-reusing step uses (an `out=` form writing into a buffer
the plan owns) or the reason the op runs its plain kernel there. NumPy's table is
`runtime.plan.out_kernels.NUMPY_KERNELS`; CuPy's runs every op plain (its memory pool already
reuses device memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import UserError


class BackendError(UserError):
    """The requested backend cannot run here (one clear sentence for the user)."""


@dataclass(frozen=True)
class KernelTable:
    """A backend's kernels for the buffer-reusing step, by op: `out[op]` is the op's `out=`
    form (see `runtime.plan.out_kernels.out_spec`), `plain[op]` the reason the op keeps its
    plain kernel; `default`, when given, is the reason for every op in neither (a backend
    that runs every op plain). `overlap_safe`: the ops whose form accepts the output buffer as
    an operand (elementwise ufuncs, which NumPy makes overlap-safe): only these write an
    update straight into its variable."""

    out: Mapping[str, Callable[..., Any]]
    plain: Mapping[str, str]
    default: str | None = None
    # the ops whose form may write over an operand (an update written into its variable)
    overlap_safe: frozenset[str] = frozenset()

    def uncovered(self, ops: Iterable[str]) -> list[str]:
        """The ops of `ops` this table has neither a form nor a reason for."""
        if self.default is not None:
            return []
        return [op for op in ops if op not in self.out and op not in self.plain]

    def reason(self, op: str) -> str | None:
        """Why `op` runs its plain kernel (None: it has an out= form)."""
        if op in self.out:
            return None
        return self.plain.get(op, self.default)


PLAIN_ONLY = KernelTable({}, {}, default="this backend runs the plain step")


@dataclass
class Backend:
    name: str
    xp: Any
    asarray: Callable[..., Any]
    to_numpy: Callable[[Any], Any]
    make_rng: Callable[[int], Any]
    kernels: KernelTable = field(default=PLAIN_ONLY)


def get_backend(name: str) -> Backend:
    """'numpy' or 'cupy'; raises BackendError with the reason when CuPy or a GPU is missing."""
    if name == "numpy":
        from runtime.backends.numpy_backend import make

        return make()
    if name == "cupy":
        from runtime.backends.cupy_backend import make

        return make()
    raise BackendError(f"unknown backend {name!r}; choose 'numpy' or 'cupy'")
