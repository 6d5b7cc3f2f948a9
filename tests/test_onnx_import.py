"""ONNX import: a model of the supported op set becomes a spec that compiles, runs with the
model's weights (equal to onnxruntime's outputs) and trains once an objective and an optimizer
are added; export -> import gives back the same function."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX import needs the onnx extra")
pytest.importorskip("onnxruntime", reason="checking imports needs onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import dsl  # noqa: E402
from dsl.api import Model  # noqa: E402
from dsl.cli import main  # noqa: E402
from dsl.compiler import compile_file  # noqa: E402
from dsl.onnx import OnnxError  # noqa: E402
from dsl.onnx.export import (  # noqa: E402
    choose_outputs,
    dslrun_outputs,
    export_compiled,
    reference_feeds,
    run_onnx,
)
from dsl.onnx.importer import import_model  # noqa: E402
from dsl.onnx.names import ONE_TO_ONE  # noqa: E402


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv(+bias) -> Relu -> MaxPool -> Flatten -> Gemm(transB) -> Relu -> Reshape -> Gemm
    -> Softmax over [N, 1, 8, 8] images, built with onnx.helper."""
    rng = np.random.default_rng(seed)
    w = lambda *s: rng.normal(0, 0.3, s).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("conv.W", w(4, 1, 3, 3)), ("conv.b", w(4)), ("fc1.W", w(16, 64)), ("fc1.b", w(16)),
        ("fc2.W", w(16, 10)), ("fc2.b", w(10)), ("flat", np.array([-1, 16], np.int64))]]
    nodes = [
        helper.make_node("Conv", ["x", "conv.W", "conv.b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc1.W", "fc1.b"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Reshape", ["hr", "flat"], ["hf"]),
        helper.make_node("Gemm", ["hf", "fc2.W", "fc2.b"], ["logits"], alpha=0.5, beta=2.0),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                           ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_helper_model_matches_onnxruntime(tmp_path) -> None:
    model = small_cnn()
    imported = import_model(model, "small_cnn")
    assert "input x: f32[N, 1, 8, 8]" in imported.text
    assert set(imported.weights) == {"conv_W", "conv_b", "fc1_W", "fc1_b", "fc2_W", "fc2_b"}
    path = tmp_path / "small_cnn.onnx"
    onnx.save_model(model, str(path))
    m = dsl.from_onnx(path)
    x = np.random.default_rng(1).normal(size=(5, 1, 8, 8)).astype(np.float32)
    ours = m(x=x)
    theirs = run_onnx(model, {"x": x})
    for name in ("logits", "probs"):
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-6)


def test_round_trip_of_a_trained_export(tmp_path) -> None:
    trained = Model(compile_file("mlp_digits"))
    trained.fit(steps=3, evaluate=False)
    ckpt = str(trained.save(tmp_path / "ckpt.npz"))
    c = compile_file("mlp_digits")
    exported = export_compiled(c, checkpoint=ckpt)
    onnx_path = tmp_path / "mlp.onnx"
    onnx.save_model(exported.model, str(onnx_path))
    spec = tmp_path / "mlp.dl"
    assert main(["import", str(onnx_path), "-o", str(spec)]) == 0
    assert (tmp_path / "mlp.npz").is_file()
    back = dsl.load(str(spec))
    match = back.init_from(tmp_path / "mlp.npz", strict=True)
    assert match.complete
    ids, _ = choose_outputs(c)
    feeds, _ = reference_feeds(c, exported.inputs, rows=9)
    original = dslrun_outputs(c, ids, feeds, ckpt)["logits"]
    np.testing.assert_allclose(back(x=feeds["x"])["logits"], original, rtol=1e-5, atol=1e-6)


def test_imported_spec_fine_tunes(tmp_path) -> None:
    onnx_path = tmp_path / "cnn.onnx"
    onnx.save_model(small_cnn(), str(onnx_path))
    spec = tmp_path / "cnn.dl"
    assert main(["import", str(onnx_path), "-o", str(spec)]) == 0
    spec.write_text(spec.read_text() + "\n".join([
        "data digits(image = true, test_fraction = 0.2, seed = 0)",
        "input y: i64[N]",
        "objective loss = cross_entropy(logits, y)",
        "optimizer adam(lr = 1e-2) minimize loss",
        "train { batch = 64, steps = 30, seed = 0 }", ""]))
    edited = spec.read_text()
    # importing again never overwrites the edited spec, unless asked to
    assert main(["import", str(onnx_path), "-o", str(spec)]) == 1
    assert spec.read_text() == edited
    report = tmp_path / "run.json"
    assert main(["train", str(spec), "--init-from", str(tmp_path / "cnn.npz"), "--init-strict",
                 "--out", str(tmp_path / "run"), "--quiet", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["steps"] == 30
    assert result["loss_final"] < result["loss_first"]


def test_import_writes_beside_the_working_directory_by_default(tmp_path, monkeypatch,
                                                               capsys) -> None:
    onnx_path = tmp_path / "models" / "cnn.onnx"
    onnx_path.parent.mkdir()
    onnx.save_model(small_cnn(), str(onnx_path))
    monkeypatch.chdir(tmp_path)
    assert main(["import", str(onnx_path)]) == 0
    assert (tmp_path / "cnn.dl").exists() and (tmp_path / "cnn.npz").exists()
    assert main(["import", str(onnx_path)]) == 1
    assert "cnn.dl exists; give another -o FILE, or --force" in capsys.readouterr().err
    assert main(["import", str(onnx_path), "--force"]) == 0


def test_import_errors_name_the_problem(tmp_path, capsys) -> None:
    node = helper.make_node("Floor", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                      [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(OnnxError, match="op Floor .* is not supported; the supported ops are"):
        import_model(model)
    path = tmp_path / "floor.onnx"
    onnx.save_model(model, str(path))
    assert main(["import", str(path), "-o", str(tmp_path / "f.dl")]) == 1
    err = capsys.readouterr().err
    assert "Floor" in err and "Traceback" not in err
    assert main(["import", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "f.dl")]) == 1
    assert "does not exist" in capsys.readouterr().err
    # a Reshape whose shape is computed at run time cannot become a spec
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"],
                                                                        ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [3])], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                      [3])])
    with pytest.raises(OnnxError, match="Shape"):
        import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def test_pytorch_export_imports(tmp_path) -> None:
    """A model exported by PyTorch (conv with batch norm folded in, GELU as Erf arithmetic,
    LayerNorm, a dynamic batch axis) imports and computes what PyTorch computes."""
    torch = pytest.importorskip("torch", reason="needs torch (the crosscheck extra)")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(128, 32), torch.nn.GELU(),
        torch.nn.LayerNorm(32), torch.nn.Linear(32, 10)).eval()
    x = torch.randn(3, 1, 8, 8)
    path = tmp_path / "torchnet.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "batch"}},
                      opset_version=17)
    model = dsl.from_onnx(path)
    x2 = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        want = net(x2).numpy()
    np.testing.assert_allclose(model(x=x2.numpy())["logits"], want, rtol=1e-5, atol=1e-5)


def _binary_model(op: str, dtype: int, n: int) -> onnx.ModelProto:
    node = helper.make_node(op, ["a", "b"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(k, dtype, [n])
                                            for k in "ab"],
                              [helper.make_tensor_value_info("y", dtype, [n])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("op", ["Div", "Pow"])
def test_integer_div_and_pow_are_exact_above_2_to_the_24(op) -> None:
    from onnx.reference import ReferenceEvaluator

    from dsl.onnx.backend import DslBackend

    model = _binary_model(op, TensorProto.INT64, 4)
    a = np.array([100000007, -7, 2 ** 40 + 1, 9], np.int64)
    b = np.array([1, 2, 1, 2], np.int64)
    (ours,) = DslBackend.prepare(model).run([a, b])
    (want,) = ReferenceEvaluator(model).run(None, {"a": a, "b": b})
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, want)


def _relu_chain(inputs: list[tuple[str, str]]) -> onnx.ModelProto:
    """Relu nodes (input, output) over graph input x to output y, in the order given."""
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [3])  # noqa: E731
    nodes = [helper.make_node("Relu", [i], [o]) for i, o in inputs]
    return helper.make_model(helper.make_graph(nodes, "g", [vi("x")], [vi("y")]),
                             opset_imports=[helper.make_opsetid("", 18)])


def test_an_invalid_model_is_one_error_naming_the_file(tmp_path, capsys) -> None:
    for k, chain in enumerate([[("h", "y"), ("x", "h")],  # nodes out of order
                               [("undefined", "y")]]):  # an input nothing defines
        path = tmp_path / f"bad{k}.onnx"
        onnx.save_model(_relu_chain(chain), str(path))
        assert main(["import", str(path), "-o", str(tmp_path / f"bad{k}.dl")]) == 1
        err = capsys.readouterr().err
        assert f"{path} is not a valid ONNX model" in err and "Traceback" not in err
        assert not (tmp_path / f"bad{k}.dl").exists()
    # without the checker (an in-memory model), the lookup names the input
    with pytest.raises(OnnxError, match="reads 'undefined', which no graph input"):
        import_model(_relu_chain([("undefined", "y")]))


def test_model_names_are_checked(tmp_path, capsys) -> None:
    path = tmp_path / "relu.onnx"
    onnx.save_model(_relu_chain([("x", "y")]), str(path))
    # the default name (the spec file's) would be the keyword `model`
    assert main(["import", str(path), "-o", str(tmp_path / "model.dl")]) == 0
    assert "\nmodel m_model\n" in (tmp_path / "model.dl").read_text()
    for name, clean in [("my-net", "my_net"), ("model", "m_model"), ("9lives", "m_9lives")]:
        out = tmp_path / f"{clean}.dl"
        assert main(["import", str(path), "-o", str(out), "--name", name]) == 1
        err = capsys.readouterr().err
        assert f"'{name}' cannot be the model name" in err and f"'{clean}' would do" in err
        assert "Traceback" not in err and not out.exists()
    assert main(["import", str(path), "-o", str(tmp_path / "b.dl"), "--name", "net_2"]) == 0
    assert "\nmodel net_2\n" in (tmp_path / "b.dl").read_text()


def test_a_large_integer_constant_used_as_a_value_is_refused() -> None:
    node = helper.make_node("Add", ["a", "big"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("a", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2])],
        [numpy_helper.from_array(np.array([2 ** 30, 1], np.int64), "big")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(OnnxError, match=r"\(Add\): the integer constant 'big' \(beyond 2\^24"):
        import_model(model)
    # small ones are written in the spec
    small = np.array([2 ** 20, 1], np.int64)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(small, "big"))
    text = import_model(model).text
    assert "array([1048576, 1])" in text and "<the constant" not in text


def test_a_generated_spec_that_does_not_compile_is_an_import_error(tmp_path, monkeypatch,
                                                                   capsys) -> None:
    import dsl.onnx.importer as importer

    path = tmp_path / "relu.onnx"
    onnx.save_model(_relu_chain([("x", "y")]), str(path))
    broken = importer.Imported("model m\ninput x: f32[3]\noutput y = nope(x)\n", {})
    monkeypatch.setattr(importer, "import_model", lambda *a, **k: broken)
    assert main(["import", str(path), "-o", str(tmp_path / "r.dl")]) == 1
    err = capsys.readouterr().err
    assert "the generated spec does not compile (a dslrun bug): line 3:" in err
    assert "Traceback" not in err and not (tmp_path / "r.dl").exists()


def test_values_named_like_reserved_words_are_renamed() -> None:
    from dsl.lower.statements import RESERVED
    from dsl.onnx.importer import keywords

    assert set(RESERVED) <= keywords() and {"model", "if", "params", "None"} <= keywords()
    model = _relu_chain([("x", "training"), ("training", "step"), ("step", "y")])
    text = import_model(model).text
    assert "\nv_training = relu(x)\n" in text and "\nv_step = relu(v_training)\n" in text
    m = dsl.compile(text)
    np.testing.assert_array_equal(m(x=np.array([-1.0, 0.5, 2.0], np.float32))["y"],
                                  [0.0, 0.5, 2.0])


def test_batch_norm_running_statistics_are_frozen(tmp_path) -> None:
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    stats = {"scale": rng.normal(size=3), "bias": rng.normal(size=3),
             "mean": rng.normal(size=3), "var": rng.uniform(0.5, 2.0, 3)}
    node = helper.make_node("BatchNormalization", ["x", *stats], ["y"], epsilon=1e-3)
    graph = helper.make_graph(
        [node], "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
        [numpy_helper.from_array(a.astype(np.float32), k) for k, a in stats.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    text = import_model(model, "bn").text
    assert "param scale: [3]" in text and "param bias: [3]" in text
    assert "frozen w_mean: [3]" in text and "frozen var: [3]" in text  # `mean` is a builtin
    path = tmp_path / "bn.onnx"
    onnx.save_model(model, str(path))
    m = dsl.from_onnx(path)
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    (want,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_allclose(m(x=x)["y"], want, rtol=1e-5, atol=1e-6)


def test_an_unused_extra_opset_is_accepted() -> None:
    model = _relu_chain([("x", "y")])
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    assert "output y = relu(x)" in import_model(model).text
    # a node of that domain is refused, by name
    model.graph.node.append(helper.make_node("Normalizer", ["y"], ["z"], domain="ai.onnx.ml"))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [3]))
    with pytest.raises(OnnxError, match=r"\(Normalizer\): domain 'ai.onnx.ml' is not supported"):
        import_model(model)


def test_backend_recompiles_when_fixed_inputs_split_the_same_bytes_differently() -> None:
    from dsl.onnx.backend import DslBackend

    nodes = [helper.make_node("ReduceSum", ["x", "ax1"], ["r1"]),
             helper.make_node("ReduceSum", ["x", "ax2"], ["r2"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
           helper.make_tensor_value_info("ax1", TensorProto.INT64, ["n1"]),
           helper.make_tensor_value_info("ax2", TensorProto.INT64, ["n2"])]
    outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [f"{k}a", f"{k}b"])
            for k in ("r1", "r2")]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs),
                              opset_imports=[helper.make_opsetid("", 18)])
    rep = DslBackend.prepare(model)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    # ax1 + ax2 are the same bytes [0, 1, 0] both times
    r1, r2 = rep.run([x, np.array([0, 1], np.int64), np.array([0], np.int64)])
    assert r1.shape == (1, 1) and r2.shape == (1, 3)
    r1, r2 = rep.run([x, np.array([0], np.int64), np.array([1, 0], np.int64)])
    assert r1.shape == (1, 3) and r2.shape == (1, 1)
    np.testing.assert_array_equal(r1, [[3.0, 5.0, 7.0]])


def test_force_import_without_weights_removes_the_old_weights(tmp_path) -> None:
    cnn, relu = tmp_path / "cnn.onnx", tmp_path / "relu.onnx"
    onnx.save_model(small_cnn(), str(cnn))
    onnx.save_model(_relu_chain([("x", "y")]), str(relu))
    spec = tmp_path / "net.dl"
    assert main(["import", str(cnn), "-o", str(spec)]) == 0
    assert (tmp_path / "net.npz").is_file()
    assert main(["import", str(relu), "-o", str(spec)]) == 1  # both exist: not without --force
    assert (tmp_path / "net.npz").is_file()
    assert main(["import", str(relu), "-o", str(spec), "--force"]) == 0
    assert not (tmp_path / "net.npz").exists() and "relu(x)" in spec.read_text()


PAIR_CALLS = {"arithmetic": "{op}(x, x)", "unary": "{op}(x)", "comparison": "{op}(x, x)",
              "logical": "{op}(m, m)", "reduction": "{op}(x, axis = 1)",
              "softmax": "{op}(x, axis = -1)", "pool": "{op}(p, kernel = 2)"}


@pytest.mark.parametrize("kind,op,onnx_op", [
    (kind, op, onnx_op) for kind, group in ONE_TO_ONE.items() for op, onnx_op in group.items()])
def test_each_shared_pair_exports_to_its_onnx_op_and_imports_back(kind, op, onnx_op) -> None:
    from dsl.compiler import compile_spec

    call = "logical_not(m)" if op == "logical_not" else PAIR_CALLS[kind].format(op=op)
    text = ("model pair\ninput x: f32[4, 4]\ninput m: bool[3, 4]\ninput p: f32[1, 1, 4, 4]\n"
            f"output y = {call}\n")
    model = export_compiled(compile_spec(text, f"<{op}>", optimize=False)).model
    assert [n.op_type for n in model.graph.node] == [onnx_op, "Identity"]
    back = compile_spec(import_model(model, "back").text, "<back>", optimize=False)
    g = back.program.forward
    assert op in [g[i].op for i in g.topo_order()]
