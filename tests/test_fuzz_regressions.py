"""Regression tests of the defects the front-end fuzz found (bench/fuzz.py, issue 11), each
with its minimal reproducer, and of the mistakes a careless user makes first: deep nesting,
very long lines, recursive defs and includes, includes of directories, devices and binary
files, zero, negative and overflowing dims, division by zero in constants, huge unrolled
loops and unknown unicode characters. Every one must be one positioned `dsl.Error`, fast.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import dsl
from dsl.cli import main

H = "model m\ninput x: f32[B, 2]\n"


def error_of(text: str, file: str = "<string>", **kw: object) -> str:
    """The message of the `dsl.Error` that compiling `text` raises (anything else fails)."""
    with pytest.raises(dsl.Error) as info:
        dsl.compile(text, file=file, **kw)
    return str(info.value)


def at(message: str, line: int, col: int | None = None) -> bool:
    """The message is positioned at line (and col) of its file."""
    head = message.split("\n")[0]
    where = head.split(": error:")[0]
    parts = where.rsplit(":", 2)
    return len(parts) == 3 and int(parts[1]) == line and (col is None or int(parts[2]) == col)


# ---------------------------------------------------------------- defects found by the fuzz


@pytest.mark.parametrize("text, line", [
    ("model m\nreturn true != 2\n", 2),                        # escaped as dsl.lower Return
    ("model m\nif true { return 1 }\nobjective l = 1.0\n", 2),
    ("model m\nupdate { return 1 }\nobjective l = 1.0\n", 2),
])
def test_return_outside_a_body(text: str, line: int) -> None:
    msg = error_of(text)
    assert "'return' is only allowed in the body of a def, net or procedure" in msg
    assert at(msg, line)


def test_option_given_a_tensor_needs_a_compile_time_value() -> None:
    # issue 11: `keepdims = y` with y a tensor compiled, with a tensor as the attribute
    msg = error_of(H + "y = x * 2\nobjective loss = mean(sum(x, axis = -1, keepdims = y))\n")
    assert "sum: option 'keepdims' needs a value known at compile time" in msg
    assert at(msg, 4, 23)
    msg = error_of(H + "objective loss = mean(sum(x, axis = [x, 1]))\n")  # TypeError in %
    assert "option 'axis' needs a value known at compile time" in msg and at(msg, 3)


@pytest.mark.parametrize("expr, says", [
    ("sum(x, axis = 1e-300)", "sum: an axis is an integer known at compile time, got 1e-300"),
    ("softmax(x, axis = 1.5)", "softmax: an axis is an integer known at compile time"),
    ("sum([1.0, 2.0], axis = 1e-300)", "sum: an axis is an integer"),      # NumPy TypeError
    ("sum(x, axis = 1, keepdims = 1)", "option 'keepdims' is true or false, got 1"),
    ("sum([1.0, 2.0], axis = 0, keepdims = 3)", "option 'keepdims' is true or false, got 3"),
])
def test_axis_and_flag_options_are_checked(expr: str, says: str) -> None:
    msg = error_of(H + f"objective l = mean({expr})\n")
    assert says in msg and at(msg, 3, 20)


def test_initial_value_holding_a_tensor() -> None:
    # float() argument must be ... not 'Val' (one_neuron + change_shape)
    msg = error_of("model m\ninput x: [1] = [0.5 -1.0, ]\nparam w: [] = [x -0.2, ]\n"
                   "objective l = mean(w)\n")
    assert "an initial value must be a constant or an initializer" in msg and at(msg, 3, 15)


@pytest.mark.parametrize("shape, says", [
    ("[0.5, ]", "reshape: a dimension is an integer, -1 or a symbolic dimension, got 0.5"),
    ("3", "reshape: the shape is a list of dimensions"),
    ("[-2, 1]", "a dimension must be a non-negative integer"),
])
def test_reshape_target_is_checked(shape: str, says: str) -> None:
    # sequence item 0: expected str instance, float found (diffusion + replace_number)
    msg = error_of(H + f"objective l = mean(reshape(x, {shape}))\n")
    assert says in msg and at(msg, 3, 20)


@pytest.mark.parametrize("call, says", [
    ("conv2d(x, 2, kernel = 1e-300)", "expected an integer or a pair of integers"),
    ("conv2d(x, 2, kernel = 3, padding = 0.5)", "padding must be non-negative ints"),
    ("max_pool2d(x, kernel = 2.5)", "kernel must be an int or a pair of ints, got 2.5"),
])
def test_conv_and_pool_sizes_that_are_not_integers(call: str, says: str) -> None:
    # TypeError at runtime/ops/conv.py in _pair (lenet + replace_number)
    msg = error_of(f"model m\ninput x: f32[B, 1, 4, 4]\nobjective l = mean({call})\n")
    assert says in msg and at(msg, 3, 20)


@pytest.mark.parametrize("expr, says", [
    ("transpose(x, [1.5, 0])", "transpose: axes (1.5, 0) are not a permutation of rank 2"),
    ("transpose(sum(x), [0])", "are not a permutation of rank 0"),      # ZeroDivisionError
    ("transpose(x, 1)", "transpose: axes is a list of axes"),
    ("transpose(x, [1, 99999999999999999999999])", "are not a permutation"),  # IndexError
    ("split(x, 2, axis = 1.5)[0]", "split: axis is one integer known at compile time"),
    ("split(sum(x), 2)[0]", "split: axis -1 out of range for rank 0"),
    ("concat(x, x, axis = 0.5)", "concat: axis is one integer known at compile time"),
    ("stack(x, x, axis = 1.5)", "stack: axis is one integer known at compile time"),
])
def test_shape_builtins_with_axes_that_are_not_integers(expr: str, says: str) -> None:
    # TypeError at runtime/ops/shape_ops.py in _transpose_shape (rnn + drop_line, ...)
    msg = error_of(H + f"objective l = mean({expr})\n")
    assert says in msg and at(msg, 3), msg


@pytest.mark.parametrize("expr", ["mean(normal)", "mean([normal])", "mean([1.0, [2.0]])"])
def test_reduction_of_what_is_not_numbers(expr: str) -> None:
    # TypeError: unsupported operand type(s) for /: 'InitSpec' and 'int' (perceptron + ...)
    msg = error_of(H + f"objective l = mean(x) + {expr}\n")
    assert "mean: expects a tensor or numbers, got" in msg and at(msg, 3, 25)


def test_slice_step_zero() -> None:
    # ValueError: slice step cannot be zero
    for idx in ("[:, ::0]", "[::0]"):
        msg = error_of(H + f"objective l = mean(x{idx})\n")
        assert "getitem: a slice step cannot be zero" in msg and at(msg, 3, 20)


def test_constant_index_out_of_range_of_a_run_time_dim() -> None:
    # IndexError in _getitem_fwd (clip_contrastive + change_shape): B is known only at run
    model = dsl.compile("model m\ndata random(n = 16, shape = [3, 4], classes = 2)\n"
                        "input x: f32[B, 3, 4]\nparam w: [4] = zeros\nz = x[2147483648, 1]\n"
                        "objective loss = mean(z * w)\noptimizer sgd(lr = 0.1) minimize loss\n"
                        "train { batch = 8, steps = 2 }\n", file="clip.dl")
    with pytest.raises(dsl.Error) as info:
        model.fit(steps=1, evaluate=False)
    assert "index 2147483648 is out of bounds for axis 0 with size 8 at clip.dl:5:5" \
        in str(info.value)


@pytest.mark.parametrize("expr, says", [
    ("randint(5, 0, [2])", "random_randint: needs low < high"),            # ValueError
    ("randint(0.5, 3, [2])", "randint: low is an integer known at compile time"),
    ("uniform([2], low = 1.0, high = 0.0)", "random_uniform: needs low <= high"),
    ("bernoulli([2], p = 2.0)", "random_bernoulli: needs p from 0 to 1"),
    ("normal([2], std = -1.0)", "random_normal: needs mean finite and std finite and >= 0"),
])
def test_random_options_are_checked_when_compiling(expr: str, says: str) -> None:
    msg = error_of(H + f"objective l = mean(x) + mean({expr} * 1.0)\n")
    assert says in msg and at(msg, 3, 30), msg


@pytest.mark.parametrize("expr, says", [
    ("cross_entropy(x * w, y + 5)", "softmax_cross_entropy: a label: index 6 is out of range"),
    ("cross_entropy(x * w, y - 5)", "index -5 is out of range"),   # NumPy wrapped: silent
    ("mean(one_hot(y + 100, depth = 2))", "one_hot: index 101 is out of range"),  # IndexError
])
def test_labels_out_of_range_when_training(expr: str, says: str) -> None:
    model = dsl.compile("model m\ndata random(n = 16, shape = [2], classes = 2)\n"
                        "input x: f32[B, 2]\ninput y: i64[B]\nparam w: [2] = zeros\n"
                        f"objective l = mean(x * w) + {expr}\n"
                        "optimizer sgd(lr = 0.1) minimize l\ntrain { batch = 4, steps = 2 }\n")
    with pytest.raises(dsl.Error, match=says.replace("(", r"\(")):
        model.fit(steps=1, evaluate=False)


# ---------------------------------------------------------------- deep nesting, long lines


@pytest.mark.parametrize("name, text", [
    ("unary", "model m\nconst a = " + "-" * 5000 + "1\nobjective l = a * 1.0\n"),
    ("not", "model m\nconst a = " + "not " * 5000 + "true\nobjective l = 1.0\n"),
    ("chain", "model m\nconst a = " + "+".join(["1"] * 20000) + "\nobjective l = a * 1.0\n"),
    ("power", "model m\nconst a = " + "**".join(["1"] * 5000) + "\nobjective l = a * 1.0\n"),
    ("calls", H + "h = " + "relu(" * 3000 + "x" + ")" * 3000 + "\nobjective l = mean(h)\n"),
    ("lists", "model m\nconst a = " + "[" * 5000 + "1" + "]" * 5000 + "\nobjective l = 1.0\n"),
    ("indexes", H + "h = x" + "[:, :]" * 3000 + "\nobjective l = mean(h)\n"),
    ("blocks", "model m\n" + "if true {\n" * 2000 + "b = 1\n" + "}\n" * 2000
     + "objective l = 1.0\n"),
])
def test_deep_nesting_is_a_positioned_error(name: str, text: str) -> None:
    # RecursionError in the recursive lowering walk before the nesting limit
    msg = error_of(text)
    assert "nested more than 100 levels deep" in msg, msg
    assert at(msg, 2) or at(msg, 3) or name == "blocks"


def test_defs_inside_defs_with_deep_expressions() -> None:
    # RecursionError: 20 defs called inside one another, each 30 calls deep
    body = "".join(f"def f{k}(x) {{ return " + "relu(" * 30 + f"f{k + 1}(x)" + ")" * 30
                   + " }\n" for k in range(20))
    msg = error_of(H + body + "def f20(x) { return x }\nobjective l = mean(f0(x))\n")
    assert "this statement expands too deeply to compile" in msg and at(msg, 24, 1)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("tail, line", [
    ("state s: [2] = zeros\nupdate { s = f0(s) }\nobjective l = mean(x)\n", 25),
    ("param w: [2] = zeros\nobjective l = mean(x * w)\n"
     "optimizer deep(lr = 0.1) { param = param - lr * f0(grad) }\n"
     "optimizer deep(lr = 0.1) minimize l\n", 27),
])
def test_deep_expansion_in_an_update_or_an_optimizer_rule(tail: str, line: int) -> None:
    # RecursionError escaped: update blocks and optimizer rules are lowered after the walk
    body = "".join(f"def f{k}(x) {{ return " + "relu(" * 30 + f"f{k + 1}(x)" + ")" * 30
                   + " }\n" for k in range(20))
    msg = error_of(H + body + "def f20(x) { return x }\n" + tail)
    assert "this statement expands too deeply to compile" in msg and at(msg, line, 1)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_deep_parentheses_are_only_grouping() -> None:
    # 5000 nested parentheses make no AST levels: they compile
    text = "model m\nconst a = " + "(" * 5000 + "1" + ")" * 5000 + "\nobjective l = a * 1.0\n"
    assert dsl.compile(text).program.objectives == ["l"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_nesting_that_real_specs_use_compiles() -> None:
    text = H + "h = " + "relu(" * 40 + "x" + ")" * 40 + "\nobjective l = mean(h)\n"
    assert dsl.compile(text).program.objectives == ["l"]


def test_long_line_is_quoted_around_the_column() -> None:
    text = H + "h = x" + " + x" * 30000 + " + q\nobjective l = mean(h)\n"
    msg = error_of(H + "h = x" + " + x" * 80 + " + q\nobjective l = mean(h)\n")
    assert "unknown name 'q'" in msg
    quoted, caret = msg.split("\n")[1:3]
    assert len(quoted) < 140 and quoted.rstrip().endswith("+ q")
    assert caret.index("^") == quoted.rindex("q")
    quoted = error_of(text).split("\n")[1]  # a 120k-character line
    assert len(quoted) < 140 and quoted.strip().startswith("h = x + x"), quoted


# ---------------------------------------------------------------- recursion, includes


def test_recursive_defs_are_errors() -> None:
    msg = error_of(H + "def f(x) { return g(x) }\ndef g(x) { return f(x) }\n"
                   "objective l = mean(f(x))\n")
    assert "'f' calls itself (f -> g -> f)" in msg and at(msg, 4, 19)
    msg = error_of(H + "net f(x) { return f(x) }\nobjective l = mean(f(x))\n")
    assert "'f' calls itself" in msg and at(msg, 3)


def test_include_recursion_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "self.dl").write_text('include "self.dl"\n')
    (tmp_path / "b.dl").write_text('include "c.dl"\n')
    (tmp_path / "c.dl").write_text('def f(x) { return x }\ninclude "b.dl"\n')
    main_file = str(tmp_path / "m.dl")
    for inc in ("self.dl", "b.dl"):
        msg = error_of(H + f'include "{inc}"\nobjective l = mean(x)\n', file=main_file)
        assert "include cycle" in msg


@pytest.mark.parametrize("target, says", [
    ("dir", "is a directory, not a spec file"),
    ("", "is a directory, not a spec file"),
    ("bin.dl", "not a text file"),
    ("nul.dl", "not a text file (it holds NUL bytes)"),
    ("/dev/zero", "is not a regular file, not a spec file"),    # reading it never ended
])
def test_include_of_what_is_not_a_spec(tmp_path: Path, target: str, says: str) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "bin.dl").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "nul.dl").write_bytes(b"\0" * 64)
    t0 = time.monotonic()
    msg = error_of(H + f'include "{target}"\nobjective l = mean(x)\n',
                   file=str(tmp_path / "m.dl"))
    assert says in msg and at(msg, 3, 1), msg
    assert time.monotonic() - t0 < 5


# ---------------------------------------------------------------- dims, numbers, loops


def test_negative_dim_in_an_input_type_on_the_command_line(tmp_path: Path, capsys) -> None:
    # issue 11: `dslrun check` died in np.empty
    spec = tmp_path / "neg.dl"
    spec.write_text("model m\ninput x: f32[B, -1, 8, 8]\ninput y: i64[B]\n"
                    "objective loss = mean(x)\n")
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "neg.dl:2:17: error: a dimension must be a positive integer" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("decl, says", [
    ("input z: f32[B, 0]", "a dimension must be a positive integer"),
    ("param w: [0] = zeros", "a dimension must be a positive integer"),
    ("input z: f32[B, 99999999999999999999999]", "of at most 2147483647"),
    ("param w: [2147483647, 2147483647] = zeros", "elements, more than the limit"),
    ("z = zeros([-3])", "a dimension must be a non-negative integer"),
])
def test_zero_negative_and_overflowing_dims(decl: str, says: str) -> None:
    msg = error_of(H + decl + "\nobjective l = mean(x)\n")
    assert says in msg and at(msg, 3)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_huge_static_fill_is_not_computed_at_compile_time() -> None:
    # MemoryError: zeros([100000, 100000, 100000]) was a NumPy array made while compiling
    m = dsl.compile(H + "z = zeros([100000, 100000, 100000])\noutput s = z\n"
                    "objective l = mean(x)\n")
    assert "full" in m.graph_text("forward")


@pytest.mark.parametrize("expr, says", [
    ("1 / 0", "division by zero"),
    ("1 // 0", "by zero"),
    ("1 % 0", "modulo by zero"),
    ("1.0 / 0.0", "float division by zero"),
    ("0 ** -1", "cannot be raised to a negative power"),
    ("linspace(0, 1, 3) / 0", "divide by zero"),
    ("10 ** 10 ** 10", "has about 10,000,000,000 digits"),     # never finished
    ("2 ** 100000", "has about 30,103 digits"),
])
def test_constant_arithmetic_errors(expr: str, says: str) -> None:
    t0 = time.monotonic()
    msg = error_of(f"model m\nconst a = {expr}\nobjective l = a * 1.0\n")
    assert says in msg and at(msg, 2, 11), msg
    assert time.monotonic() - t0 < 5


def test_products_of_huge_integers_stop() -> None:
    lines = "".join(f"const a{k + 1} = a{k} * a{k}\n" for k in range(40))
    msg = error_of("model m\nconst a0 = 2 ** 200\n" + lines + "objective l = 1.0\n")
    assert "integers computed at compile time have at most 256" in msg


@pytest.mark.parametrize("loop", [
    "for i in 0 .. 100000000 { h = h + 1 }",
    "repeat layer i in 0 .. 100000000 { h = relu(dense(h, 2)) }",
    "for i in 0 .. 1000 { for j in 0 .. 1000 { h = h + 1 } }",
    "for i in 0 .. 10 ** 18 { h = h + 1 }",
])
def test_huge_unrolled_loop_names_its_size_fast(loop: str) -> None:
    t0 = time.monotonic()
    msg = error_of(H + f"h = x\n{loop}\nobjective l = mean(h)\n")
    assert "times and unrolls into about" in msg and "more than the limit" in msg
    assert at(msg, 4, 1)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("char", ["λ", "\u00a0", "\u200b", "\ufeff", "→", "\x00"])
def test_unknown_unicode_characters(char: str) -> None:
    msg = error_of(H + f"objective l = mean(x){char}\n")
    assert "unexpected character" in msg and at(msg, 3, 22)


def test_long_chain_in_a_spec_file_on_the_command_line(tmp_path: Path, capsys) -> None:
    # RecursionError while pickling the AST for the parse cache (and while lowering it)
    spec = tmp_path / "chain.dl"
    spec.write_text(H + "h = " + " + ".join(["x"] * 3000) + "\nobjective l = mean(h)\n")
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "chain.dl:3:5: error: this is nested more than 100 levels deep" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- found in the training runtime


def test_a_float_where_a_shape_belongs() -> None:
    # TypeError in shape_list: `normal(0.1)` binds 0.1 to the random builtin's shape
    msg = error_of(H + "param W: f32[2, 3] = normal(0.1)\nobjective l = mean(x @ W)\n")
    assert "a shape must be an integer or a list of dimensions" in msg and at(msg, 3, 22)


def test_a_random_data_set_too_large_for_the_machine(tmp_path: Path, capsys) -> None:
    # MemoryError in the generator: the inputs were drawn before their size was looked at
    spec = tmp_path / "big.dl"
    spec.write_text("model m\ndata random(n = 256, shape = [2147483647, 32, 32])\n"
                    "input x: f32[B, 2]\ninput y: i64[B]\nobjective l = mean(x)\n")
    start = time.monotonic()
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "random inputs of data set 'random'" in err and "lower n or shape" in err
    assert "Traceback" not in err and time.monotonic() - start < 10


@pytest.mark.parametrize("aug, says", [
    ("contrast(low = 1e300, high = 1.2)", "option 'low' must be in [0, 1000], got 1e+300"),
    ("contrast(low = 1.1, high = 0.9)", "low = 1.1 is above high = 0.9"),
    ("hflip(p = 2)", "option 'p' must be in [0, 1], got 2"),
    ("crop(pad = 1.5)", "option 'pad' must be an integer, got 1.5"),
    ("noise(std = -1)", "option 'std' must be in [0, 1000], got -1"),
])
def test_augmentation_values_are_checked_at_compile_time(aug: str, says: str) -> None:
    # ValueError from rng.uniform at the first training step
    msg = error_of("model m\ndata digits(image = true)\ninput x: f32[B, 1, 8, 8]\n"
                   "input y: i64[B]\nparam w: [1] = zeros\nobjective l = mean(x) * w[0]\n"
                   f"optimizer sgd(lr = 0.1) minimize l\ntrain {{ augment = [{aug}] }}\n")
    assert says in msg and at(msg, 8), msg


def test_every_augmentation_option_has_a_range() -> None:
    from runtime.train.augment import AUGMENTATIONS, OPTION_RANGES

    options = {o for _, defaults in AUGMENTATIONS.values() for o in defaults}
    assert options == set(OPTION_RANGES)


def test_a_tensor_passed_where_a_def_takes_a_number_says_which_parameter() -> None:
    # layer_norm(x, eps, scale, shift): the user's g lands on eps
    text = (H + "param g: [2] = ones\nparam b: [2] = zeros\n"
            "objective l = mean(layer_norm(x, g, b))\n")
    msg = error_of(text)
    assert msg.count("layer_norm:") == 1 and "option 'eps' must be a constant" in msg
    assert "argument 2 (a tensor) binds to 'eps'" in msg and at(msg, 5, 20)


def test_an_input_default_of_the_wrong_shape_is_an_error_at_the_default() -> None:
    # compiled, then check-grad said "input 'x' of check-grad has type f64[3], but the fed
    # array has shape (2,)" with no position
    msg = error_of("model m\nconst D = 3\ninput x: f32[D] = [-1.0, 2.0]\nparam w: [D] = zeros\n"
                   "objective l = sum(w * x)\n")
    assert "the default of input 'x' has shape [2], but the input is f32[3]" in msg
    assert at(msg, 3, 19)


def test_an_input_nothing_feeds_is_an_error_at_its_declaration(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "nodata.dl"
    spec.write_text("model m\ninput x: f32[B, 2]\nparam w: [2] = zeros\n"
                    "objective l = mean(x * w)\noptimizer sgd(lr = 0.1) minimize l\n")
    for command in (["check"], ["train", "--out", str(tmp_path / "run")]):
        assert main([*command, str(spec)]) == 1
        err = capsys.readouterr().err
        assert "nodata.dl:2:1: error: phase 'train' needs input 'x'" in err, err
        assert "give the input a default value" in err and "Traceback" not in err


# ---------------------------------------------------------------- constants that do not fit

O = "optimizer sgd(lr = 0.1) minimize l\n"


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("default, says", [
    ("[1e30, 1]", "the constant 1e+30 does not fit i32 (from -2147483648 to 2147483647)"),
    ("[-3e9, 1]", "the constant -3e+09 does not fit i32"),
    ("[1.5, 1]", "the constant 1.5 is not a whole number, so it does not fit i32"),
    ("[2147483648, 1]", "the integer 2147483648 does not fit i32"),
])
def test_an_input_default_that_does_not_fit_its_integer_dtype_is_an_error_at_the_default(
        default: str, says: str) -> None:
    # [1e30, 1] compiled and fed [-2147483648, 1]; the fit error pointed at the declaration
    msg = error_of(f"model m\ninput x: i32[2] = {default}\nparam w: [2] = zeros\n"
                   "objective l = sum(w * cast(x, \"f32\"))\n" + O)
    assert says in msg and at(msg, 2, 19), msg


@pytest.mark.filterwarnings("error")
def test_whole_floats_still_fill_an_integer_input_and_the_int64_edges_fit() -> None:
    import numpy as np

    compiled = dsl.compile("model m\ninput x: i64[3] = [3.0, -9.2e18, 1]\nparam w: [3] = zeros\n"
                           "objective l = sum(w * cast(x, \"f32\"))\n" + O)
    fed = compiled.program.input_defaults["x"]
    assert fed.dtype == np.int64 and fed.tolist() == [3, -9200000000000000000, 1]
    msg = error_of("model m\ninput x: i64[2] = [9.3e18, 1]\nparam w: [2] = zeros\n"
                   "objective l = sum(w * cast(x, \"f32\"))\n" + O)
    assert "the constant 9.3e+18 does not fit i64" in msg and at(msg, 2, 19)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("decl, line, col, says", [
    ("param w: [2] = 1e300\n", 3, 16, "the constant 1e+300 does not fit f32"),
    ("state s: [2] = 1e300\n", 3, 16, "the constant 1e+300 does not fit f32"),
    ("state s: i32[2] = 0.5\n", 3, 19, "the constant 0.5 is not a whole number"),
])
def test_an_initial_value_that_does_not_fit_is_an_error_not_inf(
        decl: str, line: int, col: int, says: str) -> None:
    # param w: [2] = 1e300 became inf with a RuntimeWarning
    msg = error_of(H + decl + "param v: [2] = zeros\nobjective l = mean(x * v)\n" + O)
    assert says in msg and at(msg, line, col), msg


@pytest.mark.filterwarnings("error")
def test_an_optimizer_state_fill_that_does_not_fit_is_an_error_at_the_optimizer() -> None:
    # adagrad's `state s = full_like(param, initial)` made inf with a RuntimeWarning
    msg = error_of(H + "param w: [2] = zeros\nobjective l = mean(x * w)\n"
                   "optimizer adagrad(initial = 1e300) minimize l\n")
    assert "adagrad: the constant 1e+300 does not fit f32" in msg and at(msg, 5, 1), msg
    # a tensor fill failed when the state was first read, with no position
    msg = error_of(H + "param w: [2] = zeros\nobjective l = mean(x * w)\n"
                   "optimizer mine(lr = 0.1) {\n    state s = full_like(param, grad)\n"
                   "    param = param - lr * s\n}\noptimizer mine() minimize l\n")
    assert "full_like: the value must be a number known at compile time" in msg
    assert at(msg, 6, 32), msg


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("fill, says", [
    ("full([200000000], 1e300)", "does not fit f32"),  # a `full` node: overflowed when run
    ("full_like(x, 1e300)", "does not fit f32"),
    ("full([3], \"a\")", "expected a number for f32, got str 'a'"),  # a raw ValueError
])
def test_a_fill_value_that_does_not_fit_is_an_error_at_the_fill(fill: str, says: str) -> None:
    msg = error_of(H + f"param w: [2] = zeros\nobjective l = mean(x * w) + mean({fill})\n" + O)
    assert says in msg and at(msg, 4, 34), msg


def test_randint_bounds_beyond_int64_are_an_error_at_the_call() -> None:
    # compiled, then NumPy said "high is out of bounds for int64" at run time, no position
    body = "param w: [3] = zeros\nobjective l = mean(x[:, 0:1] * w * cast({}, \"f32\"))\n" + O
    msg = error_of(H + body.format("randint(0, 2**70, [3])"))
    assert "random_randint: needs low < high" in msg and "high = 1180591620717411303424" in msg
    assert at(msg, 4, 41), msg
    msg = error_of(H + body.format("randint(-2**63 - 1, 0, [3])"))
    assert "random_randint: needs" in msg and at(msg, 4, 41), msg
    dsl.compile(H + body.format("randint(-2**63, 2**63, [3])"))  # the full int64 range
