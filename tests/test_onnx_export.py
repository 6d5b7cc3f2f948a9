"""ONNX export: every shipped spec it can express is checked by `onnx.checker` and run with
onnxruntime, its outputs equal to dslrun's forward graph to 1e-5 (float32); the ones it cannot
are named with the op; trained weights and symbolic dims come through."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx extra")
ort = pytest.importorskip("onnxruntime", reason="checking exports needs onnxruntime")

from dsl.api import Model  # noqa: E402
from dsl.cli import main  # noqa: E402
from dsl.compiler import compile_file  # noqa: E402
from dsl.onnx import OnnxError  # noqa: E402
from dsl.onnx.export import (  # noqa: E402
    choose_outputs,
    coverage,
    dslrun_outputs,
    export_compiled,
    reference_feeds,
    run_onnx,
    verify,
)
from dsl.onnx.ops import EXPORT_TABLE, STRUCTURAL, UNSUPPORTED  # noqa: E402
from runtime.ops import REGISTRY  # noqa: E402

COVERAGE = coverage()
EXPORTABLE = [name for name, status in COVERAGE if status.startswith("ok")]


def test_every_registry_op_has_a_row_or_a_reason() -> None:
    missing = set(REGISTRY) - set(EXPORT_TABLE) - set(UNSUPPORTED) - set(STRUCTURAL)
    assert not missing, f"ops with neither an export row nor a reason: {sorted(missing)}"
    assert not set(EXPORT_TABLE) & set(UNSUPPORTED)


def test_most_shipped_specs_export() -> None:
    assert len(EXPORTABLE) >= 45, COVERAGE
    for needed in ("mlp_digits", "cnn_digits", "lenet", "resnet_small", "gpt_char",
                   "transformer_classifier", "mlp_norms", "lstm", "birnn"):
        assert needed in EXPORTABLE


@pytest.mark.parametrize("spec", EXPORTABLE)
def test_shipped_spec_matches_dslrun(spec: str) -> None:
    c = compile_file(spec)
    result = export_compiled(c)
    onnx.checker.check_model(result.model, full_check=True)
    worst, _ = verify(c, result)
    assert worst <= 1e-5, f"{spec}: onnxruntime differs from dslrun by {worst}"


@pytest.mark.parametrize("norm", ["batch", "layer", "group", "instance", "none"])
def test_normalization_variants(norm: str) -> None:
    c = compile_file("mlp_norms", overrides={"NORM": norm})
    result = export_compiled(c)
    worst, _ = verify(c, result)
    assert worst <= 1e-5


def test_trained_weights_and_symbolic_batch(tmp_path) -> None:
    model = Model(compile_file("mlp_digits"))
    model.fit(steps=3, evaluate=False)
    ckpt = model.save(tmp_path / "ckpt.npz")
    c = compile_file("mlp_digits")
    trained = export_compiled(c, checkpoint=str(ckpt))
    initial = export_compiled(c)
    assert trained.weights.startswith("checkpoint")
    assert "initial" in initial.weights
    w_trained = {t.name: onnx.numpy_helper.to_array(t) for t in trained.model.graph.initializer}
    w_initial = {t.name: onnx.numpy_helper.to_array(t) for t in initial.model.graph.initializer}
    assert any(not np.array_equal(w_trained[k], w_initial[k]) for k in w_trained)
    # the batch dim is the named dim B: two batch sizes run, both equal to dslrun
    (inp,) = trained.model.graph.input
    assert inp.type.tensor_type.shape.dim[0].dim_param == "B"
    ids, _ = choose_outputs(c)
    for rows in (1, 7):
        feeds, _ = reference_feeds(c, trained.inputs, rows=rows)
        ours = dslrun_outputs(c, ids, feeds, str(ckpt))["logits"]
        theirs = run_onnx(trained.model, feeds)["logits"]
        assert theirs.shape == (rows, 10)
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)


def test_chosen_outputs() -> None:
    c = compile_file("mlp_digits")
    ids, why = choose_outputs(c)
    assert list(ids) == ["logits"] and "metric 'ce'" in why
    ids, why = choose_outputs(c, ["acc"])
    assert list(ids) == ["acc"]
    with pytest.raises(OnnxError, match="no output 'acx'.*acc"):
        choose_outputs(c, ["acx"])
    ids, why = choose_outputs(compile_file("deep_sets"))
    assert list(ids) == ["scores"] and why == "the spec's outputs"


UNTIL = """model until_demo
input x: f32[B, 3]
net f(x) {
    h = x
    loop t in 0 .. 10 until max(abs(h)) < 0.5 {
        h = h * 0.5
    }
    return h
}
output y = f(x)
"""


def test_unsupported_ops_are_named() -> None:
    from dsl.compiler import compile_spec

    status = dict(COVERAGE)
    assert "op 'random_normal'" in status["gan"]
    assert "op 'random_bernoulli'" in status["bert_mlm"]
    with pytest.raises(OnnxError, match="op 'loop': a stop condition"):
        export_compiled(compile_spec(UNTIL, "until.dl"))


@pytest.mark.parametrize("spec", ["rnn", "lstm", "gru", "birnn", "rnn_runtime_loop"])
def test_run_time_loops_become_onnx_loops(spec: str) -> None:
    result = export_compiled(compile_file(spec))
    assert any(n.op_type == "Loop" for n in result.model.graph.node)


def test_cli_export_and_list(tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", "cnn_digits", "-o", str(out), "--verify"]) == 0
    text = capsys.readouterr()
    assert "largest difference" in text.out and "initial weights" in text.err
    onnx.checker.check_model(onnx.load(str(out)))
    assert main(["export", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "gan" in listing and "op 'random_normal'" in listing and "mlp_digits" in listing
    assert main(["export", "gan", "-o", str(tmp_path / "g.onnx")]) == 1
    err = capsys.readouterr().err
    assert "op 'random_normal'" in err and "Traceback" not in err
    assert main(["export", "mlp_digits"]) == 1
    assert "-o FILE.onnx" in capsys.readouterr().err


# one row per export row the shipped specs leave out or barely touch: (name, spec lines after
# `input x: f32[B, 2, 4, 6]`, `input m: bool[B, 2, 4, 6]` and `input i: i64[B]`)
OP_CASES = {
    "variance": "output y = variance(x, axis = [1, 3], correction = 1)",
    "variance_keepdims": "output y = variance(x, axis = -1, keepdims = true)",
    "norm": "output y = norm(x, axis = 3, ord = 1)\noutput y2 = norm(x, axis = [2, 3], ord = 2)",
    "logsumexp": "output y = logsumexp(x * 30.0, axis = 1, keepdims = true)",
    "reductions": "output y = sum(x) + mean(x, axis = 2)\noutput y2 = max(x, axis = [1, 2])\n"
                  "output y3 = min(x, axis = -1)",
    "unary": "output y = log1p(abs(x)) + expm1(x) + swish(x) + erf(x) + sign(x) + sin(x)"
             " * cos(x) + step(x) + sqrt(abs(x)) + exp(-x * x)",
    "softplus_far": "output y = softplus(x * 40.0) + sigmoid(x * 40.0)",
    "activations": "output y = leaky_relu(x, alpha = 0.2) + gelu(x) + "
                   "gelu(x, approximate = \"tanh\") + tanh(x)",
    "binary": "output y = pow(abs(x) + 0.5, x) + minimum(x, 0.3) + maximum(x, -0.3) + x / 3.0",
    "logic": "output y = cast(logical_or(logical_and(x > 0.0, m), logical_not(m)), \"f32\")"
             " + where(x <= 0.1, x, 2.0 * x) + cast(x != 0.25, \"f32\")",
    "casts": "output y = cast(x * 3.0, \"i64\")",
    "softmaxes": "output y = softmax(x, axis = 2, temperature = 2.0) + "
                 "log_softmax(x, axis = -1)",
    "masked_bool": "output y = masked_softmax(x, m, axis = -1)",
    "masked_float": "output y = masked_softmax(x, where(m, 0.0, -1e9), axis = 1)",
    "cross_entropy": "z = reshape(x, [shape(x)[0], 48])\n"
                     "output y = softmax_cross_entropy(z, i, smoothing = 0.1, "
                     "temperature = 0.5) + sigmoid_bce(z[:, 0], cast(i, \"f32\"))",
    "indexing": "output y = x[:, 1, 1:4, ::-2][:, None, :, -1] + x[:, -1:, 0, 5][:, None, :]",
    "shapes": "output y = reshape(transpose(x, [0, 3, 1, 2]), [shape(x)[0], 6, -1])",
    "fills": "output y = full_like(x, 2.0) + broadcast_to(reshape(x[:, 0, 0, :], "
             "[shape(x)[0], 1, 1, 6]), shape = [shape(x)[0], 2, 4, 6]) + "
             "zeros([shape(x)[0], 2, 4, 6])",
    "concat": "output y = concat(x, 2.0 * x, axis = 1)",
    "take_one_hot": "output y = take(x, i, axis = 2)\noutput y2 = one_hot(i, depth = 6)",
    "argmax": "output y = argmax(x, axis = 2)",
    "matmuls": "output y = tensordot(x, x[0, 0], axes = 2)\n"
               "output y2 = x[:, 0] @ transpose(x[0, 0])",
    "conv_pool": "output y = avg_pool2d(x, kernel = [2, 3], stride = [1, 2], padding = [1, 1], "
                 "count_include_pad = false)\noutput y2 = max_pool2d(x, kernel = 2, "
                 "stride = [1, 2], padding = [1, 1])\noutput y3 = avg_pool2d(x, kernel = 3, "
                 "stride = 1, padding = 1)",
    "conv1d": "output y = conv1d(reshape(x, [shape(x)[0], 2, 24]), 3, kernel = 5, stride = 2, "
              "padding = 2, dilation = 2)",
    "conv2d": "output y = conv2d(x, 3, kernel = [3, 2], stride = [2, 1], padding = [1, 0, 1, 0])"
              "\noutput y2 = conv2d(x, 4, kernel = 1, groups = 2, dilation = 2)",
    "group_norm": "output y = group_norm(x, 2) + instance_norm(x)",
    "lstm_gates": "output y = lstm_gates(reshape(x, [shape(x)[0], 48]))",
    "layer_norm_axes": "def layer_norm(x, g, b, axes, eps) {\n"
                       "    return layer_norm(x, g, b, axes = axes, eps = eps)\n}\n"
                       "output y = layer_norm(x, x[0, :, :, 0], x[1, :, :, 1], axes = [1, 2], "
                       "eps = 0.1)\noutput y2 = layer_norm(x, x[0, 0], x[1, 1], axes = [2, 3], "
                       "eps = 1e-5)",
}


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_export_rows(case: str) -> None:
    from dsl.compiler import compile_spec

    text = ("model op_case\ninput x: f32[B, 2, 4, 6]\ninput m: bool[B, 2, 4, 6]\n"
            f"input i: i64[B]\n{OP_CASES[case]}\n")
    c = compile_spec(text, f"<{case}>")
    result = export_compiled(c)
    onnx.checker.check_model(result.model, full_check=True)
    rng = np.random.default_rng(0)
    feeds = {"x": (rng.normal(size=(3, 2, 4, 6)) * 2).astype(np.float32),
             "m": rng.random((3, 2, 4, 6)) < 0.6, "i": rng.integers(0, 4, 3)}
    feeds["m"][0, 0, 0] = False  # a fully masked row: zeros, not NaN
    feeds = {k: v for k, v in feeds.items() if k in result.inputs}
    ids, _ = choose_outputs(c)
    ours = dslrun_outputs(c, ids, feeds)
    theirs = run_onnx(result.model, feeds)
    for name in ids:
        assert theirs[name].dtype == ours[name].dtype
        np.testing.assert_allclose(theirs[name], ours[name], rtol=1e-5, atol=1e-5)
