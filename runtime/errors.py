"""The one base class of every error a user can cause: `UserError`.

A spec mistake (`dsl.DslError`), a bad data file (`DataError`), a checkpoint that does not fit
(`CheckpointError`), a run that cannot proceed or diverged (`TrainError`), a missing GPU
(`BackendError`) and a non-finite value found by `--nan-check` (`NonFiniteError`) all derive
from it, so `except dsl.Error` catches every one of them, and anything else is a bug. The
message is one sentence for the user.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake in what the user gave (spec, flags, data, checkpoint, machine): not a bug."""
