"""Shared pytest setup: make the repository importable when running plain `pytest`.

Numeric helpers (finite differences, graph running) live in `tests/helpers_numeric.py`.
Here: the run's own cache directory, the `--update-golden` option (fixture `update_golden`)
used by `tests/test_golden.py`, and `run_cli` / the `dslrun` fixture that run the command line
in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# A GAN-like two-phase spec: the generator phase reads x only through shape(x)[0].
TWO_PHASES = """
model pair
input x: f32[B, 2]
net G(z) { return dense(tanh(dense(z, 4)), 2) }
net D(x) { return dense(tanh(dense(x, 4)), 1)[:, 0] }
fake = G(normal([shape(x)[0], 2]))
objective d_loss = bce_with_logits(D(x), 1) + bce_with_logits(D(stop_gradient(fake)), 0)
objective g_loss = bce_with_logits(D(fake), 1)
optimizer adam(lr = 2e-3, beta1 = 0.5) minimize d_loss over params(D)
optimizer sgd(lr = 1e-2, momentum = 0.9) minimize g_loss over params(G)
train { steps = 2, order = [g_loss, d_loss] }
"""


def gpu_usable() -> bool:
    """CuPy imports and sees a CUDA device (a broken CUDA install raises anything)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def spec(name: str) -> str:
    """The path of the shipped spec `name` (`mlp_digits`, `bench/lenet`)."""
    return str(ROOT / "specs" / f"{name}.dl")


def step_values(name: str, runtime: bool, batch: int = 6, **overrides: str) -> dict:
    """The loss and every parameter's gradient (name -> array) of one float64 step of the
    shipped spec `name` on its first `batch` training rows, with its time loop run at run
    time or unrolled by `for` (the spec's `RUNTIME` const)."""
    import numpy as np

    import dsl
    from runtime.backends import get_backend
    from runtime.plan import Plan

    m = dsl.load(spec(name), dtype="float64",
                 overrides={"RUNTIME": "true" if runtime else "false", **overrides})
    g = m.compiled.stages["grad"][0][1]
    feeds = {k: v[:batch].astype(np.float64) if v.dtype.kind == "f" else v[:batch]
             for k, v in m.dataset.train.items() if k in m.program.inputs}
    names = ["loss", *sorted(n for n in g.outputs if n.endswith(".grad"))]
    values = {k: v.value.astype(np.float64) for k, v in m.program.variables.items()}
    plan = Plan(g, {"B": batch}, get_backend("numpy"), values, names, apply_updates=False)
    out = plan.run({**feeds, "step": 1.0, "epoch": 0.0})
    return dict(zip(names, (np.asarray(v) for v in out)))


_OWN_CACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """One private cache directory for the whole run (parser tables, parsed ASTs), shared
    with the CLI subprocesses, instead of the user's own (`dsl.cache`)."""
    if "DSLRUN_CACHE_DIR" not in os.environ:
        import tempfile

        _OWN_CACHE.append(tempfile.mkdtemp(prefix="dslrun-cache-"))
        os.environ["DSLRUN_CACHE_DIR"] = _OWN_CACHE[0]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWN_CACHE:
        import shutil

        shutil.rmtree(_OWN_CACHE.pop(), ignore_errors=True)
        os.environ.pop("DSLRUN_CACHE_DIR", None)


@pytest.fixture(scope="module")
def one_blas_thread():
    """The conv GEMMs are small: on a busy machine a multi-threaded BLAS spends ~10x longer
    waiting for its threads than computing, so modules of conv specs run them on one."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/ from the current compiler output")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when pytest runs with --update-golden (golden tests then write their files)."""
    return bool(request.config.getoption("--update-golden"))


def cli_env() -> dict[str, str]:
    """The environment for `python -m dsl.cli` subprocesses: the repository importable, no
    colour or progress tricks, and no inherited PYTHON* settings that could change imports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONHASHSEED"] = "0"
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "100"
    return env


def run_cli(args: list[str], cwd: Path, *flags: str,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `dslrun ARGS` as a subprocess in `cwd` (text mode, no stdin); `flags` go to the
    interpreter (`-W error`)."""
    return subprocess.run([sys.executable, *flags, "-m", "dsl.cli", *map(str, args)], cwd=cwd,
                          env=cli_env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def dslrun(tmp_path: Path):
    """`dslrun(*args)` runs the CLI in `tmp_path` (so `runs/` lands there)."""
    def run(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return run_cli([str(a) for a in args], cwd or tmp_path)
    return run


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """`cli(*args) -> (status, stdout, stderr)`: dslrun in-process, in tmp_path, never a
    traceback."""
    from dsl.cli import main

    monkeypatch.chdir(tmp_path)

    def run(*args: object) -> tuple[int, str, str]:
        status = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert "Traceback" not in err, err
        return status, out, err
    return run


@pytest.fixture(scope="session")
def cli_runner():
    """`run_cli` itself, for module-scoped fixtures that run many commands at once."""
    return run_cli
