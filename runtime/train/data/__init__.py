"""Data sets and mini-batching for dslrun training runs.

`load_dataset(name, options)` turns a spec's `data NAME(option = value, ...)` into a `Dataset`:
a dict of train arrays, an optional dict of test arrays, an `info` dict of facts (its numbers
are the spec's compile-time `data.NAME` constants) and, for token sets, a `vocab`. Arrays are
keyed by field name; the standard fields are `x` and `y`.

Where things live:

* `dataset.py`: `Dataset`, `DataError`, `SPLITS`.
* `registry.py`: `register` and the options view every loader reads; `load_dataset`,
  `check_dataset`, `known_datasets`, `dataset_options`, `dataset_summary` (the docstring
  of a loader is its reference entry, `dslrun doc NAME`).
* `splits.py`: seeded (stratified) shuffle splits, splits by position, `split_validation`.
* `preprocess.py`: standardization and label mapping of the classic sets.
* the loaders: `shipped.py` (scikit-learn's shipped sets), `generators.py` (moons, circles,
  blobs, linear_gaussian, random), `files.py` (npz, csv), `text.py` (python_docs or a text
  file, with `vocab.py`'s `Vocabulary`), `sequences.py` (adding, copy, parity, sine).
* `images.py`: `bilinear_resize`.
* `batching.py`: `Batcher` ("shuffle", "with_replacement" or "sequential" streams, with a
  resumable `state()`) and `check_sampling`.

This package must not import `dsl`.
"""

from __future__ import annotations

from runtime.train.data import files, generators, sequences, shipped, text  # noqa: F401
from runtime.train.data.batching import SAMPLINGS, Batcher, check_sampling, stream_order
from runtime.train.data.dataset import SPLITS, DataError, Dataset
from runtime.train.data.images import bilinear_resize
from runtime.train.data.registry import (
    check_dataset,
    dataset_options,
    dataset_summary,
    known_datasets,
    load_dataset,
)
from runtime.train.data.splits import split_validation
from runtime.train.data.vocab import Vocabulary

__all__ = [
    "SAMPLINGS",
    "SPLITS",
    "Batcher",
    "DataError",
    "Dataset",
    "Vocabulary",
    "bilinear_resize",
    "check_dataset",
    "check_sampling",
    "dataset_options",
    "dataset_summary",
    "known_datasets",
    "load_dataset",
    "split_validation",
    "stream_order",
]
