"""Memory planning as a pure function: a training step's graph and a backend's kernel table
to an assignment of buffers (`plan_memory`), printed by `dslrun graph --stage planned`.

The assignment follows the rules of the buffer-reusing step (`runtime.plan.buffers`), read
from the graph alone (types with symbolic dims, ops, the table's rows):

* Order: the nodes the outputs and updates need, in the plan's topological order; the
  updates written in place, and everything that reads their results, run last (at commit).
* A computing node whose op has an out= form in the table (and whose types suit it,
  `_has_form`) writes into a buffer; one without runs its plain kernel (PLAIN), which makes
  a new array or a view of its operands (that keeps their buffers alive). Outputs leave the
  step, so they, and what they may be views of, are PLAIN.
* In place: an update whose producer's form may overlap its operands (`overlap_safe`) and
  has the variable's type writes straight into the variable, unless a later instruction
  still reads the old value, another update may be a view of it, or an output needs it.
* Buffers are shared by liveness along the order: a buffer is free again after the last
  read of every value that may be a view of it; a new value takes a free buffer of its type
  (dtype and shape, symbolic dims included) or a new one.

At run time the step refines this with the actual arrays (a form whose operands do not fit,
such as a matrix product of a vector, keeps the plain kernel; variables that share memory are
not written in place) and checks every form against the plain kernel's bytes; a form's scratch
space is not shown. The assignment depends on nothing but its arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from runtime.backends import KernelTable
from runtime.ir import LEAF_OPS, Graph, TensorType
from runtime.ir_text import text_numbering
from runtime.ops import REGISTRY
from runtime.ops.shapes import sym_product

__all__ = ["Holding", "MemoryPlan", "buffer_ends", "downstream", "plan_memory",
           "settle_in_place", "view_roots"]


class Holding(StrEnum):
    """Where a node's value lives during a step."""

    BUFFER = "buffer"  # its out= form writes a buffer shared by liveness
    IN_PLACE = "in place"  # an update written into its variable (at commit)
    PLAIN = "plain"  # its plain kernel makes it: a new array, or a view of its operands


@dataclass(frozen=True)
class MemoryPlan:
    """`order`: the computing nodes in execution order (the committed ones last); `holding`
    and, for BUFFER nodes, `buffer` (an index into `buffers`, the types of the buffers);
    `in_place`: update node -> its variable; `committed`: the nodes run at commit."""

    order: tuple[int, ...]
    holding: Mapping[int, Holding]
    buffer: Mapping[int, int]
    buffers: tuple[TensorType, ...]
    in_place: Mapping[int, str]
    committed: frozenset[int]

    def text(self, graph: Graph) -> str:
        """The assignment as comment lines naming the nodes as `to_text` numbers them."""
        num = text_numbering(graph)
        by_buffer: dict[int, list[int]] = {}
        for nid, b in self.buffer.items():
            by_buffer.setdefault(b, []).append(nid)
        counts = {h: sum(1 for v in self.holding.values() if v == h) for h in Holding}
        lines = ["# memory plan (runtime.plan.assign.plan_memory): "
                 + ", ".join(f"{counts[h]} {h}" for h in Holding)
                 + f"; {len(self.buffers)} buffers"]
        for nid in self.order:
            h = self.holding[nid]
            where = (f"b{self.buffer[nid]}" if nid in self.buffer
                     else f"into {self.in_place[nid]}" if nid in self.in_place else "")
            at = " (at commit)" if nid in self.committed else ""
            lines.append(f"#   %{num[nid]:<5} {h:<8} {where}{at}".rstrip())
        lines.append(f"# buffers: {len(self.buffers)}, {_sum_text(self.buffers)} in all")
        for b, t in enumerate(self.buffers):
            held = ", ".join(f"%{num[i]}" for i in sorted(by_buffer.get(b, ()),
                                                          key=num.__getitem__))
            lines.append(f"#   b{b:<4} {t} {_size_text(t)}: {held}")
        return "\n".join(lines) + "\n"


def plan_memory(graph: Graph, kernels: KernelTable,
                outputs: list[str] | None = None) -> MemoryPlan:
    """The assignment of buffers of a step computing `outputs` (default: all of the graph's)
    and its updates (see the module)."""
    names = list(graph.outputs) if outputs is None else outputs
    out_nodes = [graph.outputs[n] for n in names]
    updates = dict(graph.updates)
    targets = out_nodes + list(updates.values())
    order = [i for i in graph.topo_order(targets) if graph[i].op not in LEAF_OPS] \
        if targets else []
    form = {i for i in order if _has_form(graph, i, kernels)}
    # outputs must be new arrays: their forms are dropped, and what they may be views of
    escaping = set(out_nodes)
    for i in reversed(order):
        if i in escaping:
            if i in form:
                form.discard(i)
            else:
                escaping.update(graph[i].inputs)
    in_place, committed = _in_place(graph, kernels, order, form, escaping, updates)
    run = [i for i in order if i not in committed] + [i for i in order if i in committed]
    buffer, types = _share(graph, run, form, set(in_place), list(updates.values()))
    holding = {i: Holding.IN_PLACE if i in in_place else Holding.BUFFER if i in form
               else Holding.PLAIN for i in order}
    return MemoryPlan(tuple(run), holding, buffer, tuple(types), in_place,
                      frozenset(committed))


def _has_form(graph: Graph, nid: int, kernels: KernelTable) -> bool:
    """Whether node `nid` writes into a buffer: its op has a form, its result is an array
    (rank 0: NumPy's ufuncs hand back a scalar) and its operands other than masks and
    indices (the op's `index_operands`) have one dtype, the result's when that is a float
    (the forms compute in one dtype, as the plain kernels do without promotion); a fused
    node's last member must have a form too."""
    n = graph[nid]
    t = n.type
    if n.op not in kernels.out or not isinstance(t, TensorType) or t.rank == 0:
        return False
    index = REGISTRY[n.op].index_operands if n.op in REGISTRY else frozenset()
    dts = {graph[j].type.dtype for k, j in enumerate(n.inputs) if k not in index} - {"bool"}
    if len(dts) > 1 or (t.is_float and dts and dts != {t.dtype}):
        return False
    if n.regions and n.op in kernels.out:  # a fused body: its result's member
        body = n.regions[0]
        last = body[body.results()[0]]
        return last.op in kernels.out and last.op not in LEAF_OPS
    return True


def _in_place(graph: Graph, kernels: KernelTable, order: list[int], form: set[int],
              escaping: set[int], updates: dict[str, int]) -> tuple[dict[int, str], set[int]]:
    """The updates written into their variable (node -> name) and the nodes run at commit."""
    if any(graph[nid].op in LEAF_OPS for nid in updates.values()):
        return {}, set()
    var_node = {graph[i].name: i for i in graph.nodes if graph[i].op in ("param", "state")}
    pos = {i: k for k, i in enumerate(order)}
    users: dict[int, list[int]] = {}
    for i in order:
        for j in set(graph[i].inputs):
            users.setdefault(j, []).append(i)
    run = [(i, graph[i].inputs, i) for i in order]
    vroots = view_roots(run, form, {v: name for name, v in var_node.items()})
    names_of: dict[int, list[str]] = {}
    for name, nid in updates.items():
        names_of.setdefault(nid, []).append(name)
    cands: dict[int, str] = {}
    for nid, names in names_of.items():
        n = graph[nid]
        if (nid not in form or nid in escaping or len(names) != 1
                or n.op not in kernels.overlap_safe):
            continue
        name = names[0]
        v = var_node.get(name)
        if v is None or graph[v].type != n.type:
            continue
        if any(name in vroots.get(j, ()) and j != v for j in n.inputs):
            continue  # an operand may be a view of the variable without being it
        cands[nid] = name
    return settle_in_place(cands, {i: (ins, out) for i, ins, out in run}, pos,
                           lambda v: users.get(v, ()), vroots, escaping, updates.items())


def view_roots(run: Iterable[tuple[Hashable, Sequence[Hashable], Hashable]],
               form: Container[Hashable], variables: Mapping[Hashable, str]
               ) -> dict[Hashable, frozenset[str]]:
    """The variables each value may be a view of, along `run` (steps (key, input values,
    output value)): a variable's own value is one; a step in `form` makes a new array; any
    other step may return a view of its inputs."""
    roots: dict[Hashable, frozenset[str]] = {v: frozenset((name,))
                                             for v, name in variables.items()}
    for k, ins, out in run:
        roots[out] = frozenset() if k in form else frozenset().union(
            *[roots.get(i, frozenset()) for i in ins])
    return roots


def settle_in_place(cands: dict[Hashable, str],
                    steps: Mapping[Hashable, tuple[Sequence[Hashable], Hashable]],
                    pos: Mapping[Hashable, int] | Sequence[int],
                    users: Callable[[Hashable], Iterable[Hashable]],
                    roots: Mapping[Hashable, frozenset[str]], escaping: Container[Hashable],
                    updates: Iterable[tuple[str, Hashable]]
                    ) -> tuple[dict[Hashable, str], set[Hashable]]:
    """Of the candidate updates written into their variable (step -> variable name), the
    ones that can be, and the steps run at commit (those and every step reading their
    results): none if an output (a value in `escaping`) needs what commit computes; a
    candidate is dropped while a step at commit after it still reads the variable's old
    value (`roots`: what each value may be a view of) or an update that is copied may be a
    view of it. `steps`: key -> (input values, output value); `pos`: execution positions;
    `users`: the steps reading a value; `updates`: (variable name, value) of every update."""
    cands = dict(cands)
    updates = list(updates)
    while cands:
        deferred = downstream(cands, lambda k: users(steps[k][1]))
        if any(steps[j][1] in escaping for j in deferred):
            return {}, set()  # an output needs what commit would compute
        last_reader: dict[str, int] = {}
        for j in deferred:
            for i in steps[j][0]:
                for name in roots.get(i, ()):
                    last_reader[name] = max(last_reader.get(name, -1), pos[j])
        written = set(cands.values())
        copied_roots = frozenset().union(*[roots.get(v, frozenset())
                                           for name, v in updates if name not in written])
        bad = {k for k, name in cands.items()
               if last_reader.get(name, -1) > pos[k] or name in copied_roots}
        if not bad:
            return cands, deferred
        for k in bad:
            del cands[k]
    return {}, set()


def downstream(starts: Iterable[int], users: Callable[[int], Iterable[int]]) -> set[int]:
    """`starts` and every step that reads, directly or not, what one of them makes."""
    seen: set[int] = set()
    stack = list(starts)
    while stack:
        k = stack.pop()
        if k not in seen:
            seen.add(k)
            stack.extend(users(k))
    return seen


def buffer_ends(run: Sequence[tuple[Hashable, Sequence[Hashable], Hashable]],
                form: Container[Hashable], fixed: Container[Hashable],
                read_after: Iterable[Hashable]) -> dict[Hashable, int]:
    """Liveness of buffers along `run`, steps (key, input values, output value): for each
    step whose key is in `form` (it writes a new buffer) and not in `fixed`, the position of
    the last step that reads its value or a value that may be a view of it (a step outside
    `form` may return a view of its inputs); values in `read_after` are read after the run."""
    end_pos = len(run)
    last_read: dict[Hashable, int] = {}
    for p, (_k, ins, _out) in enumerate(run):
        for i in ins:
            last_read[i] = p
    for i in read_after:
        last_read[i] = end_pos
    roots: dict[Hashable, frozenset[Hashable]] = {}
    end: dict[Hashable, int] = {}
    for p, (k, ins, out) in enumerate(run):
        if k in fixed:
            r: frozenset[Hashable] = frozenset()
        elif k in form:
            r = frozenset((k,))
        else:
            r = frozenset().union(*[roots.get(i, frozenset()) for i in ins])
        roots[out] = r
        for b in r:
            end[b] = max(end.get(b, p), last_read.get(out, p))
    return end


def _share(graph: Graph, run: list[int], form: set[int], fixed: set[int],
           read_after: list[int]) -> tuple[dict[int, int], list[TensorType]]:
    """Buffers by liveness along `run`: node -> buffer index, and each buffer's type."""
    end = buffer_ends([(i, graph[i].inputs, i) for i in run], form, fixed, read_after)
    pool: dict[TensorType, list[int]] = {}
    frees: dict[int, list[int]] = {}
    buffer: dict[int, int] = {}
    types: list[TensorType] = []
    for p, i in enumerate(run):
        if i in form and i not in fixed:
            t = graph[i].type
            free = pool.get(t)
            if free:
                buffer[i] = free.pop()
            else:
                buffer[i] = len(types)
                types.append(t)
            frees.setdefault(end[i], []).append(i)
        for done in frees.pop(p, ()):
            pool.setdefault(graph[done].type, []).append(buffer[done])
    return buffer, types


def _monomial(t: TensorType) -> tuple[int, str]:
    """The bytes of a buffer of type `t` as (number, product of its symbolic dims)."""
    n, syms = sym_product(t.shape)
    return n * t.np_dtype().itemsize, "*".join(s if k == 1 else f"{s}^{k}"
                                               for s, k in sorted(syms.items()))


def _size_text(t: TensorType) -> str:
    n, syms = _monomial(t)
    return f"({n}{'*' + syms if syms else ''} bytes)"


def _sum_text(types: tuple[TensorType, ...]) -> str:
    """The bytes of all the buffers, summed by product of symbolic dims (`2048*B + 40`)."""
    total: dict[str, int] = {}
    for t in types:
        n, syms = _monomial(t)
        total[syms] = total.get(syms, 0) + n
    terms = [f"{n}*{syms}" if syms else str(n) for syms, n in sorted(
        total.items(), key=lambda kv: (kv[0] == "", kv[0]))]
    return (" + ".join(terms) or "0") + " bytes"
