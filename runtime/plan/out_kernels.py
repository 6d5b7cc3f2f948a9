"""The `out=` forms of kernels on NumPy: how to compute an op into a buffer the plan owns
(ufuncs, relu, sigmoid, softmax, matmul, tensordot, sum_to, `where` against a zero, the bodies
of fused elementwise nodes), by the same NumPy calls as the plain kernel (or, for sigmoid, the
same arithmetic), so that results are bit-identical.
`spec_matches` checks a form against the plain kernel's result before a plan uses it."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.ir import Graph, Node, concrete_attrs
from runtime.ops import REGISTRY
from runtime.ops.fused import FUSED
from runtime.ops.shape_ops import sum_to_axes

__all__ = ["OutSpec", "is_zero", "layout", "out_spec", "same", "spec_matches"]

_BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "true_divide",
           "pow": "power", "maximum": "maximum", "minimum": "minimum"}
_COMPARE = ("greater", "less", "greater_equal", "less_equal", "equal", "not_equal",
            "logical_and", "logical_or")
_UNARY = {"neg": "negative", "exp": "exp", "log": "log", "log1p": "log1p", "expm1": "expm1",
          "sqrt": "sqrt", "abs": "absolute", "sign": "sign", "sin": "sin", "cos": "cos",
          "tanh": "tanh", "square": "square"}
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


def spec_matches(spec: OutSpec, args: list[Any], res: Any) -> bool:
    """Run the out= kernel once on new buffers: the same bytes and strides as the plain one."""
    out = np.empty_like(res)
    got = spec.make(out, [np.empty_like(like) for like in spec.likes])(*args)
    return got is out and same(out, res)


def out_spec(xp: Any, node: Node, attrs: Mapping[str, Any], dims: Mapping[str, int],
              args: list[Any], res: Any, zero: list[bool],
              alias: list[bool] | None = None) -> OutSpec | None:
    """The `out=` form of `node` (with these concrete `attrs`) for these operands (the plain
    kernel's `args` and result `res`), computing the same values by the same NumPy calls;
    None when there is none.
    `zero[i]`: input i is a constant +0.0; `alias[i]`: input i will be the output buffer itself
    (an in-place update: only elementwise kernels, which NumPy makes overlap-safe)."""
    if not _fresh(res, args) or not all(isinstance(a, (np.ndarray, np.generic)) for a in args):
        return None
    alias = alias or [False] * len(args)
    op = node.op
    rdt = res.dtype
    dts = [a.dtype for a in args]
    same_float = rdt.kind == "f" and all(d == rdt for d in dts)
    if op in _BINARY or op in _UNARY:
        if not same_float:
            return None
        uf = getattr(xp, _BINARY.get(op) or _UNARY[op])
        return OutSpec(lambda out, s: functools.partial(uf, out=out), [])
    if op in _COMPARE:
        if rdt != np.bool_ or len(set(dts)) != 1:
            return None
        uf = getattr(xp, op)
        return OutSpec(lambda out, s: functools.partial(uf, out=out), [])
    if op == "relu":
        # maximum(x, 0) against a full array of +0.0: the same values (NaN and -0.0 included;
        # `spec_matches` checks), and NumPy's SIMD loop, which a scalar operand misses (4x)
        if not same_float:
            return None
        mx = xp.maximum

        def make_relu(out: Any, s: list[Any]) -> Any:
            zeros = np.zeros_like(out)  # owned by the kernel, never pooled
            return lambda x: mx(x, zeros, out=out)
        return OutSpec(make_relu, [])
    if op == "matmul":
        if not same_float or any(a.ndim < 2 for a in args) or any(alias):
            return None
        mm = xp.matmul
        return OutSpec(lambda out, s: functools.partial(mm, out=out), [])
    if op == "sum_to":
        return None if any(alias) else _sum_to_spec(xp, attrs, args[0], res)
    if op == "softmax":
        return _softmax_spec(xp, attrs, args[0], res) if same_float and not any(alias) else None
    if op == "sigmoid":
        return _sigmoid_spec(xp, args[0], res) if same_float and not any(alias) else None
    if op == "tensordot":
        return _tensordot_spec(xp, attrs, args, res) if same_float and not any(alias) else None
    if op == "where":
        return _where_spec(xp, args, res, zero)
    if op == FUSED:
        return _fused_spec(xp, node.regions[0], dims, args, res, zero, alias)
    return None


def _sum_to_spec(xp: Any, attrs: Mapping[str, Any], x: Any, res: Any) -> OutSpec | None:
    # as `sum_to_fwd`: one keepdims sum over the broadcast axes, then a reshape
    if x.dtype.kind != "f" or res.dtype != x.dtype:
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


def _sigmoid_spec(xp: Any, x: Any, res: Any) -> OutSpec | None:
    """The sigmoid kernel's `where(x >= 0, 1 / (1 + e), e / (1 + e))`, e = exp(-|x|), as
    `n / (1 + e)` with the numerator n = 1 or e picked on the bit patterns by x's sign bit
    (-|x| too is x with its sign bit set): the same bits (x = -0.0 gives 1/2 either way; for a
    NaN both divide by the NaN 1 + e), no allocation and no branchy select."""
    if res.dtype.itemsize not in (4, 8) or x.dtype != res.dtype:
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


def _softmax_spec(xp: Any, attrs: Mapping[str, Any], x: Any, res: Any) -> OutSpec | None:
    # as `_softmax`: e = exp(z - max z), e / Σ e, with z = x / T, in the output buffer
    axis, temp = attrs["axis"], attrs["temperature"]
    if x.dtype != res.dtype or x.shape != res.shape:
        return None
    stat = np.empty(np.max(res, axis=axis, keepdims=True).shape, dtype=res.dtype)
    mx, sm, sub, exp, div = xp.max, xp.sum, xp.subtract, xp.exp, xp.divide

    def make(out: Any, s: list[Any]) -> Any:
        m, total = s

        def kernel(x: Any) -> Any:
            z = x
            if temp != 1.0:
                div(x, temp, out=out)
                z = out
            mx(z, axis=axis, keepdims=True, out=m)
            sub(z, m, out=out)
            exp(out, out=out)
            sm(out, axis=axis, keepdims=True, out=total)
            div(out, total, out=out)
            return out
        return kernel
    return OutSpec(make, [stat, stat])


def _tensordot_spec(xp: Any, attrs: Mapping[str, Any], args: list[Any],
                    res: Any) -> OutSpec | None:
    # as NumPy's tensordot with an integer `axes`: one dot of the operands as matrices
    a, b = args
    n = attrs["axes"]
    if not res.flags.c_contiguous or res.ndim == 0:
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


def _where_spec(xp: Any, args: list[Any], res: Any, zero: list[bool]) -> OutSpec | None:
    """`where(c, a, 0)` (ReLU's backward) as `a & -c` on the bit patterns, and `where(c, 0, b)`
    as `b & (c - 1)`: the selected elements' exact bits, +0.0 elsewhere, without NumPy's
    branchy select (several times slower on unpredictable masks)."""
    c, a, b = args
    rdt = res.dtype
    if (c.dtype != np.bool_ or a.dtype != rdt or b.dtype != rdt or rdt.kind != "f"
            or rdt.itemsize not in _BITS or not (zero[1] or zero[2])):
        return None
    bits = _BITS[rdt.itemsize]
    keep_a = zero[2]
    neg, sub, band = xp.negative, xp.subtract, xp.bitwise_and
    i8 = np.int8

    def make(out: Any, s: list[Any]) -> Any:
        (m8,) = s
        ov = out.view(bits)

        def kernel(c: Any, a: Any, b: Any) -> Any:
            if keep_a:
                neg(c.view(i8), out=m8)
                band(a.view(bits), m8, out=ov)
            else:
                sub(c.view(i8), 1, out=m8)
                band(b.view(bits), m8, out=ov)
            return out
        return kernel
    return OutSpec(make, [np.empty(c.shape, dtype=np.int8)])


def _fused_spec(xp: Any, body: Graph, dims: Mapping[str, int], args: list[Any], res: Any,
                zero: list[bool], alias: list[bool]) -> OutSpec | None:
    """A fused node's body with each member in its out= form where it has one (the others
    allocate as before). The last member writes the output buffer; an intermediate of the
    output's layout is computed in the output buffer too while that holds no live value
    (elementwise ops may read and write the same buffer) and no later member reads an input
    that is the output buffer (`alias`), otherwise in scratch."""
    n_in = len(args)
    ref = {a: k for k, a in enumerate(body.args())}  # body node -> position in `vals`
    vals = list(args)
    members = []
    for i in body.topo_order(body.results()):
        n = body[i]
        if n.op == "arg":
            continue
        opdef = REGISTRY.get(n.op)  # a const in the body: no out= form
        if opdef is None or opdef.forward is None or opdef.compile is not None:
            return None
        attrs = concrete_attrs(n.attrs, dims)  # as `PlanContext.kernel`
        refs = tuple(ref[j] for j in n.inputs)
        margs = [vals[r] for r in refs]
        v = opdef.forward(xp, *margs, **attrs)
        ref[i] = len(vals)
        vals.append(v)
        members.append((n, refs, attrs, margs, v, opdef))
    if not members or ref[body.results()[0]] != len(vals) - 1:
        return None
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
        spec = out_spec(xp, n, attrs, dims, margs, v, z, [r < n_in and alias[r] for r in refs])
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

    def make(out: Any, scratch: list[Any]) -> Any:
        steps = []
        for spec, target, refs, s0, s1 in plan:
            if target is None:
                steps.append((spec, refs))
            else:
                buf = out if target == "out" else scratch[target]
                steps.append((spec.make(buf, scratch[s0:s1]), refs))

        def kernel(*inputs: Any) -> Any:
            v = list(inputs)
            for fn, refs in steps:
                v.append(fn(*[v[r] for r in refs]))
            return out
        return kernel
    return OutSpec(make, likes)
