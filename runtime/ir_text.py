"""The canonical text of a graph: `to_text` prints it, `parse_text` reads it back.

The text has deterministic ids and order and a type on every value; attribute defaults are
filled in from the `defaults` it is given (the canonical text is `runtime.ops.to_text`,
which passes the op registry's). `text_numbering` gives the number each node prints as, for
texts that refer to printed nodes. The graph it prints and builds is `runtime.ir`'s; a
constant's printed value (`runtime.ir.const_attr`) stays with the graph that stores it.
"""

from __future__ import annotations

import ast as pyast
import re
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any

import numpy as np

from runtime.ir import LEAF_OPS, Graph, IRError, OutputKind, Role, parse_type

AttrDefaults = Callable[[str], Mapping[str, Any]]  # op name -> its default attributes


def _fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_fmt_value(x) for x in v)
        return f"({inner},)" if isinstance(v, tuple) and len(v) == 1 else (
            f"({inner})" if isinstance(v, tuple) else f"[{inner}]")
    return repr(v)


def to_text(g: Graph, stage: str | None = None, passes: Iterable[str] = (),
            locs: bool = False, defaults: AttrDefaults | None = None) -> str:
    """The text of `g`: renumbered ids in deterministic topological order; each node's
    attributes are `defaults(op)` (none when not given) updated with its own.

    Sections: header, then `inputs`, `params`, `state`, `consts`, `body` (computing nodes in
    topological order), `outputs`, `updates`. Each node line is
    `%id:type = op %a, %b {k=v, ...}` plus `; role=grad name="..." of=%k` metadata. A node
    with regions (a loop) is followed by each region, indented, with ids of its own: `region`,
    then `args` (its inputs in order), `consts`, `body` and `yield %a, %b` (its results).
    """
    lines = ["# dslgraph 1"]
    if stage:
        lines.append(f"# stage: {stage}")
    lines.append(f"# passes: {', '.join(passes) if passes else '(none)'}")
    lines += _graph_lines(g, "", locs, defaults or _no_defaults)
    return "\n".join(lines) + "\n"


def _no_defaults(op: str) -> Mapping[str, Any]:
    return {}


_TITLES = {"input": "inputs", "param": "params", "state": "state", "const": "consts",
           "arg": "args"}


def text_numbering(g: Graph) -> dict[int, int]:
    """Node id -> the number `to_text` prints for it (`%7`), for texts that refer to the
    printed nodes (the memory plan of `dslrun graph --stage planned`)."""
    return _text_layout(g)[2]


def _text_layout(g: Graph) -> tuple[dict[str, list[int]], list[int], dict[int, int]]:
    """The leaves by section, the computing nodes in order, and the printed numbering."""
    order = g.topo_order(g.roots()) if g.roots() else g.topo_order()
    used = set(order)
    # leaves that nobody uses still belong to the graph (e.g. a declared but unused input)
    order += [i for i in sorted(g.nodes) if i not in used and g.nodes[i].op in LEAF_OPS]
    sections: dict[str, list[int]] = {k: [] for k in (*LEAF_OPS, "body")}
    for i in order:
        op = g.nodes[i].op
        sections[op if op in LEAF_OPS else "body"].append(i)
    leaf_sorted = {
        k: v if k == "const" else sorted(v, key=lambda i: g.nodes[i].attrs["index"])
        if k == "arg" else sorted(v, key=lambda i: (g.nodes[i].name or "", i))
        for k, v in sections.items() if k != "body"
    }
    leaves = ("arg", "input", "param", "state", "const")
    numbering: dict[int, int] = {}
    for k in leaves:
        for i in leaf_sorted[k]:
            numbering[i] = len(numbering)
    for i in sections["body"]:
        numbering[i] = len(numbering)
    return leaf_sorted, sections["body"], numbering


def _graph_lines(g: Graph, indent: str, locs: bool, defaults: AttrDefaults,
                 region: bool = False) -> list[str]:
    leaf_sorted, body, numbering = _text_layout(g)
    leaves = ("arg", "input", "param", "state", "const")
    lines = []
    for k in leaves:
        if leaf_sorted[k]:
            lines.append(indent + _TITLES[k])
            lines.extend(indent + "  " + _node_line(g, i, numbering, locs, defaults)
                         for i in leaf_sorted[k])
    if body:
        lines.append(indent + "body")
        for i in body:
            lines.append(indent + "  " + _node_line(g, i, numbering, locs, defaults))
            for r in g.nodes[i].regions:
                lines.append(indent + "    region")
                lines += _graph_lines(r, indent + "      ", locs, defaults, region=True)
    if region:
        lines.append(indent + "yield " + ", ".join(f"%{numbering[i]}" for i in g.results()))
        return lines
    if g.outputs:
        lines.append(indent + "outputs")
        for name in sorted(g.outputs):
            kind = g.output_kinds.get(name, OutputKind.OUTPUT)
            lines.append(f"{indent}  {kind} {name} = %{numbering[g.outputs[name]]}")
    if g.updates:
        lines.append(indent + "updates")
        for name in sorted(g.updates):
            lines.append(f"{indent}  {name} <- %{numbering[g.updates[name]]}")
    return lines


_UNPRINTED_ROLES = (Role.FORWARD, Role.INPUT, Role.PARAM, Role.STATE, Role.CONST, Role.ARG)


def _node_line(g: Graph, i: int, num: dict[int, int], locs: bool,
               defaults: AttrDefaults) -> str:
    n = g.nodes[i]
    attrs = {**defaults(n.op), **n.attrs}
    s = f"%{num[i]}:{n.type} = {n.op}"
    if n.inputs:
        s += " " + ", ".join(f"%{num[j]}" for j in n.inputs)
    if attrs:
        s += " {" + ", ".join(f"{k}={_fmt_value(attrs[k])}" for k in sorted(attrs)) + "}"
    meta = []
    if n.role not in _UNPRINTED_ROLES:
        meta.append(f"role={n.role}")
    if n.name is not None:
        meta.append(f"name={n.name!r}")
    if n.of is not None and n.of in num:
        meta.append(f"of=%{num[n.of]}")
    if locs and n.loc is not None:
        meta.append(f"loc={str(n.loc)!r}")
    if meta:
        s += " ; " + " ".join(meta)
    return s


_LINE = re.compile(
    r"%(?P<id>\d+):(?P<type>\w+\[[^\]]*\]|\([^)]*\)) = (?P<op>[\w.]+)"
    r"(?P<args>(?: %\d+(?:, %\d+)*)?)"
    r"(?: \{(?P<attrs>.*?)\})?(?: ; (?P<meta>.*))?$"
)


def _split_top(s: str) -> list[str]:
    parts, depth, cur, quote = [], 0, "", None
    for ch in s:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def parse_text(text: str) -> Graph:
    """Read canonical text back into a Graph (constants given by hash stay unresolved)."""
    lines = [ln.rstrip() for ln in text.splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    g, pos = _parse_block(lines, 0, 0)
    if pos != len(lines):
        raise IRError(f"cannot parse graph line: {lines[pos].strip()!r}")
    return g


def _depth(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _parse_block(lines: list[str], pos: int, indent: int) -> tuple[Graph, int]:
    """Parse the graph whose section titles are indented by `indent` spaces, from line `pos`;
    returns it and the index of the first line that is not part of it."""
    g = Graph()
    ids: dict[int, int] = {}
    pending_of: list[tuple[int, int]] = []
    section = None
    last: int | None = None  # the node a following `region` belongs to
    while pos < len(lines):
        line = lines[pos]
        depth, body = _depth(line), line.strip()
        if depth < indent:
            break
        if depth == indent:
            if body.startswith("yield"):
                refs = [r.strip() for r in body[len("yield"):].split(",") if r.strip()]
                for k, r in enumerate(refs):
                    g.outputs[str(k)] = ids[int(r[1:])]
                    g.output_kinds[str(k)] = OutputKind.RESULT
                pos += 1
                break
            section = body
            pos += 1
            continue
        if depth == indent + 4 and body == "region":
            if last is None:
                raise IRError("a region follows no node")
            region, pos = _parse_block(lines, pos + 1, indent + 6)
            n = g.nodes[last]
            g.replace_node(last, regions=(*n.regions, region))
            continue
        if depth != indent + 2:
            raise IRError(f"cannot parse graph line: {body!r}")
        pos += 1
        if section == "outputs":
            kind, rest = body.split(" ", 1)
            name, ref = (p.strip() for p in rest.split("="))
            g.outputs[name] = ids[int(ref[1:])]
            g.output_kinds[name] = _enum(OutputKind, kind, body)
            continue
        if section == "updates":
            name, ref = (p.strip() for p in body.split("<-"))
            g.updates[name] = ids[int(ref[1:])]
            continue
        m = _LINE.match(body)
        if not m:
            raise IRError(f"cannot parse graph line: {body!r}")
        attrs: dict[str, Any] = {}
        if m.group("attrs"):
            for part in _split_top(m.group("attrs")):
                k, v = part.split("=", 1)
                attrs[k.strip()] = pyast.literal_eval(v.strip())
        meta: dict[str, str] = {}
        if m.group("meta"):
            for tok in re.findall(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|%\d+|\w+)",
                                  m.group("meta")):
                meta[tok[0]] = tok[1]
        op = m.group("op")
        role = _enum(Role, meta.get("role") or (op if op in LEAF_OPS else "forward"), body)
        args = [ids[int(a.strip()[1:])] for a in m.group("args").split(",") if a.strip()]
        name = pyast.literal_eval(meta["name"]) if "name" in meta else None
        nid = g.add(op, args, attrs, parse_type(m.group("type")), role=role, name=name)
        ids[int(m.group("id"))] = nid
        last = nid
        if "of" in meta:
            pending_of.append((nid, int(meta["of"][1:])))
        if op == "const" and not (isinstance(attrs.get("value"), str)):
            g.consts[nid] = np.asarray(attrs.get("value"), dtype=g.nodes[nid].type.np_dtype())
    for nid, of in pending_of:
        g.replace_node(nid, of=ids[of])
    return g, pos


def _enum(kind: type[StrEnum], value: str, line: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise IRError(f"unknown {kind.__name__} {value!r} in graph line: {line!r}") from None
