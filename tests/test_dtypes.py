"""runtime.dtypes: names, parsing, and promotion against NumPy's."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from runtime.dtypes import (
    DTYPES,
    FLOATS,
    NP_TO_DTYPE,
    float_result_dtype,
    is_float,
    np_dtype,
    parse_dtype,
    result_dtype,
)


def test_names_and_numpy_dtypes_convert_both_ways() -> None:
    assert list(DTYPES) == ["f16", "f32", "f64", "i32", "i64", "bool"]
    for name in DTYPES:
        assert NP_TO_DTYPE[np_dtype(name)] == name
        assert parse_dtype(name) == name
        assert parse_dtype(np_dtype(name).name) == name  # "float32", "int64", "bool"
        assert parse_dtype(np_dtype(name)) == name
        assert parse_dtype(DTYPES[name]) == name
        assert is_float(name) == (name in FLOATS) == (np_dtype(name).kind == "f")


@pytest.mark.parametrize("bad", ["float", "f8", "uint8", None, np.uint8, 3])
def test_parse_dtype_refuses_other_names(bad: object) -> None:
    with pytest.raises(ValueError, match="the dtypes are f16, f32, f64, i32, i64, bool"):
        parse_dtype(bad)


@pytest.mark.parametrize(("a", "b"), list(itertools.product(DTYPES, repeat=2)))
def test_promotion_is_numpys_except_integers_meet_floats_as_the_float(a: str, b: str) -> None:
    got = result_dtype(a, b)
    assert got == result_dtype(b, a)
    numpy = NP_TO_DTYPE[np.result_type(np_dtype(a), np_dtype(b))]
    if is_float(a) != is_float(b):
        assert got == (a if is_float(a) else b)
    else:
        assert got == numpy
    assert float_result_dtype(a, b) == (got if is_float(got) else "f32")
