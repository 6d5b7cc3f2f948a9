"""Mini-batches: `Batcher` cuts equally long arrays into batches, one epoch at a time, with
"shuffle", "with_replacement" or "sequential" sampling; its `state()` and `set_state()` make a
resumed run continue the identical batch sequence. `check_sampling` says when a sampling does
not fit a data set (sequential batches over overlapping windows).

This module must not import `dsl`.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from runtime.train.data.dataset import DataError
from runtime.train.data.registry import did_you_mean

__all__ = ["SAMPLINGS", "Batcher", "check_sampling", "stream_order"]

SAMPLINGS = ("shuffle", "with_replacement", "sequential")
_STATE_FORMAT = "dslrun.batcher/1"


class Batcher:
    """Cuts equally long arrays into mini-batches, one epoch per `epoch()` call.

    Sampling:
      * "shuffle": a fresh permutation per epoch; each sample once per epoch.
      * "with_replacement": ceil(N / batch) batches of exactly `batch` indices drawn uniformly
        with replacement.
      * "sequential": no randomness, each sample once per epoch, in `batch` parallel streams
        (`stream_order`): the samples are cut into `batch` contiguous runs and batch k holds
        the k-th sample of each run, so row i of batch k + 1 is the sample after row i of
        batch k. Over consecutive windows of a text this is truncated backpropagation through
        time (PyTorch's word-language-model `batchify`); batch 1 or a full batch is plain order.
    With `drop_last` a final short batch is skipped (shuffle and sequential). A `batch` larger
    than N is clamped to N. The same seed gives bit-identical batches.

    The returned arrays are valid only until the next batch is requested: gathered batches go
    into buffers that are reused (pass `reuse_buffers=False` for fresh arrays), and batches in
    plain order are read-only views of the data. Copy what you keep.

    `shard = (rank, size)` (data-parallel training, `runtime.train.distributed`): every
    process draws the same global batches and keeps rows `[m * rank // size, m * (rank + 1) //
    size)` of each batch of m rows; the position and `state()` are those of the global sequence.

    `state()` is a JSON-serializable snapshot of the position (epoch, batch within it, and the
    random generator as it was at the start of that epoch); `set_state()` on a Batcher built
    with the same arrays length, batch, sampling and drop_last continues the identical sequence.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        batch: int,
        seed: int = 0,
        sampling: str = "shuffle",
        drop_last: bool = False,
        reuse_buffers: bool = True,
        shard: tuple[int, int] | None = None,
    ):
        if not arrays:
            raise DataError("there are no data arrays to batch")
        self._arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        n = None
        for key, a in self._arrays.items():
            if a.ndim == 0:
                raise DataError(f"data field '{key}' is a scalar and cannot be batched")
            if n is None:
                n, first = a.shape[0], key
            elif a.shape[0] != n:
                raise DataError(
                    f"data fields '{first}' and '{key}' have different numbers of samples "
                    f"({n} and {a.shape[0]})"
                )
        assert n is not None
        if n == 0:
            raise DataError("there are no samples to batch")
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
            raise DataError(f"the batch size must be a positive integer, not {batch!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise DataError(f"the sampling seed must be a non-negative integer, not {seed!r}")
        if sampling not in SAMPLINGS:
            hint = did_you_mean(str(sampling), SAMPLINGS)
            raise DataError(
                f"unknown sampling '{sampling}'{hint}; choose one of {', '.join(SAMPLINGS)}"
            )
        self.n = int(n)
        self.batch = min(int(batch), self.n)
        self.seed = int(seed)
        self.sampling = sampling
        self.drop_last = bool(drop_last)
        self.reuse_buffers = bool(reuse_buffers)
        self.shard = shard
        if shard is not None and self.batch < shard[1]:
            raise DataError(f"the batch size {self.batch} is smaller than the number of "
                            f"processes ({shard[1]}): every process needs a share of each batch")
        if sampling == "with_replacement" or not self.drop_last:
            self.batches_per_epoch = -(-self.n // self.batch)
        else:
            self.batches_per_epoch = self.n // self.batch
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self._epoch = 0
        self._pos = 0
        self._start_state = self._rng.bit_generator.state  # at the start of epoch `_epoch`
        self._order: np.ndarray | None = None
        self._streams: np.ndarray | None = None  # sequential, unless it is plain order
        if sampling == "sequential" and 1 < self.batch < self.n:
            self._streams = stream_order(self.n, self.batch, self.drop_last)
        self._bufs: dict[str, np.ndarray] | None = None
        self._readonly = {k: v.view() for k, v in self._arrays.items()}  # for `_slice`
        for v in self._readonly.values():
            v.flags.writeable = False

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def epochs_done(self) -> int:
        """The number of completed epochs (the index of the current one)."""
        return self._epoch

    @property
    def position(self) -> int:
        """The number of batches of the current epoch already handed out."""
        return self._pos

    def _ensure_order(self) -> np.ndarray | None:
        if self.sampling == "sequential":
            return self._streams
        if self._order is None:
            if self.sampling == "shuffle":
                self._order = self._rng.permutation(self.n)
            else:
                size = self.batches_per_epoch * self.batch
                self._order = self._rng.integers(0, self.n, size=size, dtype=np.int64)
        return self._order

    def _finish_epoch(self) -> None:
        self._epoch += 1
        self._pos = 0
        self._order = None
        if self.sampling != "sequential":  # (sequential order never draws)
            self._start_state = self._rng.bit_generator.state

    def _gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        m = idx.shape[0]
        if not self.reuse_buffers:
            return {k: np.take(v, idx, axis=0) for k, v in self._arrays.items()}
        if self._bufs is None:
            self._bufs = {
                k: np.empty((self.batch, *v.shape[1:]), dtype=v.dtype)
                for k, v in self._arrays.items()
            }
        out = {}
        for k, v in self._arrays.items():
            buf = self._bufs[k][:m]
            # mode="clip" avoids numpy's extra buffering of `out`; indices are valid anyway.
            np.take(v, idx, axis=0, out=buf, mode="clip")
            out[k] = buf
        return out

    def _slice(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        return {k: v[lo:hi] for k, v in self._readonly.items()}  # read-only views

    def epoch(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield the remaining batches of the current epoch (all of them unless the epoch was
        interrupted or resumed mid-way), then advance to the next epoch."""
        order = self._ensure_order()
        epoch, start = self._epoch, self._pos
        for i in range(start, self.batches_per_epoch):
            if (self._epoch, self._pos) != (epoch, i):
                raise RuntimeError("the Batcher's position changed while an epoch was iterated")
            lo = i * self.batch
            hi = min(lo + self.batch, self.n if order is None else order.shape[0])
            if self.shard is not None:
                rank, size = self.shard
                lo, hi = lo + (hi - lo) * rank // size, lo + (hi - lo) * (rank + 1) // size
            if order is None:
                batch = self._slice(lo, hi)
            else:
                batch = self._gather(order[lo:hi])
            self._pos += 1
            if self._pos == self.batches_per_epoch:
                self._finish_epoch()
            yield batch

    def state(self) -> dict[str, Any]:
        """A JSON-serializable snapshot from which `set_state` continues the same sequence."""
        return {
            "format": _STATE_FORMAT,
            "n": self.n,
            "batch": self.batch,
            "sampling": self.sampling,
            "drop_last": self.drop_last,
            "seed": self.seed,
            "epoch": self._epoch,
            "position": self._pos,
            "rng": copy.deepcopy(self._start_state),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a `state()` snapshot; the run continues exactly where the snapshot was."""
        if not isinstance(state, Mapping) or state.get("format") != _STATE_FORMAT:
            raise DataError("the saved batcher state is not a dslrun batcher state")
        for key in ("n", "batch", "sampling", "drop_last"):
            if state.get(key) != getattr(self, key):
                raise DataError(
                    f"the saved batcher state was made with {key} = {state.get(key)!r}, but this "
                    f"run has {key} = {getattr(self, key)!r}; resume with the same data and "
                    "batching"
                )
        epoch, pos, rng_state = state.get("epoch"), state.get("position"), state.get("rng")
        if (
            not isinstance(epoch, int)
            or not isinstance(pos, int)
            or epoch < 0
            or not 0 <= pos < self.batches_per_epoch
            or not isinstance(rng_state, Mapping)
        ):
            raise DataError("the saved batcher state is corrupt")
        rng = np.random.Generator(np.random.PCG64())
        try:
            rng.bit_generator.state = copy.deepcopy(dict(rng_state))
        except (TypeError, ValueError, KeyError) as e:
            raise DataError(f"the saved batcher state has a bad random generator state: {e}") from e
        self._rng = rng
        self._start_state = rng.bit_generator.state
        self._epoch = epoch
        self._pos = pos
        self._order = None


def stream_order(n: int, batch: int, drop_last: bool = False) -> np.ndarray:
    """The sample order of sequential batches: samples 0 .. n - 1 cut into `batch` contiguous
    streams, interleaved so that `order[k * batch + i]` is the k-th sample of stream i.

    With `drop_last` (or when `batch` divides n) every stream has n // batch samples and the
    last n % batch samples are not used, as PyTorch's `batchify`; otherwise the first
    n % batch streams are one sample longer, and the last batch holds only their rows."""
    length, extra = divmod(n, batch)
    if drop_last or extra == 0:
        return np.arange(length * batch).reshape(batch, length).T.reshape(-1)
    starts = np.zeros(batch, dtype=np.int64)
    starts[1:] = np.cumsum(length + (np.arange(batch) < extra))[:-1]
    full = starts[None, :] + np.arange(length)[:, None]  # [length, batch]
    return np.concatenate([full.reshape(-1), starts[:extra] + length])


def check_sampling(info: Mapping[str, Any], sampling: str) -> None:
    """Raise DataError when `sampling` does not fit the data set described by `info`: the
    sequential streams of a set of overlapping windows (`stride` < `T`) would not continue
    each row where the previous batch ended."""
    stride, window = info.get("stride"), info.get("T")
    if sampling == "sequential" and isinstance(stride, int) and isinstance(window, int) \
            and stride < window:
        name = info.get("name", "the data set")
        raise DataError(
            f'sampling = "sequential" continues each batch row with the next window, but the '
            f"windows of data set '{name}' overlap (stride = {stride}, T = {window}); "
            f"give the data set stride = {window} (the default), or sample with \"shuffle\""
        )
