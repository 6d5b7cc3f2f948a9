"""The language reference, generated from the sources so that it cannot drift.

Everything a spec can name, read where it is defined: the prelude's `def`s and optimizers
(parameters with defaults; the comment lines right above the header or right inside the body
are the description), the compile-time builtins of `dsl.lower.BUILTINS`, the primitives of
`runtime.ops.REGISTRY`, the initializers, the data sets with their options, the fields of
`runtime.program.TrainSettings` and the augmentations. Only what the sources cannot say (a
builtin without a docstring, a train setting, an initializer) comes from the small tables
below; `tests/test_reference.py` checks that every name has a description.

    dslrun doc                 # the whole reference (the text of docs/reference.md)
    dslrun doc adam            # one entry
    python -m dsl.reference > docs/reference.md
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from dsl import ast as A
from dsl.errors import DslError, did_you_mean

WIDTH = 96

BUILTIN_DOCS: dict[str, tuple[str, str]] = {  # name -> (parameters, description)
    "pair": ("v", "(v, v) for a number, the two entries of a list: kernel sizes, strides."),
    "conv_padding": ("padding, kernel, dilation = 1",
                     '"valid" = 0, "same" = the padding that keeps the size at stride 1 '
                     "(split low/high like PyTorch), or the integers as given."),
    "shape": ("x", "The shape of a tensor or constant as a tuple of dimensions (symbolic "
                   "ones are names): `shape(x)[0]` is the batch size."),
    "same_shape": ("pred, target", "Checks that a loss's prediction and target have the "
                                   "same shape (a scalar target broadcasts); emits nothing."),
    "grad": ("f, wrt", "The gradient of the scalar `f` with respect to a parameter or an "
                       "intermediate value, as more graph."),
    "hessian": ("f, wrt, max_size = 2048",
                "The dense Hessian of the scalar `f` with respect to `wrt`, shape wrt.shape + "
                "wrt.shape. It costs one reverse pass per entry of `wrt` in the graph (compile "
                "time and memory grow with each), n² numbers, and O(n³) to solve with; over "
                "`max_size` entries it is a compile-time error. Newton's method on more "
                "parameters: `newton_cg`, which needs only `hvp`."),
    "hvp": ("f, wrt, v", "The Hessian-vector product ∇²f · v with respect to `wrt` (v of its "
                         "shape, held constant): two reverse passes, no dense Hessian."),
    "sum": ("x, axis = None, keepdims = false", "Sum over `axis` (all axes by default); over a "
                                                "selection, the sum of every parameter."),
    "mean": ("x, axis = None, keepdims = false", "Mean over `axis` (all axes by default)."),
    "max": ("x, axis = None, keepdims = false", "Maximum over `axis` (all axes by default)."),
    "min": ("x, axis = None, keepdims = false", "Minimum over `axis` (all axes by default)."),
    "l1": ("x", "Σ |x| over a tensor, or over every parameter of a selection."),
    "l2": ("x", "Σ x² over a tensor, or over every parameter of a selection."),
    "params": ("net", "The trainable parameters of a net (`params(D)`), or those whose names "
                      'match a pattern string (`params("enc.*")`). Written alone, `params` '
                      "selects every trainable parameter (`frozen_params` the frozen ones)."),
    "weights": ("net", "Like `params`, but weights only (no biases or scales): the usual "
                       "target of weight decay, `l2(weights)`."),
    "biases": ("net", "Like `params`, but biases only."),
    "scales": ("net", "Like `params`, but scales only (the γ of the normalization layers)."),
    "normal": ("shape, std = 1.0, mean = 0.0, dtype = None",
               "A fresh N(mean, std²) tensor at every step; without arguments, the "
               "initializer of the same name."),
    "uniform": ("shape, low = 0.0, high = 1.0, dtype = None",
                "A fresh U(low, high) tensor at every step; without arguments, the "
                "initializer of the same name."),
    "bernoulli": ("shape, p = 0.5, dtype = None", "A fresh 0/1 tensor, 1 with probability p, "
                                                  "at every step."),
    "randint": ("low, high, shape", "Fresh random integers in [low, high) at every step."),
    "zeros": ("shape, dtype = None", "A tensor of zeros (a constant when the shape is static)."),
    "ones": ("shape, dtype = None", "A tensor of ones."),
    "full": ("shape, value, dtype = None", "A tensor filled with `value`."),
    "zeros_like": ("x", "Zeros of the shape and dtype of `x`."),
    "ones_like": ("x", "Ones of the shape and dtype of `x`."),
    "full_like": ("x, value", "`value` in the shape and dtype of `x`."),
    "cast": ("x, dtype", 'Convert to a dtype: "f16", "f32", "f64", "i32", "i64" or "bool".'),
    "split": ("x, sections, axis = -1", "A tuple of `sections` equal parts along `axis`: "
                                        "`a, b = split(h, 2, axis = -1)`."),
    "concat": ("x..., axis = 0", "Join tensors (or a list of them) along an existing axis."),
    "stack": ("x..., axis = 0", "Join tensors (or a list of them) along a new axis."),
    "reshape": ("x, shape", "The same elements in a new shape; one entry may be -1."),
    "flatten": ("x", "Keep the first axis, flatten the rest: [N, C, H, W] -> [N, C·H·W]."),
    "transpose": ("x, axes = None", "Permute the axes (reverse them by default)."),
    "len": ("x", "The length of a list or tuple, the size of a tensor's first axis, or the "
                 "number of parameters in a selection."),
    "count": ("sel", "The number of scalars in a selection: `count(params(D))`."),
    "linspace": ("start, stop, num", "`num` evenly spaced numbers from start to stop "
                                     "(a compile-time constant)."),
    "arange": ("start, stop, step = 1", "Numbers from start up to stop (compile time)."),
    "cumprod": ("x", "Cumulative product of a constant (compile time)."),
    "cumsum": ("x", "Cumulative sum of a constant (compile time)."),
    "eye": ("n", "The n×n identity matrix (compile time)."),
    "array": ("x", "A constant list as a float64 array (compile time)."),
    "int": ("x", "A constant as an integer (compile time)."),
    "float": ("x", "A constant as a float (compile time)."),
    "pi": ("", "π."),
    "require": ("cond, message", ""),  # described by its docstring
}

INIT_DOCS: dict[str, str] = {
    "zeros": "All zeros.",
    "ones": "All ones.",
    "constant": "Every entry `value`.",
    "normal": "N(mean, std²).",
    "uniform": "U(low, high).",
    "fan_in_normal": "N(0, 1/fan_in) (ESE 546 book Eq. 4.14).",
    "xavier_normal": "N(0, σ²) with σ² = gain² · 2 / (fan_in + fan_out) (Glorot).",
    "xavier_uniform": "U(±gain · √(6 / (fan_in + fan_out))) (Glorot).",
    "he_normal": "N(0, 2 / fan_in) (He, for ReLU layers).",
    "he_uniform": "U(±√(6 / fan_in)) (He).",
    "default": "U(±1/√fan_in), the common library default; what `dense` and `conv2d` use "
               "unless given `init`.",
    "orthogonal": "A (semi-)orthogonal matrix times `gain`, from the QR of a Gaussian one.",
}

AUGMENT_DOCS: dict[str, str] = {
    "hflip": "Mirror each image left-right with probability p.",
    "vflip": "Mirror each image top-bottom with probability p.",
    "crop": "Zero-pad by `pad` and cut a random window of the original size from each image.",
    "noise": "Add N(0, std²) noise to every entry.",
    "brightness": "Add one U(−delta, delta) offset per sample.",
    "contrast": "Scale each sample about its mean by one U(low, high) factor.",
}

SETTING_DOCS: dict[str, str] = {
    "batch": "Examples per step; without it a step is full-batch.",
    "epochs": "Train for this many passes over the training split (a total, counted from "
              "step 0); with `steps` too, whichever ends first.",
    "steps": "Train for this many steps in total (counted from step 0). Without `steps` and "
             "`epochs`, one epoch.",
    "seed": "Seeds the initial weights, the batch order, the random tensors and dropout.",
    "sampling": '"shuffle" (each epoch a permutation), "with_replacement" (batches drawn '
                'uniformly), or "sequential": no randomness, the samples cut into `batch` '
                "contiguous streams and batch k holding the k-th sample of each, so that row i "
                "of a batch continues row i of the one before (truncated backpropagation "
                "through time over consecutive windows: `text`, `sine`). An error for windows "
                "that overlap (a data set's `stride` < `T`).",
    "drop_last": "Drop the last, smaller batch of an epoch.",
    "checkpoint_every": "Write the checkpoint every this many steps (0: at the end only).",
    "augment": "Data augmentations applied to each training batch, e.g. "
               "`augment = [hflip(p = 0.1), crop(pad = 1)]` (see Augmentations).",
    "order": "With several optimizers: the objectives whose steps run, in this order, each "
             "step (a GAN's `order = [g_loss, d_loss]`).",
}

OPTION_DOCS: dict[str, str] = {
    "weight_decay": "adds weight_decay · w to the gradient of each weight",
    "decay_biases": "applies weight_decay to biases and scales too",
    "clip_value": "clips each gradient entry to ±clip_value (first)",
    "clip_norm": "rescales the gradients so that their global norm is at most clip_norm "
                 "(after clip_value, before weight decay, as PyTorch's clip_grad_norm_ "
                 "between backward and step; the train block's clip_norm is the default)",
}


@dataclass(frozen=True)
class Entry:
    """One nameable thing: `signature` as a spec writes it, `kind` ("prelude def", "builtin",
    "primitive (elementwise)", ...), a `description`, other names (`aliases`), `notes` (which
    of two same-named things a call reaches) and the `section` it is listed in."""

    name: str
    section: str
    kind: str
    signature: str
    description: str
    aliases: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def text(self) -> str:
        """The entry as markdown: a heading, the signature, the description and the notes."""
        head = self.name + "".join(f", {a}" for a in self.aliases)
        parts = [f"### {head}", "", f"`{self.signature}` · {self.kind}"]
        if self.description:
            parts += ["", _wrap(self.description)]
        if self.notes:
            parts += ["", *(_wrap(n) for n in self.notes)]
        return "\n".join(parts)


def _wrap(text: str) -> str:
    return textwrap.fill(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def literal(v: Any) -> str:
    """A Python value as the language spells it (`true`, `None`, `"01"`, `[1, 1]`)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "None"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(literal(x) for x in v) + "]"
    return repr(v)


def _call(name: str, options: dict[str, Any], lead: str = "") -> str:
    args = [lead] if lead else []
    args += [f"{k} = {literal(v)}" for k, v in options.items()]
    return f"{name}({', '.join(args)})"


# ---------------------------------------------------------------- the prelude

_SECTION = re.compile(r"^#\s*-{4,}\s*(.+?)\s*$")


def _comments(lines: list[str], start: int, step: int) -> list[str]:
    """The run of comment lines from index `start` going by `step` (-1: upwards), stopping at
    a blank line, code or a section rule."""
    out = []
    i = start
    while 0 <= i < len(lines) and lines[i].lstrip().startswith("#") \
            and not _SECTION.match(lines[i].strip()):
        out.append(lines[i].strip().lstrip("#").strip())
        i += step
    return out[::-1] if step < 0 else out


def _description(lines: list[str], line: int) -> str:
    """The comments right above the header at 1-based `line`, and the first comment lines
    inside its body (after simple statements such as `same_shape(pred, target)`, before any
    nested block)."""
    above = _comments(lines, line - 2, -1)
    i = line - 1
    while i < len(lines) and "{" not in lines[i]:
        i += 1  # a header continued over several lines
    inside: list[str] = []
    if lines[i].rstrip().endswith("{"):
        i += 1
        while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith("#") \
                and not set("{}") & set(lines[i]):
            i += 1
        inside = _comments(lines, i, 1)
    return " ".join(above + inside)


def _params(params: tuple[A.Param, ...]) -> str:
    from dsl.printer import format_expr

    return ", ".join(p.name if p.default is None else f"{p.name} = {format_expr(p.default)}"
                     for p in params)


def prelude_entries() -> list[Entry]:
    """The prelude's defs and optimizers, in file order, listed under its section rules."""
    from dsl.compiler import prelude

    lines = resources.files("dsl").joinpath("prelude.dl").read_text().splitlines()
    sections = [(i + 1, m.group(1)) for i, text in enumerate(lines)
                if (m := _SECTION.match(text.strip()))]
    out = []
    for s in prelude():
        if not isinstance(s, A.NetDef | A.OptimizerDef):
            continue
        title = next((t for ln, t in reversed(sections) if ln < s.span.line), "prelude")
        if isinstance(s, A.OptimizerDef):
            sig, kind = f"optimizer {s.name}({_params(s.params)}) minimize OBJECTIVE", \
                "prelude optimizer"
        else:
            sig, kind = f"{s.name}({_params(s.params)})", f"prelude {s.kind}"
        out.append(Entry(s.name, title[:1].upper() + title[1:], kind, sig,
                         _description(lines, s.span.line)))
    return out


# ---------------------------------------------------------------- builtins, primitives

def builtin_entries() -> list[Entry]:
    """`dsl.lower.BUILTINS`, described by BUILTIN_DOCS or else the function's docstring."""
    from dsl.lower import BUILTINS

    out = []
    for name, fn in BUILTINS.items():
        params, desc = BUILTIN_DOCS.get(name, ("...", ""))
        if not desc and fn.__doc__:
            desc = " ".join(fn.__doc__.split())
        out.append(Entry(name, "Compile-time builtins", "builtin", f"{name}({params})", desc))
    return out


def primitive_entries() -> list[Entry]:
    """`runtime.ops.REGISTRY`: tensor arguments, attributes with defaults, the OpDef's doc."""
    from runtime.ops import REGISTRY

    out = []
    for name, op in REGISTRY.items():
        if op.arity is None:
            lead = "x..."
        else:
            lead = ", ".join("x" if op.arity == 1 else f"x{i + 1}" for i in range(op.arity))
        traits = [t for t, on in (("elementwise", op.elementwise), ("random", op.random),
                                  ("no gradient", op.nondiff)) if on]
        kind = "primitive" + (f" ({', '.join(traits)})" if traits else "")
        out.append(Entry(name, "Primitives", kind, _call(name, dict(op.attrs), lead), op.doc))
    return out


def initializer_entries() -> list[Entry]:
    """`runtime.init.INITIALIZERS` with their options and aliases, described by INIT_DOCS."""
    from runtime.init import ALIASES, INITIALIZERS

    out = []
    for name, (_fn, defaults) in INITIALIZERS.items():
        aliases = tuple(a for a, n in ALIASES.items() if n == name)
        sig = _call(name, defaults) if defaults else name
        out.append(Entry(name, "Initializers", "initializer", sig, INIT_DOCS.get(name, ""),
                         aliases))
    return out


def dataset_entries() -> list[Entry]:
    """The data sets with their options and defaults, described by their loaders' docstrings."""
    from runtime.train.data import dataset_options, dataset_summary, known_datasets

    return [Entry(name, "Data sets", "data set", "data " + _call(name, dataset_options(name)),
                  dataset_summary(name)) for name in known_datasets()]


def _field_comments(cls: type) -> dict[str, str]:
    """The trailing comment of each field line in a dataclass's source."""
    import inspect

    found = re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", inspect.getsource(cls), re.M)
    return {name: text[:1].upper() + text[1:] for name, text in found}


def setting_entries() -> list[Entry]:
    """The fields of TrainSettings (read now, so new ones appear) and `order`. Description:
    field metadata `doc`, else SETTING_DOCS, else the field's comment in runtime/program.py."""
    from dsl.lower import TRAIN_SETTINGS
    from runtime.program import TrainSettings

    out = []
    fields = dataclasses.fields(TrainSettings)
    comments = _field_comments(TrainSettings)
    for f in fields:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        desc = f.metadata.get("doc") or SETTING_DOCS.get(f.name) or comments.get(f.name, "")
        typ = f"{f.type}, " if "[" not in str(f.type) else ""
        out.append(Entry(f.name, "Train settings", f"train setting ({typ}default "
                         f"{literal(default)})", f"train {{ {f.name} = ... }}", desc))
    for name in sorted(set(TRAIN_SETTINGS) - {f.name for f in fields}):
        out.append(Entry(name, "Train settings", "train setting", f"train {{ {name} = ... }}",
                         SETTING_DOCS.get(name, "")))
    return out


def augmentation_entries() -> list[Entry]:
    """`runtime.train.augment.AUGMENTATIONS` with their options, described by AUGMENT_DOCS."""
    from runtime.train.augment import AUGMENTATIONS

    return [Entry(name, "Augmentations", "augmentation", _call(name, defaults),
                  AUGMENT_DOCS.get(name, " ".join((fn.__doc__ or "").split())))
            for name, (fn, defaults) in AUGMENTATIONS.items()]


def _shadowing(entries: list[Entry]) -> list[Entry]:
    """Say, on a primitive that shares its name with a prelude def or a builtin, which one a
    call reaches (a def hides a builtin, which hides a primitive)."""
    seen = {e.name: e for e in reversed(entries) if e.section != "Primitives"}
    out = []
    for e in entries:
        prev = seen.get(e.name)
        if e.section == "Primitives" and prev is not None and prev.kind == "builtin":
            e = dataclasses.replace(e, notes=(f"A call `{e.name}(...)` in a spec reaches the "
                                              "builtin of the same name.",))
        elif e.section == "Primitives" and prev is not None and prev.kind.startswith("prelude"):
            e = dataclasses.replace(e, notes=(
                f"A call `{e.name}(...)` in a spec reaches the prelude's `{e.name}` "
                f"({prev.section}); inside the body of `def {e.name}` it is this primitive.",))
        out.append(e)
    return out


def entries() -> list[Entry]:
    """Every entry, in the order of the reference."""
    return _shadowing(prelude_entries() + builtin_entries() + primitive_entries()
                      + initializer_entries() + dataset_entries() + setting_entries()
                      + augmentation_entries())


# ---------------------------------------------------------------- texts

_INTROS = {
    "Layers": "A `def` is expanded at each call, and each call site owns its weights "
    "(`classifier.dense1.W`, `classifier.dense2.W`); a `net` keeps one set for all its calls.",
    "Optimizers (update rules)": "Used as `optimizer NAME(options) minimize OBJECTIVE [over "
    "SELECTION]`. Besides its own options every optimizer takes {generic}.",
    "Compile-time builtins": "Functions the compiler evaluates itself: on constants they "
    "compute at compile time; on tensors they build graph.",
    "Primitives": "The ops of the graph, callable by name: tensor arguments first, then the "
    "options (attributes) with their defaults.",
    "Initializers": "Used as `param w: [3, 4] = NAME` or `= NAME(options)`, or as a layer's "
    "`init = NAME`.",
    "Data sets": "Used as `data NAME(options)`; the fields are `x` and `y`, and `train.x` / "
    "`test.y` are constants, and so are the numbers a data set states about itself: "
    "`data.vocab_size`, `data.n_classes`, `data.n_features`, `data.T`. A file name ending in "
    ".csv, .npz or .txt is also a data set.",
    "Train settings": "Used as `train { NAME = value, ... }`.",
    "Augmentations": "Used as `train { augment = [NAME(options), ...] }`, applied to the "
    "image field of each training batch.",
}


def _intro(section: str) -> str:
    from dsl.lower import GENERIC_OPT_OPTIONS

    generic = "; ".join(f"`{k} = {literal(v)}` ({OPTION_DOCS.get(k, '')})".replace(" ()", "")
                        for k, v in GENERIC_OPT_OPTIONS.items())
    return _INTROS.get(section, "").replace("{generic}", generic)


def reference_text() -> str:
    """The whole reference as markdown (the content of docs/reference.md)."""
    out = ["# dslrun reference", "",
           _wrap("Everything a spec can name. Generated from the sources by `python -m "
                 "dsl.reference` (also `dslrun doc`, or `dslrun doc NAME` for one entry); "
                 "do not edit by hand: `tests/test_reference.py` fails when it is not "
                 "current.")]
    section = None
    for e in entries():
        if e.section != section:
            section = e.section
            out += ["", f"## {section}"]
            if _intro(section):
                out += ["", _wrap(_intro(section))]
        out += ["", e.text()]
    return "\n".join(out) + "\n"


def entry_text(name: str) -> str:
    """Every entry named `name` (or aliased so); DslError with a did-you-mean otherwise."""
    all_entries = entries()
    hits = [e for e in all_entries if name == e.name or name in e.aliases]
    if not hits:
        names = [n for e in all_entries for n in (e.name, *e.aliases)]
        raise DslError(f"doc: nothing named '{name}'" + did_you_mean(name, names)
                       + "; `dslrun doc` prints the whole reference")
    return "\n\n".join(e.text() for e in hits) + "\n"


def spec_summaries() -> list[tuple[str, str]]:
    """(name, first comment line) of every shipped spec, `bench/x` for the benchmarks."""
    from dsl.compiler import shipped_specs

    names: dict[Any, str] = {}
    for name, path in shipped_specs().items():
        if len(name) > len(names.get(path, "")):
            names[path] = name
    out = []
    for path, name in sorted(names.items(), key=lambda kv: (kv[1].count("/"), kv[1])):
        first = next((ln.lstrip("#").strip() for ln in path.read_text().splitlines()
                      if ln.startswith("#") and ln.lstrip("#").strip()), "")
        out.append((name, first.removesuffix(":")))
    return out


def version() -> str:
    """The installed package's version ("unknown" when running from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("dslrun")
    except PackageNotFoundError:
        return "unknown"


def mistyped_command(word: str, commands: Iterable[str]) -> str | None:
    """The message for a first command-line word that looks like a mistyped command (`chek`),
    or None: an existing file, a shipped spec's name or a word close to no command is a spec
    for the default `train` command."""
    hint = did_you_mean(word, commands)
    if not hint or Path(word).exists():
        return None
    from dsl.compiler import shipped_specs

    if word.removesuffix(".dl") in shipped_specs():
        return None
    return f"unknown command '{word}'{hint}"


if __name__ == "__main__":
    print(reference_text(), end="")
