"""Backends: every array function the kernels call through `xp` exists in CuPy too, and the
CuPy backend refuses to start, in one sentence, where CuPy or a GPU is missing.

No GPU is needed: `import cupy` works on a machine without one (only running kernels
needs a device), so the attribute check runs wherever `cupy` is installed and is skipped,
with the reason, where it is not.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import ROOT, gpu_usable

from runtime.backends import BackendError, get_backend

KERNEL_SOURCES = sorted((ROOT / "runtime" / "ops").glob("*.py")) + sorted(
    (ROOT / "runtime" / "plan").glob("*.py")) + [ROOT / "runtime" / "train" / "loop.py"]
_XP = re.compile(r"\bxp\.([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)")


def xp_names() -> dict[str, str]:
    """`xp.<dotted name>` -> the first `file:line` that uses it."""
    out: dict[str, str] = {}
    for path in KERNEL_SOURCES:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for m in _XP.finditer(line):
                out.setdefault(m.group(1), f"{path.relative_to(ROOT).as_posix()}:{lineno}")
    return out


def resolve(module: object, dotted: str) -> object | None:
    obj = module
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def test_kernels_use_xp() -> None:
    names = xp_names()
    assert len(names) > 20, "the scan found too few xp.<name> uses; did the kernels move?"
    assert "linalg.solve" in names or any("." in n for n in names)


def test_xp_names_exist_in_numpy() -> None:
    """The same scan against NumPy: a typo in a rarely-run kernel shows up here."""
    missing = [f"xp.{n} ({where})" for n, where in sorted(xp_names().items())
               if resolve(np, n) is None]
    assert not missing, "not in numpy: " + ", ".join(missing)


def test_xp_names_exist_in_cupy() -> None:
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA install raising at import
        pytest.skip(f"cupy is not importable here ({type(e).__name__}: {e})")
    missing = [f"xp.{n} ({where})" for n, where in sorted(xp_names().items())
               if resolve(cupy, n) is None]
    assert not missing, "used by kernels but missing in cupy: " + ", ".join(missing)


def test_cupy_backend_without_gpu_is_one_clear_sentence() -> None:
    if gpu_usable():
        backend = get_backend("cupy")
        assert backend.name == "cupy"
        return
    with pytest.raises(BackendError) as info:
        get_backend("cupy")
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.startswith("the cupy backend needs "), msg
    assert "CuPy" in msg or "GPU" in msg


def test_numpy_backend_and_unknown_backend() -> None:
    b = get_backend("numpy")
    assert b.xp is np and b.name == "numpy"
    with pytest.raises(BackendError, match="unknown backend 'jax'"):
        get_backend("jax")


# Special functions the kernels call as `special(xp).<name>` (NumPy and CuPy have no erf):
# scipy.special for NumPy arrays, cupyx.scipy.special for CuPy arrays
_SPECIAL = re.compile(r"\bspecial\(xp\)\.([a-z_][a-z0-9_]*)")


def special_names() -> dict[str, str]:
    """`special(xp).<name>` -> the first `file:line` that uses it."""
    out: dict[str, str] = {}
    for path in KERNEL_SOURCES:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for m in _SPECIAL.finditer(line):
                out.setdefault(m.group(1), f"{path.relative_to(ROOT).as_posix()}:{lineno}")
    return out


def test_special_functions_exist_for_numpy() -> None:
    from runtime.ops.elementwise import SPECIAL_MODULES, special

    names = special_names()
    assert "erf" in names, "the scan found no special(xp).erf; did gelu's kernel move?"
    assert set(SPECIAL_MODULES) == {"numpy", "cupy"}
    missing = [f"{n} ({where})" for n, where in sorted(names.items())
               if resolve(special(np), n) is None]
    assert not missing, "not in scipy.special: " + ", ".join(missing)


def test_special_functions_exist_in_cupyx() -> None:
    import importlib

    from runtime.ops.elementwise import SPECIAL_MODULES

    try:
        mod = importlib.import_module(SPECIAL_MODULES["cupy"])
    except Exception as e:  # ImportError, or a broken CUDA install raising at import
        pytest.skip(f"cupyx is not importable here ({type(e).__name__}: {e})")
    missing = [f"{n} ({where})" for n, where in sorted(special_names().items())
               if resolve(mod, n) is None]
    assert not missing, "used by kernels but missing in cupyx.scipy.special: " + ", ".join(missing)
