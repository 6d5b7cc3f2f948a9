"""Compile a graph into a flat execution plan and run it.

`Plan` binds symbolic dims to sizes, orders the needed nodes once, resolves attributes and
binds each kernel to its backend and attributes, and allocates slots. A step is then one loop
over `(kernel, input slots, output slot)` triples: no graph walking, no shape inference, no
dict lookups. Parameters and state live in persistent buffers that updates overwrite in place.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.backends import Backend
from runtime.errors import UserError
from runtime.ir import LEAF_OPS, Graph, IRError, Loc, Node, concrete_attrs
from runtime.ops import REGISTRY
from runtime.ops.fused import FUSED
from runtime.ops.shape_ops import sum_to_axes


class NonFiniteError(UserError):
    """A node produced NaN or Inf (raised by `--nan-check` runs)."""

    def __init__(self, nid: int, op: str, loc: Loc | None, of_op: str | None,
                 of_loc: Loc | None, name: str | None) -> None:
        head = f"non-finite value produced by node %{nid} ({op})"
        tail = f" [{name}]" if name else ""
        if of_op is not None:
            tail += f"; it is part of the gradient of {of_op}" + (f" at {of_loc}" if of_loc else "")
        self.what = head + tail  # without the node's own position, for callers that show it
        super().__init__(head + (f" at {loc}" if loc else "") + tail)
        self.nid, self.op, self.loc = nid, op, loc


@dataclass
class _Instr:
    fn: Any
    ins: tuple[int, ...]
    out: int
    nid: int
    attrs: dict[str, Any]  # concrete attributes (the out= forms of `_build_fast` read them)


class PlanContext:
    """What a kernel may need when its plan is built, handed to an op's `compile` hook: the
    array module, the bound dims, the run's generator (through a proxy, so that a generator
    restored from a checkpoint takes effect) and `compile_region` for a loop's body."""

    def __init__(self, backend: Backend, dims: Mapping[str, int], rng: Any) -> None:
        self.backend = backend
        self.xp = backend.xp
        self.dims = dims
        self.rng = rng

    def kernel(self, node: Any) -> tuple[Any, dict[str, Any]]:
        """The kernel of a node (its op's forward, or what its compile hook makes) and the
        node's attributes with symbolic dims bound."""
        opdef = REGISTRY[node.op]
        attrs = concrete_attrs(node.attrs, self.dims)
        if opdef.compile is not None:
            return opdef.compile(self, node, attrs), attrs
        return functools.partial(opdef.forward, self.xp, **attrs), attrs

    def compile_region(self, region: Graph) -> RegionPlan:
        return RegionPlan(region, self)


class RegionPlan:
    """A region (a loop's body) compiled once: `run(args)` sets its `arg` slots, runs its
    kernels in order (generated code, no graph walking) and returns its results."""

    def __init__(self, region: Graph, ctx: PlanContext) -> None:
        order = region.topo_order()
        slot = {nid: k for k, nid in enumerate(order)}
        self.vals: list[Any] = [None] * len(order)
        self.arg_slots = [slot[i] for i in region.args()]
        self.result_slots = [slot[i] for i in region.results()]
        steps = []
        for nid in order:
            n = region[nid]
            if n.op == "const":
                self.vals[slot[nid]] = ctx.backend.asarray(region.consts[nid],
                                                           dtype=n.type.np_dtype())
            elif n.op not in LEAF_OPS:
                fn, _attrs = ctx.kernel(n)
                steps.append((fn, tuple(slot[i] for i in n.inputs), slot[nid]))
        self._step = _codegen(steps, "_region")

    def run(self, args: Any) -> list[Any]:
        vals = self.vals
        for s, a in zip(self.arg_slots, args):
            vals[s] = a
        self._step(vals)
        return [vals[s] for s in self.result_slots]


class Plan:
    """One compiled graph for one binding of symbolic dims on one backend.

    `outputs` are the names in `graph.outputs` to return; when `apply_updates` is true the
    graph's updates are computed and written into the variable buffers after the step.

    On NumPy, after the first step the plan switches to a buffer-reusing step (see
    `_build_fast`); `reuse_buffers = False` (on the class or an instance before its first
    step) keeps the plain loop. Results are bit-identical either way.
    """

    reuse_buffers = True

    def __init__(self, graph: Graph, dims: Mapping[str, int], backend: Backend,
                 variables: dict[str, Any], outputs: list[str] | None = None,
                 apply_updates: bool = True, rng: Any = None) -> None:
        self.graph = graph
        self.dims = dict(dims)
        self.backend = backend
        self.variables = variables  # name -> persistent backend array (updated in place)
        self.output_names = list(graph.outputs) if outputs is None else list(outputs)
        self.rng = rng
        targets = [graph.outputs[n] for n in self.output_names]
        upd = dict(graph.updates) if apply_updates else {}
        targets += list(upd.values())
        order = graph.topo_order(targets) if targets else []
        slot = {nid: k for k, nid in enumerate(order)}
        self.vals: list[Any] = [None] * len(order)
        self.feed_slots: list[tuple[str, int, tuple, Any]] = []
        self.var_slots: list[tuple[str, int]] = []
        self.instrs: list[_Instr] = []
        xp = backend.xp
        ctx = PlanContext(backend, dims, _RngProxy(self))
        for nid in order:
            n = graph[nid]
            if n.op == "input":
                self.feed_slots.append((n.name, slot[nid], n.type.concrete(dims),
                                        n.type.np_dtype()))
            elif n.op in ("param", "state"):
                if n.name not in variables:
                    raise IRError(f"no value for variable {n.name!r}")
                self.var_slots.append((n.name, slot[nid]))
            elif n.op == "const":
                self.vals[slot[nid]] = backend.asarray(graph.consts[nid],
                                                       dtype=n.type.np_dtype())
            else:
                fn, attrs = ctx.kernel(n)
                self.instrs.append(_Instr(fn, tuple(slot[i] for i in n.inputs), slot[nid], nid,
                                          attrs))
        self.out_slots = [slot[graph.outputs[n]] for n in self.output_names]
        self.upd_slots = [(name, slot[nid]) for name, nid in upd.items()]
        leaf_slots = {slot[i] for i in order if graph[i].op in LEAF_OPS}
        self._upd_alias = {s for _, s in self.upd_slots if s in leaf_slots}
        self._steps = [(i.fn, i.ins, i.out) for i in self.instrs]
        self._leaf_slots = leaf_slots
        self._const_slots = {slot[i] for i in order if graph[i].op == "const"}
        # the buffer-reusing step (see `_build_fast`): built after the first plain step
        self._fast: Any = None
        self._fast_sig: tuple | None = None
        # training plans only: an evaluation plan keeps no buffers between its (rare) runs
        self._fast_state = ("new" if self.reuse_buffers and xp is np and self.upd_slots
                            else "off")
        self._pending: str | None = None  # how the last `compute` ran (for `commit`)

    def _load(self, feeds: Mapping[str, Any]) -> None:
        vals = self.vals
        for name, s in self.var_slots:
            vals[s] = self.variables[name]
        for name, s, _shape, dtype in self.feed_slots:
            try:
                v = feeds[name]
            except KeyError:
                raise IRError(f"no value fed for input {name!r}") from None
            vals[s] = self.backend.asarray(v, dtype=dtype)

    def run(self, feeds: Mapping[str, Any], check_finite: bool = False) -> list[Any]:
        """Run one step; returns the outputs in `self.output_names` order."""
        results = self.compute(feeds, check_finite)
        if self.upd_slots:
            self.commit()
        return results

    def compute(self, feeds: Mapping[str, Any], check_finite: bool = False) -> list[Any]:
        """The first half of `run`: compute outputs and new values without writing the
        variables. `commit()` then writes the updates; skipping it discards them."""
        self._load(feeds)
        vals = self.vals
        if check_finite:
            self._pending = "plain"
            self._run_checked()
        elif self._fast is not None and self._fast_ok():
            self._pending = "fast"
            self._fast(vals)
        else:
            self._pending = "plain"
            for fn, ins, out in self._steps:
                vals[out] = fn(*[vals[i] for i in ins])
            if self._fast_state == "new":
                self._fast_state = "built"
                self._build_fast()
        return [vals[s] for s in self.out_slots]

    def commit(self) -> None:
        """Write the updates computed by the last `compute` into the variable buffers."""
        vals = self.vals
        upd = self.upd_slots
        if self._pending == "fast":  # the update kernels left for commit write in place
            self._pending = "fast-done"
            variables = self.variables
            if all(variables.get(name) is arr for name, arr in self._fast_vars):
                self._fast_commit(vals)
                upd = self._fast_copies
            else:  # a variable was replaced since `compute`: its plain kernels, then copies
                self._pending = "plain"
                for fn, ins, out in self._fast_deferred_plain:
                    vals[out] = fn(*[vals[i] for i in ins])
        elif self._pending == "fast-done":
            upd = self._fast_copies
        new = [(name, vals[s].copy() if s in self._upd_alias else vals[s]) for name, s in upd]
        copyto = self.backend.xp.copyto
        for name, v in new:
            copyto(self.variables[name], v)

    # ------------------------------------------------------------ buffer reuse (NumPy)
    def _fast_ok(self) -> bool:
        """The fast step fits this call: the fed arrays have the layout it was built for and
        the variables it updates in place are still the same arrays (else it is rebuilt)."""
        if self._feed_sig() != self._fast_sig:
            return False
        variables = self.variables
        for name, arr in self._fast_vars:
            if variables.get(name) is not arr:
                self._fast = None
                self._fast_state = "new"
                return False
        return True

    def _feed_sig(self) -> tuple:
        """The memory layout of the fed arrays: the fast step is specialized to it."""
        vals = self.vals
        return tuple([vals[s].strides for _n, s, _sh, _dt in self.feed_slots])

    def _build_fast(self) -> None:
        """Build the buffer-reusing step from the plain step that just ran (`self.vals` holds
        every value it made).

        * Kernels: an instruction whose op has an `out=` form (`_out_spec`: ufuncs, relu,
          matmul, sum_to, `where` against a constant zero, fused elementwise bodies) and whose
          plain result was a new array writes into a plan-owned buffer instead of allocating.
          Each such kernel is run once against the plain result (same bytes, same strides) or
          keeps its plain kernel.
        * Outputs, and whatever they may be views of, always get new arrays (callers keep
          them).
        * Updates in place: an update value made by such a kernel from nothing an output
          needs is computed by `commit`, straight into the variable's buffer (no copy), when
          no later update kernel still reads the variable's old value; `compute` runs the
          rest. Other update values keep their buffer to the end of the step and are copied.
        * Buffers are shared between values whose lifetimes do not overlap: a linear scan over
          the execution order, where a value that may be a view of a buffer (the result of any
          kernel without an out= form reading it) keeps the buffer alive.
        * The steps are generated code: one line per instruction, no argument lists built at
          run time."""
        xp = self.backend.xp
        vals = self.vals
        instrs = self.instrs
        n = len(instrs)
        zero = {s: _is_zero(vals[s]) for s in self._const_slots}
        specs: dict[int, Any] = {}
        for k, ins in enumerate(instrs):
            node = self.graph[ins.nid]
            args = [vals[i] for i in ins.ins]
            res = vals[ins.out]
            spec = _out_spec(xp, node, ins.attrs, self.dims, args, res,
                             [zero.get(i, False) for i in ins.ins])
            if spec is not None and _spec_matches(spec, args, res):
                specs[k] = spec
        # values that leave the plan (outputs) must be new arrays on every step
        escaping = set(self.out_slots)
        for k in range(n - 1, -1, -1):
            ins = instrs[k]
            if ins.out in escaping:
                if k in specs:
                    del specs[k]
                else:
                    escaping.update(ins.ins)
        inplace, deferred = self._plan_inplace(specs, escaping, zero)
        order = [k for k in range(n) if k not in deferred] + sorted(deferred)
        end_pos = len(order)
        last_read: dict[int, int] = {}
        for p, k in enumerate(order):
            for i in instrs[k].ins:
                last_read[i] = p
        for _name, s in self.upd_slots:
            last_read[s] = end_pos
        roots: dict[int, frozenset[int]] = {}
        end: dict[int, int] = {}
        for p, k in enumerate(order):
            ins = instrs[k]
            if k in inplace:
                r: frozenset[int] = frozenset()
            elif k in specs:
                r = frozenset((k,))
            else:
                r = frozenset().union(*[roots.get(i, frozenset()) for i in ins.ins])
            roots[ins.out] = r
            for b in r:
                end[b] = max(end.get(b, p), last_read.get(ins.out, p))
        pool: dict[tuple, list[Any]] = {}
        frees: dict[int, list[int]] = {}
        bufs: dict[int, Any] = {}

        def take(like: Any) -> Any:
            free = pool.get(_layout(like))
            return free.pop() if free else np.empty_like(like)

        def give(b: Any) -> None:
            pool.setdefault(_layout(b), []).append(b)

        steps = list(self._steps)
        for p, k in enumerate(order):
            ins = instrs[k]
            if k in inplace:
                spec = inplace[k][1]
                out = self.variables[inplace[k][0]]
            elif k in specs:
                spec = specs[k]
                out = bufs[k] = take(vals[ins.out])
                frees.setdefault(end[k], []).append(k)
            else:
                spec = None
            if spec is not None:
                scratch = [take(like) for like in spec.likes]
                for b in scratch:
                    give(b)
                steps[k] = (spec.make(out, scratch), ins.ins, ins.out)
            for b in frees.pop(p, ()):
                give(bufs[b])
        self._fast = _codegen([steps[k] for k in order if k not in deferred], "_step")
        self._fast_commit = _codegen([steps[k] for k in sorted(deferred)], "_commit")
        self._fast_copies = [(name, s) for name, s in self.upd_slots
                             if not any(nm == name for nm, _sp in inplace.values())]
        self._fast_steps = steps  # for profiling (bench/profile_step.py)
        self._fast_sig = self._feed_sig()
        self._fast_vars = [(name, self.variables[name]) for name, _spec in inplace.values()]
        self._fast_deferred_plain = [self._steps[k] for k in sorted(deferred)]
        self._fast_kernels = len(specs)
        self._fast_inplace = len(inplace)

    def _plan_inplace(self, specs: dict[int, Any], escaping: set[int],
                      zero: dict[int, bool]) -> tuple[dict[int, tuple[str, Any]], set[int]]:
        """The update kernels that write straight into their variable (instruction -> (name,
        spec)) and the instructions `commit` runs (those and every instruction reading their
        results, none of them needed by an output)."""
        vals = self.vals
        instrs = self.instrs
        variables = self.variables
        if not self.upd_slots or any(s in self._leaf_slots for _n, s in self.upd_slots):
            return {}, set()
        producer = {ins.out: k for k, ins in enumerate(instrs)}
        users: dict[int, list[int]] = {}
        for k, ins in enumerate(instrs):
            for i in set(ins.ins):
                users.setdefault(i, []).append(k)
        # the variables each value may be a view of (kernels with an out= form make new arrays)
        vroots: dict[int, frozenset[str]] = {s: frozenset((name,)) for name, s in self.var_slots}
        for k, ins in enumerate(instrs):
            vroots[ins.out] = frozenset() if k in specs else frozenset().union(
                *[vroots.get(i, frozenset()) for i in ins.ins])
        names_of: dict[int, list[str]] = {}
        for name, s in self.upd_slots:
            names_of.setdefault(s, []).append(name)
        var_slot = dict(self.var_slots)
        cands: dict[int, tuple[str, Any]] = {}
        for s, names in names_of.items():
            k = producer.get(s)
            if k is None or k not in specs or s in escaping or len(names) != 1:
                continue
            name = names[0]
            var = variables.get(name)
            res = vals[s]
            if (not isinstance(var, np.ndarray) or _layout(var) != _layout(res)
                    or not var.flags.writeable or any(
                        o is not var and isinstance(o, np.ndarray) and np.may_share_memory(o, var)
                        for o in variables.values())):
                continue
            ins = instrs[k]
            # an operand that may be a view of the variable must be the variable itself
            if any(name in vroots.get(i, ()) and i != var_slot.get(name) for i in ins.ins):
                continue
            args = [vals[i] for i in ins.ins]
            alias = [i == var_slot.get(name) for i in ins.ins]
            spec = _out_spec(self.backend.xp, self.graph[ins.nid], ins.attrs, self.dims, args, res,
                             [zero.get(i, False) for i in ins.ins], alias)
            if spec is None:
                continue
            tmp = var.copy()
            got = spec.make(tmp, [np.empty_like(like) for like in spec.likes])(
                *[tmp if a else v for a, v in zip(alias, args)])
            if got is tmp and _same(tmp, res):
                cands[k] = (name, spec)
        while True:
            deferred: set[int] = set()
            stack = list(cands)
            while stack:
                k = stack.pop()
                if k not in deferred:
                    deferred.add(k)
                    stack.extend(users.get(instrs[k].out, ()))
            bad = {k for k in cands if any(instrs[j].out in escaping for j in deferred)}
            if not bad:
                copied = [s for name, s in self.upd_slots
                          if not any(nm == name for nm, _sp in cands.values())]
                for k, (name, _spec) in cands.items():
                    later = [j for j in deferred if j > k]
                    if any(name in vroots.get(i, ()) for j in later for i in instrs[j].ins) or any(
                            name in vroots.get(s, ()) for s in copied):
                        bad.add(k)
            if not bad:
                return cands, deferred
            if len(bad) == len(cands):
                return {}, set()
            for k in bad:
                del cands[k]

    def _run_checked(self) -> None:
        xp = self.backend.xp
        vals = self.vals
        for ins in self.instrs:
            vals[ins.out] = v = ins.fn(*[vals[i] for i in ins.ins])
            if getattr(v, "dtype", None) is not None and v.dtype.kind == "f" and not bool(
                    xp.all(xp.isfinite(v))):
                n = self.graph[ins.nid]
                of = self.graph.nodes.get(n.of) if n.of is not None else None
                raise NonFiniteError(ins.nid, n.op, n.loc, of.op if of else None,
                                     of.loc if of else None, n.name)


# ---------------------------------------------------------------- out= kernels (NumPy)

_BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "true_divide",
           "pow": "power", "maximum": "maximum", "minimum": "minimum"}
_COMPARE = ("greater", "less", "greater_equal", "less_equal", "equal", "not_equal",
            "logical_and", "logical_or")
_UNARY = {"neg": "negative", "exp": "exp", "log": "log", "log1p": "log1p", "expm1": "expm1",
          "sqrt": "sqrt", "abs": "absolute", "sign": "sign", "sin": "sin", "cos": "cos",
          "tanh": "tanh", "square": "square"}
_BITS = {2: np.int16, 4: np.int32, 8: np.int64}


@dataclass
class _OutSpec:
    """How to compute one op into a given buffer: `make(out, scratch)` returns the kernel
    (same inputs as the plain one, returns `out`); `likes` are arrays whose shape, dtype and
    strides the scratch buffers copy."""

    make: Any
    likes: list[Any]


def _layout(a: Any) -> tuple:
    return (a.shape, a.dtype.str, a.strides)


def _is_zero(v: Any) -> bool:
    """A float constant whose every element is +0.0 (all bits clear)."""
    return (isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.dtype.itemsize in _BITS
            and not np.any(v.view(_BITS[v.dtype.itemsize])))


def _fresh(res: Any, args: list[Any]) -> bool:
    """`res` is an array that shares no memory with the inputs (a kernel made it)."""
    return isinstance(res, np.ndarray) and not any(
        isinstance(a, np.ndarray) and np.may_share_memory(res, a) for a in args)


def _same(a: Any, b: Any) -> bool:
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and _layout(a) == _layout(b)
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


def _spec_matches(spec: _OutSpec, args: list[Any], res: Any) -> bool:
    """Run the out= kernel once on new buffers: the same bytes and strides as the plain one."""
    out = np.empty_like(res)
    got = spec.make(out, [np.empty_like(like) for like in spec.likes])(*args)
    return got is out and _same(out, res)


def _out_spec(xp: Any, node: Node, attrs: Mapping[str, Any], dims: Mapping[str, int],
              args: list[Any], res: Any, zero: list[bool],
              alias: list[bool] | None = None) -> _OutSpec | None:
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
        return _OutSpec(lambda out, s: functools.partial(uf, out=out), [])
    if op in _COMPARE:
        if rdt != np.bool_ or len(set(dts)) != 1:
            return None
        uf = getattr(xp, op)
        return _OutSpec(lambda out, s: functools.partial(uf, out=out), [])
    if op == "relu":
        # maximum(x, 0) against a full array of +0.0: the same values (NaN and -0.0 included;
        # `_spec_matches` checks), and NumPy's SIMD loop, which a scalar operand misses (4x)
        if not same_float:
            return None
        mx = xp.maximum

        def make_relu(out: Any, s: list[Any]) -> Any:
            zeros = np.zeros_like(out)  # owned by the kernel, never pooled
            return lambda x: mx(x, zeros, out=out)
        return _OutSpec(make_relu, [])
    if op == "matmul":
        if not same_float or any(a.ndim < 2 for a in args) or any(alias):
            return None
        mm = xp.matmul
        return _OutSpec(lambda out, s: functools.partial(mm, out=out), [])
    if op == "sum_to":
        return None if any(alias) else _sum_to_spec(xp, attrs, args[0], res)
    if op == "where":
        return _where_spec(xp, args, res, zero)
    if op == FUSED:
        return _fused_spec(xp, node.regions[0], dims, args, res, zero, alias)
    return None


def _sum_to_spec(xp: Any, attrs: Mapping[str, Any], x: Any, res: Any) -> _OutSpec | None:
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
    return _OutSpec(make, [])


def _where_spec(xp: Any, args: list[Any], res: Any, zero: list[bool]) -> _OutSpec | None:
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
    return _OutSpec(make, [np.empty(c.shape, dtype=np.int8)])


def _fused_spec(xp: Any, body: Graph, dims: Mapping[str, int], args: list[Any], res: Any,
                zero: list[bool], alias: list[bool]) -> _OutSpec | None:
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
    if not _same(vals[-1], res):
        return None
    likes: list[Any] = []
    plan: list[tuple[Any, Any, tuple[int, ...], int, int]] = []  # (spec|fn, target, refs, ...)
    holder: int | None = None  # the ref whose value is in the output buffer
    final = len(members) - 1
    for k, (n, refs, attrs, margs, v, opdef) in enumerate(members):
        z = [r < n_in and zero[r] for r in refs]
        spec = _out_spec(xp, n, attrs, dims, margs, v, z, [r < n_in and alias[r] for r in refs])
        if spec is None and k == final:
            return None
        if spec is None:
            plan.append((functools.partial(opdef.forward, xp, **attrs), None, refs, 0, 0))
            continue
        free = (holder is None or last[holder] <= k) and k >= alias_last
        if k == final or (free and _layout(v) == _layout(res)):
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
    return _OutSpec(make, likes)


def _codegen(steps: list[tuple[Any, tuple[int, ...], int]], name: str) -> Any:
    """`def name(vals)` running `vals[out] = fn(vals[i], ...)` for each step, unrolled."""
    ns: dict[str, Any] = {}
    lines = [f"def {name}(vals):"]
    for k, (fn, ins, out) in enumerate(steps):
        ns[f"f{k}"] = fn
        lines.append(f"    vals[{out}] = f{k}({', '.join(f'vals[{i}]' for i in ins)})")
    lines.append("    return None")
    exec(compile("\n".join(lines), f"<plan {name}>", "exec"), ns)
    return ns[name]


class _RngProxy:
    """Forwards to the plan's current generator, so a restored generator takes effect."""

    __slots__ = ("plan",)

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self.plan.rng, name)
