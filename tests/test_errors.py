"""User mistakes through the real command line: every bad input ends with one compiler-style
message and exit status 1, never a traceback.

A located error prints `file:line:col: error: message`, then the source line and a caret
under the column. Errors without a source position (command-line flags, files, devices)
print one `error: ...` line. All cases run as `python -m dsl.cli` subprocesses, in parallel
(one module-scoped fixture), each in its own directory.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import gpu_usable

HEAD = """model m
input x: f32[B, 2]
input y: f32[B]
"""

LINREG = HEAD + """param w: [2] = zeros
objective loss = mean((x @ w - y) ** 2)
"""

QUADRATIC = """model q
param w: [2] = zeros
objective loss = sum((w - 1) ** 2)
optimizer sgd(lr = 0.1) minimize loss
"""

# a loop with the head `loop t in {}` on line 7 (the range starts at column 13)
LOOP = HEAD + """input n: i64[]
net f(x) {{
  h = x
  loop t in {} {{ h = h * 2 }}
  return h
}}
objective loss = mean(f(x))
"""


MLP = """model mlp
input x: f32[B, 2]
input lr: f32[] = 0.1
const H = 8
const NORM = false
const DEPTH = 2
net body(x) {
  h = x
  repeat layer i in 0 .. DEPTH {
    h = relu(dense(h, H))
  }
  if NORM { h = h / sqrt(mean(h * h) + 1e-5) }
  return dense(h, 2)
}
objective loss = mean(body(x)) * lr
"""


@dataclass
class Case:
    """One bad input: files to write, the dslrun arguments, where the error must point
    (file, line, col; None for errors without a position) and texts the message must hold."""

    id: str
    files: dict[str, str]
    args: list[str]
    where: tuple[str, int, int] | None
    says: tuple[str, ...]
    extra: dict[str, bytes] = field(default_factory=dict)


def spec(id: str, text: str, line: int, col: int, *says: str, cmd: str = "check",
         args: tuple[str, ...] = ()) -> Case:
    return Case(id, {"s.dl": text}, [cmd, "s.dl", *args], ("s.dl", line, col), says)


CASES: list[Case] = [
    # ------------------------------------------------------------------ syntax
    spec("syntax_missing_paren", HEAD + "objective loss = mean((x @ ones([2]) - y)\n", 4, 22,
         "missing ')'", "never closed"),
    spec("syntax_bad_token", HEAD + "objective loss = mean(x) $ 2\n", 4, 26,
         "unexpected character '$'"),
    spec("syntax_unclosed_brace", HEAD + "net f(x) {\n  return x\nobjective loss = mean(f(x))\n",
         4, 10, "missing '}'", "never closed"),
    spec("syntax_unmatched_brace", HEAD + "}\nobjective loss = mean(x)\n", 4, 1,
         "unmatched '}'"),
    spec("syntax_bad_number", HEAD + "objective loss = mean(x) * 1.2.3\n", 4, 31,
         "unexpected '.3'"),
    # ------------------------------------------------------------------ names
    spec("unknown_name", HEAD + "objective loss = mean(xx)\n", 4, 23,
         "unknown name 'xx'", "(did you mean 'x'?)"),
    spec("unknown_function", HEAD + "objective loss = maen(x)\n", 4, 18,
         "unknown function 'maen'", "(did you mean 'mae'?)"),
    spec("unknown_layer_option", HEAD + "objective loss = mean(dense(x, 3, bais = false))\n",
         4, 35, "'dense' has no argument 'bais'", "(did you mean 'bias'?)"),
    spec("unknown_op_option", HEAD + "objective loss = mean(softmax(x, axs = 1))\n", 4, 34,
         "softmax: unknown option 'axs'", "(did you mean 'axis'?)"),
    spec("unknown_initializer", HEAD + "param w: [2] = xavier_nromal\n"
         "objective loss = mean(x @ w)\n", 4, 16,
         "unknown initializer 'xavier_nromal'", "(did you mean 'xavier_normal'?)"),
    spec("unknown_initializer_option", HEAD + "param w: [2] = normal(sdt = 0.1)\n"
         "objective loss = mean(x @ w)\n", 4, 16,
         "initializer 'normal' has no option 'sdt'", "(did you mean 'std'?)"),
    spec("initializer_option_not_a_number", HEAD + "param w: [2] = normal(std = \"wide\")\n"
         "objective loss = mean(x @ w)\n", 4, 16,
         "initializer 'normal': option 'std' must be a number, got 'wide'"),
    spec("state_from_param_shape", HEAD + "param w: [2] = zeros\n"
         "optimizer avg(lr = 0.1) {\n  state s: [3] = param\n  param = s - lr * grad\n}\n"
         "objective loss = mean(x @ w)\noptimizer avg() minimize loss\n", 6, 18,
         "initial value of shape [2] does not fit f32[3]"),
    spec("random_option_not_a_number", HEAD + "param a: [3] = zeros\n"
         "objective loss = mean(x) + sum(normal([3], std = a))\n", 5, 32,
         "normal: options must be constant numbers"),
    spec("random_without_shape_as_init", HEAD + "param a: [3] = bernoulli(p = 0.5)\n"
         "objective loss = mean(x) + sum(a)\n", 4, 16, "bernoulli: missing argument 'shape'"),
    spec("unknown_train_setting", LINREG + "optimizer sgd(lr = 0.1) minimize loss\n"
         "train { bacth = 4 }\n", 7, 9, "unknown train setting 'bacth'",
         "(did you mean 'batch'?)"),
    spec("unknown_optimizer", LINREG + "optimizer adma(lr = 0.1) minimize loss\n", 6, 11,
         "unknown optimizer 'adma'", "(did you mean 'adam'?)"),
    spec("unknown_optimizer_option", LINREG + "optimizer adam(lr = 0.1, beta = 0.9) minimize "
         "loss\n", 6, 26, "optimizer 'adam' has no option 'beta'", "did you mean 'beta"),
    spec("unknown_objective", LINREG + "optimizer sgd(lr = 0.1) minimize los\n", 6, 1,
         "unknown objective 'los'", "(did you mean 'loss'?)"),
    spec("unknown_dtype", "model m\ninput x: f33[B, 2]\nobjective loss = mean(x)\n", 2, 10,
         "unknown dtype 'f33'", "(did you mean 'f32'?)"),
    spec("duplicate_definition", HEAD + "const K = 2\nconst K = 3\nobjective loss = mean(x)\n",
         5, 1, "duplicate definition of 'K'", "first defined at s.dl:4:1"),
    spec("two_model_lines", HEAD + "model n\nobjective loss = mean(x)\n", 4, 1,
         "a spec has one 'model' line"),
    spec("reserved_name", HEAD + "step = 3\nobjective loss = mean(x)\n", 4, 1,
         "'step' is reserved"),
    # ------------------------------------------------------------------ shapes and types
    spec("matmul_shapes", HEAD + "param w: [3, 4] = zeros\nobjective loss = mean(x @ w)\n",
         5, 23, "matmul: inner dimensions differ", "f32[B,2]", "f32[3,4]"),
    spec("broadcast_shapes", HEAD + "param w: [3] = zeros\nobjective loss = mean(x + w)\n",
         5, 23, "do not broadcast", "[B,2]", "[3]"),
    spec("float_labels", HEAD + "objective loss = cross_entropy(dense(x, 3), y)\n", 4, 18,
         "cross_entropy", "labels must be integers", "f32[B]"),
    spec("prelude_shape_error", HEAD + "objective loss = mse(dense(x, 3), y)\n", 4, 18,
         "mse", "do not broadcast", "[B,3]", "[B]"),
    spec("too_many_args", HEAD + "def f(a, b) { return a + b }\nobjective loss = mean(f(x, x, "
         "x))\n", 5, 23, "def 'f' takes 2 arguments, got 3"),
    spec("missing_arg", HEAD + "def f(a, b) { return a + b }\nobjective loss = mean(f(x))\n",
         5, 23, "def 'f' is missing argument 'b'"),
    spec("arg_given_twice", HEAD + "def f(a, b) { return a + b }\nobjective loss = mean(f(x, a "
         "= x))\n", 5, 28, "argument 'a' given twice"),
    spec("missing_objective", HEAD + "const K = 2\n", 1, 1, "missing objective"),
    spec("objective_not_scalar", HEAD + "objective loss = x * 2\n", 4, 18,
         "objective 'loss' must be a float scalar, got f32[B,2]"),
    spec("metric_not_float", HEAD + "objective loss = mean(x)\nmetric n = argmax(x, axis = "
         "-1)\n", 5, 12, "metric 'n' must be a float scalar, got i64[B]"),
    spec("const_depends_on_input", HEAD + "const K = x * 2\nobjective loss = mean(x)\n", 4, 1,
         "const 'K' must be a compile-time value", "depends on inputs"),
    spec("if_on_tensor", HEAD + "if x > 0 { z = 1 }\nobjective loss = mean(x)\n", 4, 4,
         "'if' condition must be a compile-time constant", "where("),
    spec("non_integer_dimension", HEAD + "param w: [2.5] = zeros\nobjective loss = mean(x)\n",
         4, 11, "a dimension must be an integer, got 2.5"),
    spec("symbolic_param_dimension", HEAD + "param w: [B] = zeros\nobjective loss = mean(x)\n",
         4, 11, "parameters need static shapes", "'B' is symbolic"),
    spec("unpack_count", HEAD + "a, b, c = split(x, 2, axis = -1)\nobjective loss = mean(a)\n",
         4, 1, "cannot unpack 2 values into 3 names"),
    spec("reshape_size", HEAD + "output o = reshape(x, [3, 3])\n", 4, 12,
         "reshape: cannot reshape [B,2]", "[3,3]"),
    spec("index_out_of_range", HEAD + "output o = x[:, 5]\n", 4, 12, "index 5 out of range"),
    spec("optimizer_without_params", HEAD + "objective loss = mean(x)\n"
         "optimizer adam(lr = 0.1) minimize loss\n", 5, 1, "has no parameters to train"),
    spec("bad_sampling", LINREG + "optimizer sgd(lr = 0.1) minimize loss\ntrain { sampling = "
         '"shufle" }\n', 7, 9, "sampling must be", "(did you mean 'shuffle'?)"),
    spec("bad_batch", LINREG + "optimizer sgd(lr = 0.1) minimize loss\ntrain { batch = 0 }\n",
         7, 9, "train setting 'batch' must be an integer >= 1, got 0"),
    # ------------------------------------------------------------------ data
    spec("bad_dataset_name", "model m\ndata digitz(seed = 0)\ninput x: f32[B, 64]\n"
         "objective loss = mean(x)\n", 2, 1, "unknown data set 'digitz'",
         "(did you mean 'digits'?)"),
    spec("unknown_data_option", "model m\ndata digits(test_fracton = 0.2)\n"
         "input x: f32[B, 64]\nobjective loss = mean(x)\n", 2, 1,
         "unknown option 'test_fracton'", "(did you mean 'test_fraction'?)"),
    # ------------------------------------------------------------------ include
    spec("include_missing_file", 'include "nothere.dl"\n' + HEAD + "objective loss = mean(x)\n",
         1, 1, "include: no file 'nothere.dl'"),
    Case("include_cycle",
         {"a.dl": 'include "b.dl"\n' + HEAD + "objective loss = mean(x)\n",
          "b.dl": 'include "a.dl"\n'},
         ["check", "a.dl"], ("b.dl", 1, 1), ("include cycle: a.dl -> b.dl -> a.dl",)),
    # ------------------------------------------------------------------ run time, located
    spec("nan_check", "model nanm\nparam w: [] = zeros\nobjective loss = log(w - 10)\n"
         "optimizer gd(lr = 0.1) minimize loss\n", 3, 18,
         "non-finite value produced by node", "(log)", cmd="train",
         args=("--nan-check", "--steps", "3")),
    # ------------------------------------------------------------------ without a position
    Case("set_unknown_name", {"s.dl": HEAD + "const H = 3\nobjective loss = mean(x) * H\n"},
         ["check", "s.dl", "--set", "HH=4"], None,
         ("--set HH: no const or input named 'HH'", "(did you mean 'H'?)")),
    Case("set_without_value", {"s.dl": LINREG}, ["check", "s.dl", "--set", "H"], None,
         ("--set needs NAME=VALUE",)),
    Case("missing_spec_file", {}, ["check", "nothere.dl"], None, ("nothere.dl: no such file",)),
    Case("unknown_spec_name", {}, ["check", "no_such_spec_anywhere"], None,
         ("no spec named 'no_such_spec_anywhere'",)),
    Case("spec_is_a_directory", {"d/x.txt": ""}, ["check", "d"], None,
         ("is a directory, not a spec file",)),
    Case("cupy_without_gpu", {"s.dl": QUADRATIC},
         ["train", "s.dl", "--backend", "cupy", "--steps", "1"], None,
         ("the cupy backend needs",)),
    Case("resume_not_an_npz", {"s.dl": QUADRATIC},
         ["train", "s.dl", "--resume", "bad.npz", "--steps", "1"], None,
         ("bad.npz is not a checkpoint (.npz) file",), extra={"bad.npz": b"hello\n"}),
    Case("resume_missing_file", {"s.dl": QUADRATIC},
         ["train", "s.dl", "--resume", "gone.npz", "--steps", "1"], None,
         ("checkpoint file gone.npz does not exist",)),
    Case("resume_and_init_from", {"s.dl": LINREG}, ["train", "s.dl", "--resume", "a.npz",
                                                    "--init-from", "b.npz"], None,
         ("--resume and --init-from exclude each other",)),
    Case("dump_after_unknown_pass", {"s.dl": LINREG}, ["graph", "s.dl", "--dump-after",
                                                       "simplfy"], None,
         ("unknown pass 'simplfy'", "(did you mean 'simplify'?)")),
    Case("nan_loss", {"s.dl": "model nanm\nparam w: [] = zeros\nobjective loss = log(w - 10)\n"
                      "optimizer gd(lr = 0.1) minimize loss\ntrain { steps = 5 }\n"},
         ["train", "s.dl"], None,
         ("training diverged at step 1", "'loss'", "is nan", "no checkpoint was written")),
    # ------------------------------------------------------------------ issue 7: first hour
    spec("set_negative_dim", MLP, 10, 14, "dense: a dimension must be a positive integer",
         "got -4 (--set H=-4)", args=("--set", "H=-4")),
    spec("set_zero_dim", MLP, 10, 14, "positive integer", "got 0", args=("--set", "H=0")),
    spec("const_dim_too_big", MLP.replace("const H = 8", "const H = 2 ** 70"), 10, 14,
         "of at most 2147483647", cmd="params"),
    spec("set_not_an_integer", MLP, 4, 1, "--set H=abc: const 'H' is an integer (declared 8)",
         "must be an integer", args=("--set", "H=abc")),
    spec("set_float_for_int", MLP, 4, 1, "must be an integer", args=("--set", "H=2.5")),
    spec("set_bool_not_true_false", MLP, 5, 1, "--set NORM=no: const 'NORM' is a boolean",
         "must be true or false", args=("--set", "NORM=no")),
    spec("set_input_not_a_number", MLP, 3, 1, "--set lr=abc: input 'lr' is f32[]",
         "must be a number", args=("--set", "lr=abc")),
    spec("unroll_too_large", MLP, 9, 3, "this 'repeat' runs 100000 times",
         "more than the limit of 200,000", "(--set DEPTH=100000)",
         args=("--set", "DEPTH=100000")),
    spec("recursive_def", HEAD + "def f(x) { return f(x) }\nobjective loss = mean(f(x))\n",
         4, 19, "'f' calls itself (f -> f)", "cannot be recursive"),
    spec("mutually_recursive_defs", HEAD + "def f(x) { return g(x) }\ndef g(x) { return f(x) }\n"
         "objective loss = mean(f(x))\n", 5, 19, "'f' calls itself (f -> g -> f)"),
    spec("net_without_return", HEAD + "net g(x) { h = dense(x, 2) }\n"
         "objective loss = mean(g(x))\n", 5, 23, "net 'g' returns nothing",
         "end the body of 'g' with 'return ...'"),
    spec("optimizer_never_assigns_param", LINREG + "optimizer lazy(lr = 0.1) {\n"
         "  state v = zeros_like(param)\n  v = v + grad\n}\noptimizer lazy() minimize loss\n",
         6, 1, "optimizer 'lazy' never assigns 'param'", "used at s.dl:10:1"),
    spec("optimizer_unknown_option_lists_them", LINREG + "optimizer adam(beta3 = 0.2) "
         "minimize loss\n", 6, 16, "has no option 'beta3'", "(did you mean 'beta2'?)",
         "its options are: lr, beta1, beta2, eps, weight_decay"),
    spec("mse_would_broadcast", HEAD + "objective loss = mse(dense(x, 1), y)\n", 4, 18,
         "mse: the prediction f32[B,1] and the target f32[B] have different shapes",
         "they would broadcast to [B, B]", "y[:, None]"),
    spec("bce_with_logits_shapes", HEAD + "objective loss = bce_with_logits(dense(x, 2), y)\n",
         4, 18, "bce_with_logits: the prediction f32[B,2]", "do not broadcast"),
    spec("prelude_bad_option_value", HEAD.replace("f32[B]", "i64[B]")
         + "objective loss = cross_entropy(dense(x, 3), y, smoothing_mode = \"bad\")\n",
         4, 18, "cross_entropy:", "smoothing_mode must be 'm-1' or 'm'"),
    spec("prelude_bool_option_not_bool", HEAD + "objective loss = mean(dense(x, 3, "
         "bias = \"yes\"))\n", 4, 35, "dense: 'bias' must be true or false, got str 'yes'"),
    spec("prelude_option_out_of_range", HEAD + "objective loss = mean(dropout(x, p = 1.5))\n",
         4, 23, "dropout: p must be in [0, 1)"),
    spec("prelude_option_wrong_kind", HEAD + "objective loss = mean(dropout(x, p = \"a\"))\n",
         4, 23, "dropout: '>=' cannot compare str 'a' with int 0"),
    spec("optimizer_bool_option", LINREG + "optimizer sgd(nesterov = 1) minimize loss\n",
         6, 15, "optimizer 'sgd': 'nesterov' must be true or false, got int 1"),
    spec("compare_string_with_number", HEAD + "const A = \"3\" >= 1\n"
         "objective loss = mean(x)\n", 4, 11, "'>=' cannot compare str '3' with int 1"),
    spec("constant_too_large", HEAD + "const N = 8\nconst E = eye(N)\n"
         "objective loss = mean(x)\n", 5, 11, "eye would make 1e+16 elements",
         "(--set N=100000000)", args=("--set", "N=100000000")),
    spec("loop_carry_changes_type", HEAD + "net f(x) {\n  h = x\n  loop t in 0 .. 3 { "
         "h = sum(h, axis = -1) }\n  return h\n}\nobjective loss = mean(f(x))\n", 6, 3,
         "'h' is carried by this loop and must keep its type: it enters as f32[B,2] and the "
         "body makes it f32[B]"),
    spec("emit_outside_a_loop", HEAD + "net f(x) {\n  emit x\n  return x\n}\n"
         "objective loss = mean(f(x))\n", 5, 3, "'emit' belongs in the body of a run-time"),
    spec("loop_counting_down", HEAD + "net f(x) {\n  h = x\n  loop t in 3 .. 1 { h = h * 2 }"
         "\n  return h\n}\nobjective loss = mean(f(x))\n", 6, 3, "no iteration",
         "loop t in reversed 1 .. 3"),
    spec("emit_needs_a_name", HEAD + "net f(x) {\n  h = x\n  loop t in 0 .. 3 { emit h * 2 }"
         "\n  return h\n}\nobjective loss = mean(f(x))\n", 6, 22, "emit EXPR as NAME"),
    spec("loop_checkpoint_zero", LOOP.format("0 .. 6, checkpoint = 0"), 7, 34,
         "'checkpoint = 0': a segment is 1 .. 6 iterations"),
    spec("loop_checkpoint_negative", LOOP.format("0 .. 6, checkpoint = -2"), 7, 34,
         "'checkpoint = -2': a segment is 1 .. 6 iterations"),
    spec("loop_checkpoint_longer_than_the_loop", LOOP.format("0 .. 6, checkpoint = 7"), 7, 34,
         "'checkpoint = 7': a segment is 1 .. 6 iterations"),
    spec("loop_checkpoint_not_an_integer", LOOP.format("0 .. 6, checkpoint = 2.5"), 7, 34,
         "'checkpoint = K' takes a compile-time integer, got float 2.5"),
    spec("loop_checkpoint_with_a_run_time_count", LOOP.format("0 .. n, max = 6, checkpoint = 2"),
         7, 30, "'checkpoint' needs a fixed trip count"),
    spec("loop_run_time_stop_needs_max", LOOP.format("0 .. n"), 7, 18,
         "this loop's stop is a run-time value (i64[])", "'max = N'"),
    spec("loop_run_time_stop_not_an_integer", LOOP.format("0 .. mean(h), max = 6"), 7, 18,
         "a loop's run-time stop is an integer scalar (i64[]), got f32[]"),
    spec("loop_max_of_a_fixed_stop", LOOP.format("0 .. 6, max = 8"), 7, 21,
         "'max' bounds a stop known only at run time"),
    spec("loop_unknown_option", LOOP.format("0 .. 6, chekpoint = 2"), 7, 21,
         "a loop has no option 'chekpoint'", "(did you mean 'checkpoint'?)"),
    spec("loop_until_not_a_bool", LOOP.format("0 .. 6 until sum(h)"), 7, 26,
         "'until' takes a bool scalar; this condition is f32[]"),
    spec("loop_until_reversed", LOOP.format("reversed 0 .. 6 until sum(h) > 1"), 7, 35,
         "an early-exit loop counts up"),
    spec("loop_count_names_a_carried_value", LOOP.format("0 .. n until sum(h) > 1, max = 6, "
                                                         "count = h"), 7, 55,
         "'count = h': 'h' is carried by this loop"),
    spec("constant_bad_arguments", HEAD + "const R = arange(0, 10, 0)\n"
         "objective loss = mean(x)\n", 4, 11, "arange: division by zero"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, cli_runner) -> dict[str, tuple]:
    """Every case run once, several at a time: id -> (CompletedProcess, case directory)."""
    root = tmp_path_factory.mktemp("errors")  # one mktemp: it is not thread-safe
    dirs = []
    for case in CASES:
        d = root / case.id
        for name, text in case.files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(text)
        for name, data in case.extra.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(data)
        d.mkdir(exist_ok=True)
        dirs.append(d)

    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 1) as pool:
        procs = pool.map(lambda c_d: cli_runner(c_d[0].args, c_d[1]), zip(CASES, dirs))
        return {c.id: (proc, d) for c, proc, d in zip(CASES, procs, dirs)}


def test_enough_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, results: dict[str, tuple]) -> None:
    if case.id == "cupy_without_gpu" and gpu_usable():
        pytest.skip("a GPU is usable here")
    proc, d = results[case.id]
    err = proc.stderr
    shown = f"\n--- stderr ---\n{err}--- stdout ---\n{proc.stdout}"
    assert "Traceback" not in err, shown
    assert proc.returncode == 1, f"exit status {proc.returncode}" + shown
    lines = err.rstrip("\n").splitlines()
    assert lines, "no message" + shown
    if case.where is None:
        assert lines[0].startswith("error: "), shown
        assert len(lines) == 1, "expected one line" + shown
        head = lines[0]
    else:
        file, line, col = case.where
        prefix = f"{file}:{line}:{col}: error: "
        assert lines[0].startswith(prefix), f"expected {prefix!r}" + shown
        head = lines[0]
        source = (d / file).read_text().splitlines()[line - 1].expandtabs(1)
        assert len(lines) >= 3 and lines[1] == "  " + source, "no source line" + shown
        caret = lines[2]
        assert caret.strip().startswith("^") and caret.index("^") == col + 1, \
            "the caret is not under the column" + shown
    for text in case.says:
        assert text in head or text in err, f"missing {text!r}" + shown


# ---------------------------------------------------------------- divergence keeps the checkpoint

DIVERGES = """model diverge
param w: [] = zeros
objective loss = log(10 - w)
optimizer gd(lr = 3) minimize loss
train { steps = 50, checkpoint_every = 1 }
"""


def test_nan_loss_keeps_last_good_checkpoint(dslrun, tmp_path: Path) -> None:
    """`log(10 - w)` minimized by big steps crosses w = 10 after a few steps: exit 1, the
    message names the step and the checkpoint of the last good step, which stays finite."""
    (tmp_path / "d.dl").write_text(DIVERGES)
    proc = dslrun("d.dl", "--quiet")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    msg = proc.stderr.strip()
    assert msg.startswith("error: training diverged at step "), msg
    bad_step = int(msg.split("at step ")[1].split(":")[0])
    assert bad_step > 1
    run_id = (tmp_path / "runs" / "diverge" / "latest").read_text().strip()
    ckpt = tmp_path / "runs" / "diverge" / run_id / "checkpoint.npz"
    assert (f"the last good checkpoint is runs/diverge/{run_id}/checkpoint.npz "
            f"(step {bad_step - 1})") in msg, msg
    from runtime.train.checkpoint import load_checkpoint

    variables, meta = load_checkpoint(ckpt)
    assert meta["step"] == bad_step - 1
    assert all(np.isfinite(v).all() for v in variables.values())
    before = ckpt.read_bytes()
    # a new run that diverges at once writes no checkpoint and leaves the earlier run alone
    (tmp_path / "d.dl").write_text(DIVERGES.replace("log(10 - w)", "log(w - 10)"))
    proc = dslrun("d.dl", "--quiet")
    assert proc.returncode == 1 and "training diverged at step 1" in proc.stderr, proc.stderr
    assert "no checkpoint was written" in proc.stderr
    assert ckpt.read_bytes() == before


# ---------------------------------------------------------------- the unroll budget

UNROLLS = """model unrolls
input x: f32[B, 4]
h = x
for t in 0 .. 30 { h = tanh(h) }
output o = h
"""


def test_the_unroll_budget_is_read_once_per_lowering(monkeypatch) -> None:
    from dsl.compiler import compile_spec
    from dsl.lower import statements

    reads: list[int] = []
    real = statements.max_unrolled_nodes
    monkeypatch.setattr(statements, "max_unrolled_nodes", lambda: reads.append(1) or real())
    compile_spec(UNROLLS, "u.dl")
    assert len(reads) == 2  # the train and the eval lowering, not once per iteration (58)


def test_a_bad_unroll_budget_is_one_line(cli, monkeypatch) -> None:
    Path("u.dl").write_text(UNROLLS)
    monkeypatch.setenv("DSLRUN_MAX_UNROLLED_NODES", "abc")
    status, out, err = cli("check", "u.dl")
    assert status == 1 and out == ""
    assert err == ("error: DSLRUN_MAX_UNROLLED_NODES='abc': the unroll budget must be a "
                   "positive integer (a number of graph nodes)\n")
