"""Every spec's own gradients against finite differences in float64 (`dslrun check-grad`,
run in-process; tests/test_cli.py runs the command as a subprocess)."""

from __future__ import annotations

import pytest
from conftest import spec

from dsl.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_blas_thread")
NORMS = ["batch", "layer", "group", "instance", "none"]
CHECKS = [[name] for name in (
    "one_neuron", "linear_regression", "ridge_regression", "gaussian_mle_regression",
    "huber_regression", "quantile_regression", "lasso",
    "logistic_regression", "softmax_regression", "mlp_digits", "quadratic_optimizers",
    "optimizers_from_documents", "bench/mlp_small", "cnn_digits", "two_layer_hinge")]
CHECKS += [["mlp_norms", "--set", f"NORM={n}"] for n in NORMS]
CHECKS += [["resnet_small", "--set", f"SKIP={s}"] for s in ("true", "false")]


@pytest.mark.parametrize("args", CHECKS, ids=[" ".join(a) for a in CHECKS])
def test_whole_spec_gradient_check(args: list[str], capsys) -> None:
    code = cli_main(["check-grad", spec(args[0]), *args[1:]])
    out = capsys.readouterr().out
    assert code == 0, out
    assert ": pass" in out
