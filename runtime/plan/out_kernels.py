"""The NumPy backend's kernel table: for each op of the registry, its `out=` form (how to
compute the op into a buffer the plan owns, by the same NumPy calls as the plain kernel, or for
sigmoid the same arithmetic, so that results are bit-identical) or the reason it runs its
plain kernel in the buffer-reusing step (`runtime.plan.buffers`).

`NUMPY_KERNELS` is the table (`runtime.backends.KernelTable`): `out` maps an op to its form
(`Call -> OutSpec | None`: None when these operands do not fit it), `plain` an op to its
reason. `out_spec` finds the form of a node through a table; `spec_matches` checks a form
against the plain kernel's result before a plan uses it. A new op gets a row in one of the
two (`tests/test_plan.py` fails on an op in neither).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from runtime.backends import KernelTable
from runtime.ir import Graph, Node, concrete_attrs
from runtime.ops import REGISTRY
from runtime.ops.conv import conv2d_grad_input_into, conv2d_into
from runtime.ops.fused import FUSED
from runtime.ops.nn import ce_grad_kernel, gate_affine, softmax_into
from runtime.ops.pool import max_pool2d_grad_into, max_pool2d_into
from runtime.ops.shape_ops import sum_to_axes
from runtime.plan.codegen import chain

__all__ = ["NUMPY_KERNELS", "Call", "OutSpec", "is_zero", "layout", "out_spec", "same",
           "spec_matches"]

_BITS = {2: np.int16, 4: np.int32, 8: np.int64}


@dataclass
class OutSpec:
    """How to compute one op into a given buffer: `make(out, scratch)` returns the kernel
    (same inputs as the plain one, returns `out`); `likes` are arrays whose shape, dtype and
    strides the scratch buffers copy."""

    make: Any
    likes: list[Any]


def layout(a: Any) -> tuple:
    return (a.shape, a.dtype.str, a.strides)


def is_zero(v: Any) -> bool:
    """A float constant whose every element is +0.0 (all bits clear)."""
    return (isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.dtype.itemsize in _BITS
            and not np.any(v.view(_BITS[v.dtype.itemsize])))


def _fresh(res: Any, args: list[Any]) -> bool:
    """`res` is an array that shares no memory with the inputs (a kernel made it)."""
    return isinstance(res, np.ndarray) and not any(
        isinstance(a, np.ndarray) and np.may_share_memory(res, a) for a in args)


def same(a: Any, b: Any) -> bool:
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and layout(a) == layout(b)
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


def spec_key(node: Node, attrs: Mapping[str, Any], dims: Mapping[str, int], args: list[Any],
             res: Any, zero: list[bool]) -> tuple | None:
    """What `out_spec` and `spec_matches` depend on for this node: its op and concrete
    attributes (a fused node's: its members'), and its operands' and result's layouts, zero
    flags and aliasing; nodes with equal keys get the same form (a deep network has
    thousands). None when an operand is not an array (there is no form)."""
    if not isinstance(res, np.ndarray) or not all(
            isinstance(a, (np.ndarray, np.generic)) for a in args):
        return None
    if node.op == FUSED:
        members = _body_members(node.regions[0], dims)
        if members is None:
            return None
        what: Any = tuple((n.op, refs, _freeze(a)) for n, refs, a, _ in members)
    else:
        what = _freeze(attrs)
    return (node.op, what, tuple(layout(a) for a in args), layout(res), tuple(zero),
            _fresh(res, args))


def _freeze(v: Any) -> Any:
    """An attribute value as a hashable key that tells apart what == does not (-0.0 and
    0.0, True and 1)."""
    if isinstance(v, Mapping):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.ndarray):
        return (v.shape, v.dtype.str, v.tobytes())
    if isinstance(v, float | np.floating):
        return ("float", repr(float(v)))
    return (type(v).__name__, v)


def spec_matches(spec: OutSpec, args: list[Any], res: Any, out: Any = None,
                 alias: list[bool] | None = None) -> bool:
    """Run the out= kernel once, in `out` (default: a new buffer filled with NaN: a reused
    plan buffer holds stale values, and new large arrays would come back as zero pages) with
    scratch filled with NaN: the same bytes and strides as the plain one. The operands
    flagged in `alias` are `out` itself (an in-place update: `out` a copy of the variable)."""
    out = _poisoned(res) if out is None else out
    if alias is not None:
        args = [out if a else v for a, v in zip(alias, args)]
    got = spec.make(out, [_poisoned(like) for like in spec.likes])(*args)
    return got is out and same(out, res)


def _poisoned(like: Any) -> Any:
    a = np.empty_like(like)
    if a.dtype.kind in "fc":
        a.fill(np.nan)
    return a


class Call(NamedTuple):
    """What a form sees: the array module, the node with its concrete attributes and the
    bound dims, the plain kernel's operands and result, which operands are constant +0.0
    (`zero`) and which will be the output buffer itself (`alias`: an in-place update)."""

    xp: Any
    node: Node
    attrs: Mapping[str, Any]
    dims: Mapping[str, int]
    args: list[Any]
    res: Any
    zero: list[bool]
    alias: list[bool]
    same_float: bool  # the result and every operand have one float dtype
    table: KernelTable  # the table the form is from (a fused body's members use it too)


OutForm = Callable[[Call], "OutSpec | None"]


def out_spec(xp: Any, node: Node, attrs: Mapping[str, Any], dims: Mapping[str, int],
             args: list[Any], res: Any, zero: list[bool],
             alias: list[bool] | None = None, table: KernelTable | None = None
             ) -> OutSpec | None:
    """The `out=` form of `node` (with these concrete `attrs`) in `table` (default
    `NUMPY_KERNELS`) for these operands (the plain kernel's `args` and result `res`),
    computing the same values by the same calls; None when there is none.
    `zero[i]`: input i is a constant +0.0; `alias[i]`: input i will be the output buffer itself
    (an in-place update: only elementwise kernels, which NumPy makes overlap-safe)."""
    form = (table or NUMPY_KERNELS).out.get(node.op)
    if form is None or not _fresh(res, args) or not all(
            isinstance(a, (np.ndarray, np.generic)) for a in args):
        return None
    rdt = res.dtype
    same_float = rdt.kind == "f" and all(a.dtype == rdt for a in args)
    return form(Call(xp, node, attrs, dims, args, res, zero, alias or [False] * len(args),
                     same_float, table or NUMPY_KERNELS))


def _float_ufunc(name: str) -> OutForm:
    """A ufunc of one float dtype (`name` in the array module), into the buffer."""
    def form(c: Call) -> OutSpec | None:
        if not c.same_float:
            return None
        uf = getattr(c.xp, name)
        return OutSpec(lambda out, s: functools.partial(uf, out=out), [])
    return form


def _compare(name: str) -> OutForm:
    """A comparison or logical ufunc of operands of one dtype, into a bool buffer."""
    def form(c: Call) -> OutSpec | None:
        if c.res.dtype != np.bool_ or len({a.dtype for a in c.args}) != 1:
            return None
        uf = getattr(c.xp, name)
        return OutSpec(lambda out, s: functools.partial(uf, out=out), [])
    return form


def _relu(c: Call) -> OutSpec | None:
    # maximum(x, 0) against a full array of +0.0: the same values (NaN and -0.0 included;
    # `spec_matches` checks), and NumPy's SIMD loop, which a scalar operand misses (4x)
    if not c.same_float:
        return None
    mx = c.xp.maximum

    def make_relu(out: Any, s: list[Any]) -> Any:
        zeros = np.zeros_like(out)  # owned by the kernel, never pooled
        return lambda x: mx(x, zeros, out=out)
    return OutSpec(make_relu, [])


def _matmul(c: Call) -> OutSpec | None:
    if not c.same_float or any(a.ndim < 2 for a in c.args) or any(c.alias):
        return None
    mm = c.xp.matmul
    return OutSpec(lambda out, s: functools.partial(mm, out=out), [])


def _sum_to(c: Call) -> OutSpec | None:
    # as `sum_to_fwd`: one keepdims sum over the broadcast axes, then a reshape
    xp, attrs, x, res = c.xp, c.attrs, c.args[0], c.res
    if any(c.alias) or x.dtype.kind != "f" or res.dtype != x.dtype:
        return None
    axes = sum_to_axes(x.shape, tuple(attrs["shape"]))
    if not axes or not res.flags.c_contiguous:
        return None
    kshape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    red = xp.add.reduce

    def make(out: Any, s: list[Any]) -> Any:
        keep = out.reshape(kshape)

        def kernel(x: Any) -> Any:
            red(x, axis=axes, dtype=None, out=keep, keepdims=True)
            return out
        return kernel
    return OutSpec(make, [])


def _sigmoid(c: Call) -> OutSpec | None:
    """The sigmoid kernel's `where(x >= 0, 1 / (1 + e), e / (1 + e))`, e = exp(-|x|), as
    `n / (1 + e)` with the numerator n = 1 or e picked on the bit patterns by x's sign bit
    (-|x| too is x with its sign bit set): the same bits (x = -0.0 gives 1/2 either way; for a
    NaN both divide by the NaN 1 + e), no allocation and no branchy select."""
    xp, x, res = c.xp, c.args[0], c.res
    if (not c.same_float or any(c.alias) or res.dtype.itemsize not in (4, 8)
            or x.dtype != res.dtype):
        return None
    bits = _BITS[res.dtype.itemsize]
    shift = 8 * res.dtype.itemsize - 1
    sign = bits(np.array(-0.0, res.dtype).view(bits))
    one = bits(np.array(1.0, res.dtype).view(bits))
    bor, bxor, band, rshift = xp.bitwise_or, xp.bitwise_xor, xp.bitwise_and, xp.right_shift
    exp, add, div = xp.exp, xp.add, xp.divide

    def make(out: Any, s: list[Any]) -> Any:
        e, d, m = s
        eb, ob = e.view(bits), out.view(bits)

        def kernel(x: Any) -> Any:
            xb = x.view(bits)
            bor(xb, sign, out=eb)  # -|x|
            exp(e, out=e)
            add(1.0, e, out=d)
            rshift(xb, shift, out=m)  # all ones where the sign bit is set, else 0
            bxor(eb, one, out=ob)
            band(ob, m, out=ob)
            bxor(ob, one, out=ob)  # e where x's sign bit is set, else 1
            div(out, d, out=out)
            return out
        return kernel
    return OutSpec(make, [res, res, np.empty(res.shape, dtype=bits)])


def _softmax(c: Call) -> OutSpec | None:
    # `softmax_into`, the kernel itself, with the buffer and scratch for its statistics
    xp, x, res = c.xp, c.args[0], c.res
    axis, temp = c.attrs["axis"], c.attrs["temperature"]
    if not c.same_float or any(c.alias) or x.dtype != res.dtype or x.shape != res.shape:
        return None
    stat = np.empty(np.max(res, axis=axis, keepdims=True).shape, dtype=res.dtype)

    def make(out: Any, s: list[Any]) -> Any:
        stats = tuple(s)
        return lambda x: softmax_into(xp, out, x, axis, temp, stats)
    return OutSpec(make, [stat, stat])


def _ce_grad(c: Call) -> OutSpec | None:
    # `ce_grad_kernel` itself, into the buffer (the plain kernel is it on a new array)
    xp, (z, _, g), res = c.xp, c.args, c.res
    if any(c.alias) or res.dtype.kind != "f" or z.dtype != res.dtype or g.dtype != res.dtype:
        return None
    attrs = c.attrs
    return OutSpec(lambda out, s: lambda z, y, g: ce_grad_kernel(xp, out, z, y, g, **attrs), [])


def _into(kernel: Callable[..., Any]) -> OutForm:
    """A kernel written as `kernel(xp, out, *operands, **attrs)` (the plain one passes a new
    array), into the buffer; operands and result of one float dtype, and a C-contiguous
    result (the buffer is made like it, and the kernels view it in other shapes)."""
    def form(c: Call) -> OutSpec | None:
        if not c.same_float or any(c.alias) or not c.res.flags.c_contiguous:
            return None
        xp, attrs = c.xp, c.attrs
        return OutSpec(lambda out, s: functools.partial(kernel, xp, out, **attrs), [])
    return form


def _tensordot(c: Call) -> OutSpec | None:
    # as NumPy's tensordot with an integer `axes`: one dot of the operands as matrices
    xp, res = c.xp, c.res
    a, b = c.args
    n = c.attrs["axes"]
    if not c.same_float or any(c.alias) or not res.flags.c_contiguous or res.ndim == 0:
        return None
    m = int(np.prod(a.shape[:a.ndim - n], dtype=np.int64))
    k = int(np.prod(a.shape[a.ndim - n:], dtype=np.int64))
    cols = int(np.prod(b.shape[n:], dtype=np.int64))
    dot = xp.dot

    def make(out: Any, s: list[Any]) -> Any:
        o2 = out.reshape(m, cols)

        def kernel(a: Any, b: Any) -> Any:
            dot(a.reshape(m, k), b.reshape(k, cols), out=o2)
            return out
        return kernel
    return OutSpec(make, [])


def _where(c: Call) -> OutSpec | None:
    """`where(c, a, 0)` (ReLU's backward) as `a & -c` on the bit patterns, and `where(c, 0, b)`
    as `b & (c - 1)`: the selected elements' exact bits, +0.0 elsewhere, without NumPy's
    branchy select (several times slower on unpredictable masks)."""
    xp, zero = c.xp, c.zero
    cond, a, b = c.args
    rdt = c.res.dtype
    if (cond.dtype != np.bool_ or a.dtype != rdt or b.dtype != rdt or rdt.kind != "f"
            or rdt.itemsize not in _BITS or not (zero[1] or zero[2])):
        return None
    bits = _BITS[rdt.itemsize]
    keep_a = zero[2]
    neg, sub, band = xp.negative, xp.subtract, xp.bitwise_and
    i8 = np.int8

    def make(out: Any, s: list[Any]) -> Any:
        (m8,) = s
        ov = out.view(bits)

        def kernel(cv: Any, a: Any, b: Any) -> Any:
            if keep_a:
                neg(cv.view(i8), out=m8)
                band(a.view(bits), m8, out=ov)
            else:
                sub(cv.view(i8), 1, out=m8)
                band(b.view(bits), m8, out=ov)
            return out
        return kernel
    return OutSpec(make, [np.empty(cond.shape, dtype=np.int8)])


def _fused(c: Call) -> OutSpec | None:
    """A fused node's body with each member in its out= form where it has one (the others
    allocate as before). The last member writes the output buffer; an intermediate of the
    output's layout is computed in the output buffer too while that holds no live value
    (elementwise ops may read and write the same buffer) and no later member reads an input
    that is the output buffer (`alias`), otherwise in scratch."""
    xp, dims, args, res, zero, alias = c.xp, c.dims, c.args, c.res, c.zero, c.alias
    structure = _body_members(c.node.regions[0], dims)
    if structure is None:
        return None
    n_in = len(args)
    vals = list(args)
    members = []
    for n, refs, attrs, opdef in structure:
        margs = [vals[r] for r in refs]
        v = opdef.forward(xp, *margs, **attrs)
        vals.append(v)
        members.append((n, refs, attrs, margs, v, opdef))
    last: dict[int, int] = {}
    for k, m in enumerate(members):
        for r in m[1]:
            last[r] = k
    alias_last = max((last.get(r, -1) for r in range(n_in) if alias[r]), default=-1)
    if not same(vals[-1], res):
        return None
    likes: list[Any] = []
    plan: list[tuple[Any, Any, tuple[int, ...], int, int]] = []  # (spec|fn, target, refs, ...)
    holder: int | None = None  # the ref whose value is in the output buffer
    final = len(members) - 1
    for k, (n, refs, attrs, margs, v, opdef) in enumerate(members):
        z = [r < n_in and zero[r] for r in refs]
        spec = out_spec(xp, n, attrs, dims, margs, v, z, [r < n_in and alias[r] for r in refs],
                        c.table)
        if spec is None and k == final:
            return None
        if spec is None:
            plan.append((functools.partial(opdef.forward, xp, **attrs), None, refs, 0, 0))
            continue
        free = (holder is None or last[holder] <= k) and k >= alias_last
        if k == final or (free and layout(v) == layout(res)):
            target = "out"
            holder = n_in + k
        else:
            target = len(likes)
            likes.append(v)
        s0 = len(likes)
        likes.extend(spec.likes)
        plan.append((spec, target, refs, s0, len(likes)))

    member_refs = [refs for _spec, _target, refs, _s0, _s1 in plan]

    def make(out: Any, scratch: list[Any]) -> Any:
        fns = [spec if target is None else
               spec.make(out if target == "out" else scratch[target], scratch[s0:s1])
               for spec, target, _refs, s0, s1 in plan]
        return chain(fns, n_in, member_refs, out)
    return OutSpec(make, likes)



def _lstm_gates(c: Call) -> OutSpec | None:
    """The plain kernel's tanh(z s) s + b (`runtime.ops.nn.gate_affine`), one ufunc at a time
    in the buffer."""
    if not c.same_float or any(c.alias):
        return None
    xp = c.xp
    s, b = gate_affine(xp, c.res.dtype, c.res.shape[-1])
    mul, tanh, add = xp.multiply, xp.tanh, xp.add

    def make(out: Any, scratch: list[Any]) -> Any:
        def kernel(z: Any) -> Any:
            mul(z, s, out=out)
            tanh(out, out=out)
            mul(out, s, out=out)
            return add(out, b, out=out)
        return kernel
    return OutSpec(make, [])


def _concat(c: Call) -> OutSpec | None:
    """`concatenate(xs, axis)` into the buffer (operands of the result's dtype: the plain
    kernel promotes mixed ones first)."""
    if any(c.alias) or not c.args or any(a.dtype != c.res.dtype for a in c.args):
        return None
    cat, axis = c.xp.concatenate, c.attrs["axis"]

    def make(out: Any, scratch: list[Any]) -> Any:
        return lambda *xs: cat(xs, axis=axis, out=out)
    return OutSpec(make, [])


_VIEW = "returns its input or a view of it: there is no new array to place"
_NOT_YET = "no out= form yet: its plain kernel allocates its result"
_RANDOM = "draws from the run's generator: its plain kernel allocates the draw"
_SCALAR = "makes a scalar or reads a tuple: nothing worth a buffer"

NUMPY_KERNELS = KernelTable(
    out={
        # binary and unary ufuncs of one float dtype
        **{op: _float_ufunc(name) for op, name in (
            ("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("div", "true_divide"),
            ("pow", "power"), ("maximum", "maximum"), ("minimum", "minimum"),
            ("neg", "negative"), ("exp", "exp"), ("log", "log"), ("log1p", "log1p"),
            ("expm1", "expm1"), ("sqrt", "sqrt"), ("abs", "absolute"), ("sign", "sign"),
            ("sin", "sin"), ("cos", "cos"), ("tanh", "tanh"), ("square", "square"))},
        # comparisons and logical ops, into bool buffers
        **{op: _compare(op) for op in (
            "greater", "less", "greater_equal", "less_equal", "equal", "not_equal",
            "logical_and", "logical_or")},
        "relu": _relu,
        "matmul": _matmul,
        "sum_to": _sum_to,
        "softmax": _softmax,
        "softmax_cross_entropy_grad": _ce_grad,
        "conv2d": _into(conv2d_into),
        "conv2d_grad_input": _into(conv2d_grad_input_into),
        "max_pool2d": _into(max_pool2d_into),
        "max_pool2d_grad": _into(max_pool2d_grad_into),
        "sigmoid": _sigmoid,
        "lstm_gates": _lstm_gates,
        "concat": _concat,
        "tensordot": _tensordot,
        "where": _where,
        FUSED: _fused,
    },
    plain={
        **dict.fromkeys(("reshape", "transpose", "broadcast_to", "getitem", "stop_gradient"),
                        _VIEW),
        **dict.fromkeys(("item", "size"), _SCALAR),
        **dict.fromkeys(("random_bernoulli", "random_categorical", "random_normal",
                         "random_randint", "random_uniform"), _RANDOM),
        "loop": "runs its body's own plan (`runtime.plan.scan`), which reuses buffers per "
                "iteration",
        "cast": "astype(copy=False) returns its input when the dtype is already right",
        **dict.fromkeys((
            "argmax", "avg_pool2d", "avg_pool2d_grad", "batch_norm_train", "conv1d",
            "conv2d_grad_weight", "eigvalsh", "erf", "full",
            "full_like", "gelu", "group_norm", "index_put", "inv", "layer_norm", "leaky_relu",
            "log_softmax", "logical_not", "logsumexp", "masked_softmax", "max",
            "max_pool2d_pick", "mean", "min", "norm", "one_hot",
            "sigmoid_bce", "softmax_cross_entropy", "softplus", "solve", "step", "sum",
            "swish", "take", "take_grad", "variance"), _NOT_YET),
    },
    # forms that take `alias` (the others return None when an operand is the output)
    overlap_safe=frozenset((
        "add", "sub", "mul", "div", "pow", "maximum", "minimum", "neg", "exp", "log", "log1p",
        "expm1", "sqrt", "abs", "sign", "sin", "cos", "tanh", "square", "greater", "less",
        "greater_equal", "less_equal", "equal", "not_equal", "logical_and", "logical_or",
        "relu", "where", FUSED)))


Members = list[tuple[Node, tuple[int, ...], dict[str, Any], Any]]
# body -> bound dims -> its members (a deep network's plan asks for each body twice)
_MEMBERS: weakref.WeakKeyDictionary[Graph, dict[tuple, Members | None]] = (
    weakref.WeakKeyDictionary())


def _body_members(body: Graph, dims: Mapping[str, int]) -> Members | None:
    """The members of a fused body in order: (node, operand positions, concrete attributes,
    op), an operand's position counting the body's args first and then the members; None
    when a member has no plain forward of its own or the last one is not the result."""
    by_dims = _MEMBERS.setdefault(body, {})
    key = tuple(sorted(dims.items()))
    if key in by_dims:
        return by_dims[key]
    ref = {a: k for k, a in enumerate(body.args())}  # body node -> position in `vals`
    members: Members | None = []
    for i in body.topo_order(body.results()):
        n = body[i]
        if n.op == "arg":
            continue
        opdef = REGISTRY.get(n.op)  # a const in the body: no out= form
        if opdef is None or opdef.forward is None or opdef.compile is not None:
            members = None
            break
        attrs = concrete_attrs(n.attrs, dims)  # as `PlanContext.kernel`
        ref[i] = len(ref)
        members.append((n, tuple(ref[j] for j in n.inputs), attrs, opdef))
    if members is not None and (not members or ref[body.results()[0]] != len(ref) - 1):
        members = None
    by_dims[key] = members
    return members
