"""The dtypes of tensors: their names, NumPy dtypes, which are floats, and promotion.

The one vocabulary of the IR, the ops, the training loop and the language:

- names: `DTYPES` maps "f16", "f32", "f64", "i32", "i64", "bool" (the spelling of the language
  and of the graph text, in this order) to NumPy scalar types; `np_dtype` and `NP_TO_DTYPE`
  convert, and `parse_dtype` also reads NumPy's names ("float32") and NumPy dtypes;
- floats: `FLOATS` from narrowest to widest (`FLOAT_RANK`), `is_float`; `DEFAULT_FLOAT` is
  the type of a float-valued result of non-float operands; a program computes in one of
  `COMPUTE_FLOATS` (`dslrun --dtype`);
- promotion of elementwise operands, `result_dtype`: NumPy's for arrays, restricted to these
  dtypes, except that integers meet floats as the float (NumPy would make f32 with i64 an
  f64): the widest float, else i64 when an operand is i64, else the integer, else bool.
  `float_result_dtype` is the dtype of ops that compute in floats.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DTYPES: dict[str, type] = {"f16": np.float16, "f32": np.float32, "f64": np.float64,
                           "i32": np.int32, "i64": np.int64, "bool": np.bool_}
FLOATS = ("f16", "f32", "f64")
INTS = ("i32", "i64")
FLOAT_RANK = {name: k for k, name in enumerate(FLOATS)}
DEFAULT_FLOAT = "f32"
COMPUTE_FLOATS = ("f32", "f64")
NP_TO_DTYPE: dict[np.dtype, str] = {np.dtype(t): name for name, t in DTYPES.items()}
NUMPY_NAMES: dict[str, str] = {np.dtype(t).name: name for name, t in DTYPES.items()}


def is_float(name: str) -> bool:
    """`name` is a floating point dtype."""
    return name in FLOAT_RANK


def np_dtype(name: str) -> np.dtype:
    """The NumPy dtype of dtype `name`."""
    return np.dtype(DTYPES[name])


def parse_dtype(value: Any) -> str:
    """The dtype name of "f32", NumPy's "float32", or a NumPy dtype or scalar type; raises
    ValueError naming the dtypes for anything else."""
    if isinstance(value, str):
        name = value if value in DTYPES else NUMPY_NAMES.get(value)
    else:
        try:
            name = NP_TO_DTYPE.get(np.dtype(value)) if value is not None else None
        except TypeError:
            name = None
    if name is None:
        raise ValueError(f"unknown dtype {value!r}; the dtypes are {', '.join(DTYPES)}")
    return name


def result_dtype(*names: str) -> str:
    """The dtype of an elementwise result of operands of these dtypes (see the module)."""
    floats = [d for d in names if d in FLOAT_RANK]
    if floats:
        return max(floats, key=FLOAT_RANK.__getitem__)
    ints = [d for d in names if d in INTS]
    if ints:
        return "i64" if "i64" in ints else ints[0]
    return "bool"


def float_result_dtype(*names: str) -> str:
    """The dtype of a float-valued result: `result_dtype`, or `DEFAULT_FLOAT` when that is
    not a float."""
    dt = result_dtype(*names)
    return dt if dt in FLOAT_RANK else DEFAULT_FLOAT
