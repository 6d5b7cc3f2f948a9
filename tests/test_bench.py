"""The PyTorch reference models in bench/torch_models.py train the same workload as the bench
specs: batch, sample shape, classes, parameter count, learning rate and momentum (and, where
torch is installed, the parameter count of the torch model itself)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from conftest import ROOT, spec

from dsl import ast as A
from dsl.compiler import compile_file
from dsl.parser import parse

sys.path.insert(0, str(ROOT / "bench"))
import torch_models  # noqa: E402


def _param_count(cfg: dict) -> int:
    """Parameters of a torch_models layer list, counted without torch."""
    shape, total = list(cfg["shape"]), 0
    for layer in cfg["layers"]:
        if layer[0] == "dense":
            total += math.prod(shape) * layer[1] + layer[1]
            shape = [layer[1]]
        elif layer[0] == "conv":
            _, out, k, pad = layer
            total += shape[0] * k * k * out + out
            shape = [out, shape[1] + 2 * pad - k + 1, shape[2] + 2 * pad - k + 1]
        elif layer[0] == "maxpool":
            shape = [shape[0], shape[1] // layer[1], shape[2] // layer[1]]
        elif layer[0] == "flatten":
            shape = [math.prod(shape)]
        elif layer[0] == "lstm":  # nn.LSTM: weight_ih, weight_hh and two biases, 4 gates
            h = layer[1]
            total += 4 * h * (shape[-1] + h) + 8 * h
            shape = [h]
        elif layer[0] == "transformer":  # in_proj, out_proj, two linears, two layer norms
            _, _, ff = layer
            d = shape[-1]
            total += 3 * d * d + 3 * d + d * d + d + 2 * d * ff + ff + d + 4 * d
        elif layer[0] == "mean_time":
            shape = shape[1:]
    return total


@pytest.mark.parametrize("name", sorted(torch_models.MODELS))
def test_torch_reference_matches_the_bench_spec(name: str) -> None:
    cfg = torch_models.MODELS[name]
    c = compile_file(spec(f"bench/{name}"), optimize=False)
    p = c.program
    assert p.train.batch == cfg["batch"]
    assert p.inputs["x"].shape[1:] == tuple(cfg["shape"])
    data, opts = p.data
    assert data == "random" and opts["classes"] == cfg["classes"]
    assert p.param_count() == _param_count(cfg)
    text = Path(spec(f"bench/{name}")).read_text()
    (use,) = [s for s in parse(text).body if isinstance(s, A.OptimizerUse)]
    options = {k.name: k.value.value for k in use.rule.kwargs}
    assert use.rule.func == "sgd"
    assert options == {"lr": torch_models.LR, "momentum": torch_models.MOMENTUM}


@pytest.mark.parametrize("name", sorted(torch_models.MODELS))
def test_torch_model_has_the_counted_parameters(name: str) -> None:
    pytest.importorskip("torch")
    model = torch_models.torch_model(name)
    assert sum(p.numel() for p in model.parameters()) == _param_count(torch_models.MODELS[name])
