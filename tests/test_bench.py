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


def _jax_count(params: list) -> int:
    return sum(int(a.size) for layer in params for a in layer)


@pytest.mark.parametrize("name", sorted(torch_models.MODELS))
def test_jax_model_has_the_counted_parameters_and_logits(name: str) -> None:
    jax = pytest.importorskip("jax")

    cfg = torch_models.MODELS[name]
    params, forward = torch_models.jax_model(name)
    assert _jax_count(params) == _param_count(cfg)
    x = jax.ShapeDtypeStruct((3, *cfg["shape"]), "float32")
    assert jax.eval_shape(forward, params, x).shape == (3, cfg["classes"])


def _torch_to_jax(name: str, model) -> list:
    """The torch model's parameters in jax_model's layout (dense weights transposed)."""
    import jax.numpy as jnp

    def a(t):
        return jnp.asarray(t.detach().numpy())

    out = []
    for m in model:
        if hasattr(m, "lstm"):
            lstm = m.lstm
            out.append((a(lstm.weight_ih_l0), a(lstm.weight_hh_l0), a(lstm.bias_ih_l0),
                        a(lstm.bias_hh_l0)))
        elif hasattr(m, "self_attn"):
            sa = m.self_attn
            out.append((a(sa.in_proj_weight), a(sa.in_proj_bias), a(sa.out_proj.weight),
                        a(sa.out_proj.bias), a(m.linear1.weight), a(m.linear1.bias),
                        a(m.linear2.weight), a(m.linear2.bias), a(m.norm1.weight),
                        a(m.norm1.bias), a(m.norm2.weight), a(m.norm2.bias)))
        elif hasattr(m, "weight") and m.weight.ndim == 2:
            out.append((a(m.weight).T, a(m.bias)))
    return out


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_jax_sequence_models_compute_what_torch_does(name: str) -> None:
    """With the torch model's weights, the JAX LSTM (lax.scan, gates i, f, g, o) and encoder
    block (post-norm, ReLU) give torch's logits."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("jax")
    import numpy as np

    torch.manual_seed(0)
    model = torch_models.torch_model(name).eval()
    params, forward = torch_models.jax_model(name)
    mine = _torch_to_jax(name, model)
    assert [[a.shape for a in p] for p in mine] == [[a.shape for a in p] for p in params]
    cfg = torch_models.MODELS[name]
    x = np.random.default_rng(0).standard_normal((4, *cfg["shape"])).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = np.asarray(forward(mine, x))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_batch_scaling_rewrites_the_batch_and_the_data_size() -> None:
    import batch_scaling

    import dsl

    text = Path(spec("bench/lenet")).read_text()
    out, n = batch_scaling.with_batch(text, 1024)
    assert n == 4096 and "n = 4096" in out
    p = dsl.compile(out).program
    assert p.train.batch == 1024 and p.data[1]["n"] == 4096
    out, n = batch_scaling.with_batch(text, 16)
    assert n == 2048 and dsl.compile(out).program.train.batch == 16


def test_the_hand_written_numpy_lstm_step_is_pytorchs() -> None:
    # bench/lstm_numpy_bound.py measures the floor of dslrun's ratio on the lstm workload
    # with it: its loss and gradients must be the real ones (float64, to rounding)
    pytest.importorskip("torch", reason="the bound is checked against PyTorch (extra crosscheck)")
    import lstm_numpy_bound

    lstm_numpy_bound.check()


def test_the_nhwc_conv_formulations_compute_dslruns_conv(monkeypatch) -> None:
    # bench/conv_layouts.py times them against runtime.ops.conv: forward, input and weight
    # gradient must be the same numbers (float64, to rounding), padded and not, kh != kw,
    # whole and cut into batch chunks and row blocks (the last one short)
    import conv_layouts

    from runtime.ops import conv

    nhwc = {k for k, (layout, _) in conv_layouts.FORMULATIONS.items() if layout == "nhwc"}
    worst = conv_layouts.check(conv_layouts.SMALL)
    assert set(worst) == nhwc and max(worst.values()) < 1e-10
    monkeypatch.setattr(conv, "COLS_BYTES", 1024)
    monkeypatch.setattr(conv_layouts, "SHIFT_ROWS", 13)
    worst = conv_layouts.check(conv_layouts.SMALL)
    assert set(worst) == nhwc and max(worst.values()) < 1e-10
