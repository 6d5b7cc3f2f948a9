"""The fuzz cases of issue 11 and the contract they are held to.

A case is spec text made from a seed: a shipped spec (`specs/`) with one to three mutations
(`MUTATIONS`: tokens deleted, duplicated and swapped, numbers replaced by 0, -1, huge, nan and
inf, names swapped, shape dims and option names changed, brackets dropped, lines dropped or
doubled, a unicode character inserted), a random program walked from the grammar
(`grammar_program`: every rule of `grammar/dsl.lark`, tokens from a small vocabulary), or a
plausible model (`plausible_program`: data, a net of layers, an objective, an optimizer) that
usually compiles and trains.

`run_case` holds a case to the contract: `dsl.compile` succeeds or raises `dsl.Error`; a spec
that compiles trains two steps and passes a small `check-grad` (two parameters, one probe
each, on four rows) with only `dsl.Error`s. Anything else is an escape: a bug. Used by
`bench/fuzz.py` (10,000 cases, each in a worker with a time limit) and `tests/test_fuzz.py`
(hypothesis, a bounded number of examples).
"""

from __future__ import annotations

import functools
import math
import random
import re
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
POSITIONED = re.compile(r"(?m)^\S*:\d+:\d+: error:|\bat \S+:\d+:\d+|\S+\.dl:\d+:\d+")

TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|\d+\.(?!\.)\d*(?:[eE][+-]?\d+)?'
                   r'|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?|[A-Za-z_]\w*|\.\.\.?'
                   r'|\*\*|//|[<>=!]=|\n|[ \t]+|.', re.S)
NUMBER = re.compile(r"\d|\.\d")
NAME = re.compile(r"[A-Za-z_]\w*$")
NUMBERS = ("0", "-1", "1e300", "99999999999999999999999", "nan", "inf", "-inf", "1e-300",
           "2147483648", "0.5", "1e39", "3")
DIMS = ("0", "-1", "1", "B", "N", "2147483648", "1e9", "3.5", "...", "x", "B, B")
UNICODE = ("→", "λ", "é", "\u200b", "\u00a0", "∑", "“", "😀", "\ufeff", "ℝ")
VOCAB = ("x", "y", "h", "B", "H", "N", "T", "loss", "acc", "dense", "relu", "tanh", "sum",
         "mean", "softmax", "axis", "keepdims", "lr", "adam", "sgd", "params", "weights",
         "shape", "reshape", "concat", "zeros", "normal", "grad", "step", "epoch", "training",
         "conv2d", "layer_norm", "batch_norm", "dropout", "cross_entropy", "mse", "take",
         "stack", "where", "arange", "linspace", "transpose", "flatten", "param", "train",
         "data", "nan", "inf", "f32", "i64", "f64", "bool")


@dataclass(frozen=True)
class Case:
    """One fuzz case: where it came from (for the report) and its text."""

    origin: str
    text: str


@dataclass(frozen=True)
class Outcome:
    """What a case did: `kind` is ok, user (an error with file:line:col), user_nopos,
    escape or hang; `stage` is compile, train or check-grad; an escape has its exception
    type and innermost frame (`where`), the defect's key."""

    kind: str
    stage: str = ""
    message: str = ""
    where: str = ""

    @property
    def defect(self) -> str:
        return f"{self.message.split(':')[0]} at {self.where}"


# ---------------------------------------------------------------- sources


@functools.lru_cache(maxsize=1)
def shipped() -> tuple[tuple[str, str], ...]:
    """(name, text) of every shipped spec, bench specs included."""
    root = ROOT / "specs"
    return tuple((p.relative_to(root).with_suffix("").as_posix(), p.read_text())
                 for p in sorted(root.rglob("*.dl")))


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def _significant(toks: list[str]) -> list[int]:
    return [i for i, t in enumerate(toks) if t.strip() and not t.startswith("#")]


def _names(toks: list[str]) -> list[str]:
    return sorted({t for t in toks if NAME.match(t)})


def delete_token(toks: list[str], rng: random.Random) -> None:
    del toks[rng.choice(_significant(toks))]


def duplicate_token(toks: list[str], rng: random.Random) -> None:
    i = rng.choice(_significant(toks))
    toks.insert(i, toks[i] + " ")


def swap_tokens(toks: list[str], rng: random.Random) -> None:
    sig = _significant(toks)
    k = rng.randrange(len(sig))
    j = sig[min(k + 1, len(sig) - 1)] if rng.random() < 0.6 else rng.choice(sig)
    i = sig[k]
    toks[i], toks[j] = toks[j], toks[i]


def replace_number(toks: list[str], rng: random.Random) -> None:
    nums = [i for i in _significant(toks) if NUMBER.match(toks[i])]
    if not nums:
        return replace_name(toks, rng)
    toks[rng.choice(nums)] = rng.choice(NUMBERS)


def replace_name(toks: list[str], rng: random.Random) -> None:
    names = [i for i in _significant(toks) if NAME.match(toks[i])]
    pool = _names(toks) + list(VOCAB)
    toks[rng.choice(names)] = rng.choice(pool)


def change_shape(toks: list[str], rng: random.Random) -> None:
    """A dim inside `[...]` replaced, dropped or added."""
    opens = [i for i, t in enumerate(toks) if t == "["]
    if not opens:
        return replace_number(toks, rng)
    i = rng.choice(opens) + 1
    j = i
    while j < len(toks) and toks[j] not in ("]", ",", "\n"):
        j += 1
    what = rng.randrange(3)
    if what == 0:
        toks[i:j] = [rng.choice(DIMS)]
    elif what == 1 and j < len(toks) and toks[j] == ",":
        del toks[i:j + 1]
    else:
        toks.insert(i, rng.choice(DIMS) + ", ")


def change_option(toks: list[str], rng: random.Random) -> None:
    """The name of a `name = value` (a keyword argument or setting) replaced by another one
    (or a typo of it)."""
    sig = _significant(toks)
    keys = [i for k, i in enumerate(sig[:-1])
            if NAME.match(toks[i]) and toks[sig[k + 1]] == "="]
    if not keys:
        return replace_name(toks, rng)
    i = rng.choice(keys)
    pool = [toks[k] for k in keys] + ["axis", "keepdims", "p", "lr", "init", "bias", "kernel",
                                      "stride", "padding", "batch", "steps", "momentum"]
    new = rng.choice(pool)
    if rng.random() < 0.3 and len(new) > 2:
        new = new[:-1] if rng.random() < 0.5 else new + new[-1]
    toks[i] = new


def drop_bracket(toks: list[str], rng: random.Random) -> None:
    br = [i for i, t in enumerate(toks) if t in "{}()[]" and t]
    if br:
        del toks[rng.choice(br)]


def drop_line(toks: list[str], rng: random.Random) -> None:
    lines = "".join(toks).split("\n")
    k = rng.randrange(len(lines))
    if rng.random() < 0.5:
        del lines[k]
    else:
        lines.insert(k, lines[k])
    toks[:] = tokens("\n".join(lines))


def insert_unicode(toks: list[str], rng: random.Random) -> None:
    toks.insert(rng.randrange(len(toks) + 1), rng.choice(UNICODE))


MUTATIONS = {f.__name__: f for f in (
    delete_token, duplicate_token, swap_tokens, replace_number, replace_name, change_shape,
    change_option, drop_bracket, drop_line, insert_unicode)}


def mutate(text: str, rng: random.Random, count: int) -> tuple[str, list[str]]:
    """The text after `count` random mutations, and their names."""
    names = [rng.choice(sorted(MUTATIONS)) for _ in range(count)]
    return apply(text, names, rng), names


def apply(text: str, names: list[str], rng: random.Random) -> str:
    """The text after the mutations `names`, in order, drawing from `rng`."""
    toks = tokens(text)
    for name in names:
        if not _significant(toks):
            break
        MUTATIONS[name](toks, rng)
    return "".join(toks)


# ---------------------------------------------------------------- programs from the grammar


@functools.lru_cache(maxsize=1)
def _grammar() -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, int], dict[str, str]]:
    """The rules of the parser (name -> expansions), each rule's least depth to terminals,
    and the text of every literal terminal."""
    from lark.lexer import PatternStr

    from dsl.parser import get_parser

    parser = get_parser()
    rules: dict[str, list[tuple[Any, ...]]] = {}
    for r in parser.rules:
        rules.setdefault(r.origin.name, []).append(tuple(r.expansion))
    literal = {t.name: t.pattern.value for t in parser.terminals
               if isinstance(t.pattern, PatternStr)}
    depth = dict.fromkeys(rules, math.inf)
    changed = True
    while changed:
        changed = False
        for name, exps in rules.items():
            for exp in exps:
                d = 1 + max((depth.get(s.name, math.inf) if not s.is_term else 0 for s in exp),
                            default=0)
                if d < depth[name]:
                    depth[name], changed = d, True
    return rules, depth, literal  # type: ignore[return-value]


_TERMINAL_SAMPLES = {
    "NAME": tuple(v for v in VOCAB if v not in ("param", "train", "data")),  # keywords
    "INT": ("0", "1", "2", "3", "8", "64", "-1", "100000000"),
    "FLOAT": ("0.5", "1e-3", "2.0", "1e300", ".5"), "_NL": ("\n",),
    "STRING": ('"same"', '"shuffle"', '"x"', '""', '"blocks.dl"'),
}


def grammar_program(rng: random.Random, max_depth: int = 9) -> str:
    """A random derivation of the grammar's start rule: syntactically plausible, names and
    numbers from a small vocabulary."""
    rules, depth, literal = _grammar()
    out: list[str] = []

    def walk(name: str, level: int) -> None:
        exps = rules[name]
        if level >= max_depth:
            best = min(1 + max((depth.get(s.name, 0) if not s.is_term else 0 for s in e),
                               default=0) for e in exps)
            exps = [e for e in exps if 1 + max((depth.get(s.name, 0) if not s.is_term else 0
                                                for s in e), default=0) == best]
        for sym in rng.choice(exps):
            if sym.is_term:
                out.append(literal.get(sym.name) or rng.choice(_TERMINAL_SAMPLES[sym.name]))
            else:
                walk(sym.name, level + 1)

    walk("start", 0)
    text = " ".join(out)
    # a model line and an objective, so that the compiler goes past its first checks
    return ("" if text.lstrip().startswith("model") else "model g\n") + text \
        + "\nobjective generated = 0.0\n"


# ---------------------------------------------------------------- plausible programs


_ACT = ("relu", "tanh", "sigmoid", "softplus", "gelu")


def _layer(rng: random.Random, k: int) -> str:
    act = rng.choice(_ACT)
    return rng.choice((
        f"h = {act}(dense(h, H))",
        f"h = {act}(dense(h, H, bias = false, init = xavier_normal))",
        "h = layer_norm(h)",
        f"h = dropout({act}(dense(h, H)), p = 0.{rng.randint(0, 9)})",
        f"h = h + dense({act}(h), shape(h)[1])",
        f"repeat layer{k} i in 0 .. {rng.randint(1, 3)} {{ h = {act}(dense(h, H)) }}",
        f"if DEEP {{ h = {act}(dense(h, H)) }} else {{ h = h * 1.0 }}",
        "h = h / sqrt(mean(h * h, axis = -1, keepdims = true) + 1e-5)",
        "h = concat(h, h * h, axis = -1)",
        f"h = where(h > 0, h, 0.{rng.randint(1, 9)} * h)",
    ))


def plausible_program(rng: random.Random) -> str:
    """A small model that usually compiles: random data, an MLP or a CNN, a loss, an
    optimizer, two training steps."""
    f, c, hdim = rng.randint(1, 6), rng.randint(2, 4), rng.choice((3, 4, 8))
    conv = rng.random() < 0.25
    shape = "[1, 6, 6]" if conv else f"[{f}]"
    xtype = "f32[B, 1, 6, 6]" if conv else f"f32[B, {f}]"
    lines = [f"model gen{rng.randint(0, 999)}",
             f"data random(n = 32, shape = {shape}, classes = {c}, seed = {rng.randint(0, 9)})",
             f"input x: {xtype}", "input y: i64[B]", f"const H = {hdim}",
             f"const DEEP = {rng.choice(('true', 'false'))}", "", "net body(x) {"]
    if conv:
        lines += ["    h = relu(conv2d(x, 2, kernel = 3, padding = \"same\"))",
                  f"    h = {rng.choice(('max_pool2d', 'avg_pool2d'))}(h, kernel = 2)",
                  "    h = flatten(h)"]
    else:
        lines.append("    h = x")
    lines += ["    " + _layer(rng, k) for k in range(rng.randint(0, 3))]
    lines += ["    return dense(h, C)", "}", "", "logits = body(x)"]
    loss = rng.choice(("cross_entropy(logits, y)",
                       "mse(softmax(logits), one_hot(y, depth = C))",
                       "huber(logits, one_hot(y, depth = C), delta = 0.5)"))
    reg = rng.choice(("", " + 1e-4 * l2(weights)", " + 1e-3 * l1(params)"))
    opt = rng.choice(("sgd(lr = 0.1)", "adam(lr = 1e-3)", "momentum(lr = 0.05)",
                      "rmsprop(lr = 1e-2)", "adamw(lr = 1e-3)", "nesterov(lr = 0.01)",
                      "adagrad(lr = 0.1)", "sgd(lr = exponential_decay(0.1, 0.9))"))
    lines += [f"objective loss = {loss}{reg}", "metric acc = accuracy(logits, y)",
              f"optimizer {opt} minimize loss",
              f"train {{ batch = {rng.choice((1, 4, 8))}, steps = 2, seed = 0 }}"]
    return "\n".join(lines).replace("C)", f"{c})").replace(", C", f", {c}") + "\n"


def make_case(seed: int) -> Case:
    """Case number `seed`: 80% mutated shipped specs, 10% grammar walks, 10% plausible
    programs, 30% of the latter two mutated too."""
    rng = random.Random(seed)
    r = rng.random()
    if r < 0.8:
        name, text = rng.choice(shipped())
        text, done = mutate(text, rng, rng.choice((1, 1, 2, 3)))
        return Case(f"{name} + {', '.join(done)}", text)
    text, origin = (grammar_program(rng), "grammar") if r < 0.9 else (
        plausible_program(rng), "plausible")
    if rng.random() < 0.3:
        text, done = mutate(text, rng, 1)
        origin += " + " + ", ".join(done)
    return Case(origin, text)


# ---------------------------------------------------------------- the contract


def _where(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    if not tb:
        return "?"
    fr = tb[-1]
    try:
        rel = Path(fr.filename).resolve().relative_to(ROOT)
    except ValueError:
        rel = Path(fr.filename).name
    return f"{rel}:{fr.lineno} in {fr.name}"


def _user(e: BaseException, stage: str) -> Outcome:
    text = str(e)
    kind = "user" if POSITIONED.search(text) else "user_nopos"
    return Outcome(kind, stage, text.strip() or type(e).__name__)


def _escape(e: BaseException, stage: str) -> Outcome:
    return Outcome("escape", stage, f"{type(e).__name__}: {str(e)[:300]}", _where(e))


def check_grad_small(text: str, file: str, rows: int = 4) -> None:
    """`dslrun check-grad` cut down: the float64 compile, the first and last trainable
    parameter of the first minimized objective, one probe each, on `rows` rows."""
    import dsl
    from runtime.gradcheck import gradient_report
    from runtime.train.runner import bind_dims

    model = dsl.compile(text, file=file, dtype="float64")
    p = model.program
    objectives = p.meta.get("minimized") or p.objectives
    graph = model.compiled.stages["step" if p.phases else "forward"][0][1]
    params = [n for n, v in p.variables.items() if v.role == "param" and v.trainable]
    if not objectives or not params or objectives[0] not in graph.outputs:
        return
    feeds = {k: np.asarray(v) for k, v in p.input_defaults.items()}
    ds = model.dataset
    if ds is not None:
        for k, v in ds.train.items():
            if k in p.inputs:
                feeds[k] = np.asarray(v[:rows])
    dims = bind_dims([(n, t) for n, t in p.inputs.items() if n in feeds], feeds, "check-grad")
    values = {n: v.value.astype(np.float64) for n, v in p.variables.items()}
    gradient_report(graph, objectives[0], sorted({params[0], params[-1]}), values, feeds,
                    dims, seed=p.train.seed, directions=1, retries=1)


def run_case(text: str, file: str = "<fuzz>", steps: int = 2, max_batch: int = 16,
             grad: bool = True, on_stage: Any = None) -> Outcome:
    """Hold one case to the contract (see the module doc); `on_stage(name)` is called as
    each stage starts."""
    import dsl

    stage = "compile"
    enter = on_stage or (lambda name: None)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            enter(stage)
            model = dsl.compile(text, file=file)
            if model.program.phases:
                stage = "train"
                enter(stage)
                batch = min(model.program.train.batch or max_batch, max_batch)  # full: big
                model.fit(steps=steps, batch=batch, evaluate=False)
            if grad:
                stage = "check-grad"
                enter(stage)
                check_grad_small(text, file)
    except dsl.Error as e:
        return _user(e, stage)
    except Exception as e:  # noqa: BLE001 - the fuzz counts every other exception as a bug
        return _escape(e, stage)
    return Outcome("ok", stage)
