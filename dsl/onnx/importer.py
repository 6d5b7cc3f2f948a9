"""Import: an ONNX model of the supported op set (`dsl.onnx.import_ops.IMPORT_TABLE`) as a spec.

The spec declares the graph inputs (`input x: f32[B, 64]`, a named ONNX dim is a symbolic dim),
one `param` per float initializer (`frozen` for a Constant node or a BatchNormalization's
running statistics; their values go to a checkpoint beside the spec, loaded with
`--init-from`, or directly by `dsl.from_onnx`), integer ones as compile-time constants, one
assignment per node and one `output` per graph output. Adding
`data`, an objective and an optimizer makes it trainable; its params are ordinary parameters.
"""

from __future__ import annotations

import functools
import keyword
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference, version_converter

from dsl.onnx import OnnxError
from dsl.onnx.emit import DTYPE_OF_ONNX
from dsl.onnx.import_ops import IMPORT_TABLE, Value
from runtime.dtypes import is_float
from runtime.ir import Dim


@functools.cache
def keywords() -> frozenset[str]:
    """Names a value (or the model) must not take: the grammar's keywords (its terminals that
    are a plain word), the reserved names (`step`, `training`), the selections (`params`,
    `weights`, ...) and the data splits (`train.x`, `test.x`)."""
    from lark.lexer import PatternStr

    from dsl.lower.expressions import SELECTIONS
    from dsl.lower.statements import RESERVED
    from dsl.parser import get_parser

    grammar = {t.pattern.value for t in get_parser().terminals
               if isinstance(t.pattern, PatternStr) and t.pattern.value.isidentifier()}
    return frozenset(grammar | set(RESERVED) | set(SELECTIONS) | {"train", "test"})


def clean_name(text: str, prefix: str, reserved: Collection[str]) -> str:
    """`text` as a spec name: other characters than the grammar's [A-Za-z0-9_] become `_`; a
    name that starts with a digit or is reserved gets `prefix_` in front."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or prefix
    if base[0].isdigit() or keyword.iskeyword(base) or base in reserved:
        base = f"{prefix}_{base}"
    return base

# defs that make a primitive callable where the prelude has a layer of the same name: inside
# `def conv2d`, `conv2d(...)` is the primitive
WRAPPERS: dict[str, str] = {
    "conv2d": "def conv2d(x, w, stride = [1, 1], padding = [0, 0], dilation = [1, 1], "
              "groups = 1) {\n    return conv2d(x, w, stride = stride, padding = padding, "
              "dilation = dilation, groups = groups)\n}",
    "conv1d": "def conv1d(x, w, stride = 1, padding = 0, dilation = 1, groups = 1) {\n"
              "    return conv1d(x, w, stride = stride, padding = padding, "
              "dilation = dilation, groups = groups)\n}",
    "layer_norm": "def layer_norm(x, gamma, beta, axes = [-1], eps = 1e-5) {\n"
                  "    return layer_norm(x, gamma, beta, axes = axes, eps = eps)\n}",
}


def _callables() -> set[str]:
    """Names a value must not shadow: primitives, builtins and the prelude's defs."""
    from dsl.compiler import prelude
    from dsl.lower.builtins import BUILTINS
    from runtime.ops import REGISTRY

    return set(REGISTRY) | set(BUILTINS) | {n for s in prelude() if (n := getattr(s, "name",
                                                                                     None))}


# the reference of an integer constant that only import_ops rows may read (`cx.static`)
PLACEHOLDER = "<the constant "


class Sym(str):
    """A dim written as an expression (`shape(x)[0]`), printed bare by `Writer.lit`."""


@dataclass
class Imported:
    """An imported model: the spec text, the parameter values by spec name, and the spec names
    of the ONNX graph inputs and outputs."""

    text: str
    weights: dict[str, np.ndarray]
    inputs: dict[str, str] = field(default_factory=dict)  # ONNX name -> spec name
    outputs: dict[str, str] = field(default_factory=dict)


class Writer:
    """The spec under construction: declarations, body lines, names, and the helpers the
    import table's rows use."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.decls: list[str] = []
        self.body: list[str] = []
        self.weights: dict[str, np.ndarray] = {}
        self.values: dict[str, Value] = {}
        self.wrappers: list[str] = []
        self.int_decls: dict[str, str] = {}  # integer tensors, written only where used as such
        self._reserved: set[str] = set(keywords()) | set(WRAPPERS) | _callables()
        self._taken: set[str] = set()
        self._dim_refs: dict[str, Sym] = {}  # ONNX dim name -> how the spec reads it
        self._dim_names: dict[str, str] = {}  # ONNX dim name -> the spec's symbol

    # ---------------------------------------------------------------- names and literals
    def fresh(self, onnx_name: str, prefix: str = "v") -> str:
        base = clean_name(onnx_name, prefix, self._reserved)
        name, k = base, 2
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        return name

    def lit(self, v: Any) -> str:
        """A spec literal for a number, bool, string, dim or (nested) list."""
        if isinstance(v, Sym):
            return str(v)
        if isinstance(v, np.ndarray):
            return self.lit(v.tolist())
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(self.lit(x) for x in v) + "]"
        if isinstance(v, bool | np.bool_):
            return "true" if v else "false"
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            if not np.isfinite(v):
                raise OnnxError(f"import: {self.source}: a non-finite constant ({v}) cannot "
                                "be written in a spec")
            text = repr(float(v))
            return text if ("." in text or "e" in text) else text + ".0"
        if isinstance(v, str):
            return '"' + v.replace('"', '\\"') + '"'
        raise OnnxError(f"import: {self.source}: cannot write the value {v!r}")

    def primitive(self, op: str) -> str:
        """The name that calls primitive `op` (declaring its wrapper def once)."""
        if op in WRAPPERS and op not in self.wrappers:
            self.wrappers.append(op)
        return op

    # ---------------------------------------------------------------- rows' helpers
    def fail(self, node: onnx.NodeProto, what: str) -> NoReturn:
        raise OnnxError(f"import: {self.source}: node '{node.name or node.output[0]}' "
                        f"({node.op_type}): {what} is not supported")

    def static(self, v: Value | None, node: onnx.NodeProto, what: str) -> np.ndarray:
        """The value of an input that must be known at compile time."""
        if v is None or v.static is None:
            self.fail(node, f"{what} computed at run time (it must be an initializer or a "
                            "Constant)")
        return v.static

    def value(self, onnx_name: str, node: onnx.NodeProto) -> Value:
        """The value a node reads (defined by an input, initializer or earlier node)."""
        v = self.values.get(onnx_name)
        if v is None:
            raise OnnxError(f"import: {self.source}: node '{node.name or node.output[0]}' "
                            f"({node.op_type}) reads '{onnx_name}', which no graph input, "
                            "initializer or earlier node defines")
        return v

    def dims(self, v: Value, node: onnx.NodeProto) -> tuple[Dim, ...]:
        if v.shape is None or any(d is None for d in v.shape):
            self.fail(node, f"an input of unknown shape ('{v.ref}')")
        return v.shape

    def dtype_of(self, onnx_type: int, where: str) -> str:
        dt = DTYPE_OF_ONNX.get(onnx_type)
        if dt is None:
            raise OnnxError(f"import: {self.source}: {where}: element type "
                            f"{onnx.TensorProto.DataType.Name(onnx_type)} is not supported "
                            f"(dslrun has {', '.join(DTYPE_OF_ONNX.values())})")
        return dt

    # ---------------------------------------------------------------- values
    def shape_of(self, t: onnx.TypeProto) -> tuple[Dim, ...] | None:
        if not t.tensor_type.HasField("shape"):
            return None
        out: list[Dim] = []
        for d in t.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                out.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param in self._dim_refs:
                out.append(self._dim_refs[d.dim_param])
            else:
                out.append(None)  # type: ignore[arg-type]
        return tuple(out)

    def add_input(self, vi: onnx.ValueInfoProto) -> str:
        name = self.fresh(vi.name, "x")
        dt = self.dtype_of(vi.type.tensor_type.elem_type, f"input '{vi.name}'")
        dims: list[str] = []
        shape: list[Dim] = []
        for k, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                dims.append(str(d.dim_value))
                shape.append(int(d.dim_value))
                continue
            label = d.dim_param or f"{vi.name}_{k}"
            symbol = self._dim_refs.get(label)
            if symbol is None:
                symbol = self._dim_refs[label] = Sym(f"shape({name})[{k}]")
                self._dim_names[label] = self.fresh(label.upper(), "D")
            dims.append(self._dim_names[label])
            shape.append(symbol)
        self.decls.append(f"input {name}: {dt}[{', '.join(dims)}]")
        self.values[vi.name] = Value(name, dt, tuple(shape))
        return name

    def add_constant(self, onnx_name: str, arr: np.ndarray, frozen: bool) -> None:
        """An initializer (a param) or a Constant node (frozen); integers and bools become
        compile-time constants."""
        dt = self.dtype_of(numpy_helper.from_array(arr).data_type, f"constant '{onnx_name}'")
        if is_float(dt) and frozen and arr.ndim == 0 and np.isfinite(arr):
            name = f"({self.lit(float(arr))})"  # a scalar Constant is written in place
        elif is_float(dt):
            name = self.fresh(onnx_name, "w")
            kind = "frozen" if frozen else "param"
            typ = ("" if dt == "f32" else dt) + self.lit(list(arr.shape))
            self.decls.append(f"{kind} {name}: {typ} = zeros")
            self.weights[name] = arr
        elif np.all(np.abs(arr.astype(np.float64)) <= 2 ** 24):  # exact through array()
            name = self.fresh(onnx_name, "c")
            self.int_decls[name] = (f'{name} = cast(array({self.lit(arr.astype(np.int64))}), '
                                    f'"{dt}")')
        else:  # only its value can be used (a shape, axes, bounds); checked by import_model
            name = f"{PLACEHOLDER}{onnx_name}>"
        self.values[onnx_name] = Value(name, dt, tuple(arr.shape), np.asarray(arr))

    def text(self, model_name: str, header: list[str], outputs: list[str]) -> str:
        lines = [f"# {h}" if h else "#" for h in header]
        used = set(re.findall(r"\w+", "\n".join([*self.body, *outputs])))
        lines += [f"model {model_name}", *self.decls]
        lines += [line for name, line in self.int_decls.items() if name in used]
        if self.wrappers:
            lines.append(f"# {', '.join(self.wrappers)}: the primitive, weights as arguments "
                         "(this def hides the prelude's layer of the same name)")
        lines += [WRAPPERS[w] for w in self.wrappers]
        return "\n".join([*lines, *self.body, *outputs]) + "\n"


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        out[a.name] = v
    return out


MIN_OPSET = 13  # the semantics the import table is written for (Softmax over one axis, ...)

# a Constant node's attribute -> the dtype of its value
CONSTANT_ATTRS = {"value": None, "value_float": np.float32, "value_floats": np.float32,
                  "value_int": np.int64, "value_ints": np.int64}


def _constant_value(w: Writer, node: onnx.NodeProto, attrs: dict[str, Any]) -> np.ndarray:
    for key, dtype in CONSTANT_ATTRS.items():
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    w.fail(node, f"a Constant given by {', '.join(attrs) or 'nothing'}")


def _check_opset(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The model in opset MIN_OPSET or later (older ones upgraded by onnx's converter). Other
    domains may be declared: a node of one is refused by `import_model`."""
    for imp in model.opset_import:
        if imp.domain not in ("", "ai.onnx"):
            continue
        if imp.version < MIN_OPSET:
            try:
                return version_converter.convert_version(model, MIN_OPSET)
            except Exception as e:  # noqa: BLE001 - the converter raises bare RuntimeErrors
                raise OnnxError(f"import: {source}: opset {imp.version} is older than "
                                f"{MIN_OPSET}, which this importer reads, and "
                                f"onnx.version_converter cannot upgrade it: {e}") from None
    return model


def import_model(model: onnx.ModelProto, name: str = "imported", source: str = "<model>",
                 static: Mapping[str, np.ndarray] | None = None) -> Imported:
    """The spec of an ONNX model. `static`: values for graph inputs that must be constants
    (a Reshape's shape given as an input), which then become constants of the spec."""
    check_model_name(name)
    model = _check_opset(model, source)
    try:
        model = shape_inference.infer_shapes(model, data_prop=True)
    except shape_inference.InferenceError as e:
        raise OnnxError(f"import: {source}: the model is not valid: {e}") from None
    g = model.graph
    w = Writer(source)
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    static = dict(static or {})
    imported = Imported("", {})
    out_refs = {vi.name: w.fresh(vi.name, "y") for vi in g.output}  # kept as named
    imported.outputs = dict(out_refs)
    for vi in g.input:
        if vi.name in inits:
            continue
        if vi.name in static:
            w.add_constant(vi.name, np.asarray(static[vi.name]), frozen=True)
        else:
            imported.inputs[vi.name] = w.add_input(vi)
    # a BatchNormalization's running mean and variance are statistics, not trained
    stats = {n.input[k] for n in g.node if n.op_type == "BatchNormalization"
             for k in (3, 4) if k < len(n.input)}
    for k, arr in inits.items():
        w.add_constant(k, arr, frozen=k in stats)
    types = {vi.name: vi.type for vi in (*g.value_info, *g.output)}
    for node in g.node:
        if node.domain not in ("", "ai.onnx"):
            w.fail(node, f"domain '{node.domain}'")
        attrs = _attrs(node)
        if node.op_type == "Constant":
            w.add_constant(node.output[0], _constant_value(w, node, attrs), frozen=True)
            continue
        row = IMPORT_TABLE.get(node.op_type)
        if row is None:
            raise OnnxError(f"import: {source}: op {node.op_type} (node "
                            f"'{node.name or node.output[0]}') is not supported; the supported "
                            f"ops are {', '.join(sorted(IMPORT_TABLE))}")
        extra = [o for o in node.output[1:] if o]
        if any(_used(g, o) for o in extra):
            w.fail(node, "a second output")
        ins = [w.value(i, node) if i else None for i in node.input]
        expr = row(w, node, ins, attrs)
        for v in ins:
            if v is not None and v.ref.startswith(PLACEHOLDER) and v.ref in expr:
                w.fail(node, f"the integer constant '{v.ref[len(PLACEHOLDER):-1]}' (beyond "
                             "2^24, which a spec cannot write exactly) as a value")
        out = node.output[0]
        if out in out_refs:  # a graph output: declared where it is computed
            ref = out_refs.pop(out)
            w.body.append(f"output {ref} = {expr}")
        else:
            ref = w.fresh(out, "v")
            w.body.append(f"{ref} = {expr}")
        t = types.get(out)
        dt = w.dtype_of(t.tensor_type.elem_type, f"value '{out}'") if t is not None and \
            t.tensor_type.elem_type else (ins[0].dtype if ins and ins[0] else "f32")
        w.values[out] = Value(ref, dt, w.shape_of(t) if t is not None else None)
    for k in out_refs:
        if w.values[k].ref.startswith(PLACEHOLDER):
            raise OnnxError(f"import: {source}: graph output '{k}' is an integer constant "
                            "beyond 2^24, which cannot be written exactly in a spec")
    outputs = [f"output {ref} = {w.values[k].ref}" for k, ref in out_refs.items()]
    header = [f"Imported from {source} by dslrun import ({_opset(model)}, producer "
              f"{model.producer_name or 'unknown'}).",
              ("The parameters' values are in the checkpoint beside this file: dslrun train "
               "SPEC --init-from FILE.npz") if w.weights else "",
              "(add data, an objective and an optimizer to fine-tune)." if w.weights else ""]
    imported.text = w.text(name, [h for h in header if h], outputs)
    imported.weights = w.weights
    return imported


def _used(g: onnx.GraphProto, name: str) -> bool:
    return any(name in n.input for n in g.node) or any(o.name == name for o in g.output)


def _opset(model: onnx.ModelProto) -> str:
    return ", ".join(f"opset {i.version}" for i in model.opset_import if i.domain in ("",
                                                                                       "ai.onnx"))


def load(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file (one error message for a missing or malformed file)."""
    path = Path(path)
    if not path.is_file():
        raise OnnxError(f"import: {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf raises several unrelated types
        raise OnnxError(f"import: {path} is not an ONNX model: {e}") from None
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise OnnxError(f"import: {path} is not a valid ONNX model (onnx.checker: "
                        f"{' '.join(str(e).split())})") from None
    return model


def model_name(path: str | Path) -> str:
    """The default model name: the file's name as a spec name."""
    return clean_name(Path(path).stem, "m", keywords())


def check_model_name(name: str) -> str:
    """`name` when it can follow `model` in a spec; an OnnxError saying what would do if not."""
    clean = clean_name(name, "m", keywords())
    if clean != name:
        raise OnnxError(f"import: '{name}' cannot be the model name (a name is letters, digits "
                        f"and _, not starting with a digit, and not a keyword); '{clean}' "
                        "would do")
    return name


def write_spec(path: str | Path, out: str | Path, name: str | None = None
               ) -> tuple[Path, Path | None, str]:
    """`dslrun import`: write the spec `out` and its weights (`out` with .npz) for the ONNX
    file `path`; check that the spec compiles. Returns both paths and a summary."""
    from dsl.compiler import compile_spec
    from dsl.errors import DslError
    from runtime.train.checkpoint import save_checkpoint
    from runtime.train.runs import check_file_target

    out = Path(out)
    check_file_target(str(out), "-o")
    imported = import_model(load(path), name or model_name(out), str(path))
    weights = out.with_suffix(".npz") if imported.weights else None
    text = imported.text
    if weights is not None:
        text = text.replace("SPEC --init-from FILE.npz", f"{out.name} --init-from {weights.name}")
    try:
        compiled = compile_spec(text, str(out))  # checked before anything is written
    except DslError as e:
        where = f"line {e.span.line}: " if e.span is not None else ""
        raise OnnxError("import: the generated spec does not compile (a dslrun bug): "
                        f"{where}{e.message}") from None
    out.write_text(text)
    if weights is not None:
        save_checkpoint(weights, imported.weights, {"source": str(path), "step": 0})
    p = compiled.program
    summary = (f"  inputs:  {', '.join(f'{k}: {t}' for k, t in p.inputs.items()) or 'none'}\n"
               f"  outputs: {', '.join(p.outputs)}\n"
               f"  parameters: {p.param_count()} in {len(imported.weights)} arrays")
    return out, weights, summary


def from_onnx(path: str | Path, name: str | None = None, **options: Any) -> Any:
    """`dsl.from_onnx(path)`: a Model of the imported spec with the ONNX weights as its
    initial values (`options` as for `dsl.compile`). `model.compiled` keeps the spec text in
    `model.origin.text`."""
    from dsl.api import compile as compile_text

    imported = import_model(load(path), name or model_name(path), str(path))
    model = compile_text(imported.text, file=f"{Path(path).stem}.dl", **options)
    set_initial(model, imported.weights)
    return model


def set_initial(model: Any, weights: Mapping[str, np.ndarray]) -> None:
    """Make `weights` the initial values of the Model's variables of those names."""
    variables = model.program.variables
    for k, v in weights.items():
        var = variables[k]
        var.initial = np.asarray(v, dtype=var.type.np_dtype()).reshape(
            tuple(int(d) for d in var.type.shape))
