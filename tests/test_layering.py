"""The dependency direction, read from every module's imports with `ast` (imports inside
functions count too):

- `runtime` never imports `dsl` (nor `grammar`, `specs` or the tests): the engine is
  language-agnostic; `dsl` may import `runtime`.
- inside runtime, a module imports only from its own layer or lower ones:

      0  errors, dtypes, ir, ir_text,        the error base, dtypes, the graph and its text
         ir_dot, program, init               and DOT forms, plain records
      1  ops                                 primitives: shape rules, kernels, VJPs
      2  autodiff, passes                    graph -> graph
      3  plan, backends, gradcheck           execution
      4  train                               the training loop, checkpoints, data

A new runtime module must be given a layer in `LAYERS` below.

- inside `dsl.lower`, the shared state and the values (`LOWERING_BASE`) import none of the
  walker's modules (statements, expressions, calls, builtins, ...), which call each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGES = ("dsl", "runtime", "grammar", "specs")

LAYERS: dict[str, int] = {
    "runtime.errors": 0,
    "runtime.dtypes": 0,
    "runtime.ir": 0,
    "runtime.ir_text": 0,
    "runtime.ir_dot": 0,
    "runtime.program": 0,
    "runtime.init": 0,
    "runtime.ops": 1,
    "runtime.autodiff": 2,
    "runtime.passes": 2,
    "runtime.plan": 3,
    "runtime.backends": 3,
    "runtime.gradcheck": 3,
    "runtime.train": 4,
}


LOWERING_BASE = ("dsl.lower.result", "dsl.lower.scope", "dsl.lower.context", "dsl.lower.values")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in the file."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(text: str, name: str, is_package: bool) -> list[tuple[int, str]]:
    """Imports of module `name`'s source `text`; relative ones resolved, and `from a import b`
    gives both `a` and `a.b` (b may be a submodule)."""
    package = name if is_package else name.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out.extend((node.lineno, f"{mod}.{a.name}") for a in node.names if a.name != "*")
    return out


def layer_of(module: str) -> int | None:
    """The layer of a runtime module (by its longest prefix in LAYERS), None if it has none."""
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in LAYERS:
            return LAYERS[".".join(parts[:k])]
    return None


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT).as_posix()}:{line}"


RUNTIME = modules("runtime")


@pytest.mark.parametrize("path", RUNTIME, ids=[module_name(p) for p in RUNTIME])
def test_runtime_never_imports_the_language(path: Path) -> None:
    bad = [f"{_where(path, line)}: import {mod}" for line, mod in imports(path)
           if mod.split(".")[0] in ("dsl", "grammar", "specs", "tests")]
    assert not bad, "runtime must not import the language:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", RUNTIME, ids=[module_name(p) for p in RUNTIME])
def test_runtime_imports_point_down(path: Path) -> None:
    me = module_name(path)
    if me == "runtime":
        return
    mine = layer_of(me)
    assert mine is not None, (f"{me} ({path.relative_to(ROOT)}) is in no layer: give it one "
                              "in LAYERS in tests/test_layering.py")
    bad: dict[int, str] = {}
    for line, mod in imports(path):
        if not mod.startswith("runtime.") or mod == "runtime":
            continue
        theirs = layer_of(mod)
        if theirs is not None and theirs > mine and line not in bad:
            bad[line] = (f"{_where(path, line)}: {me} (layer {mine}) imports {mod} "
                         f"(layer {theirs})")
    assert not bad, ("imports must point to the same or a lower layer:\n"
                     + "\n".join(bad.values()))


def test_every_runtime_package_has_a_layer() -> None:
    missing = sorted({module_name(p) for p in RUNTIME if module_name(p) != "runtime"
                      and layer_of(module_name(p)) is None})
    assert not missing, f"runtime modules without a layer in LAYERS: {', '.join(missing)}"


def test_the_checker_sees_violations() -> None:
    """The import reader resolves relative imports and finds imports inside functions."""
    src = "from ..train import loop\n\ndef f():\n    import dsl.lower\n"
    found = [m for _, m in imports_in(src, "runtime.ops.probe", is_package=False)]
    assert {"runtime.train", "runtime.train.loop", "dsl.lower"} <= set(found)
    assert layer_of("runtime.train.loop") > layer_of("runtime.ops.builder")
    found = [m for _, m in imports_in("from . import registry\n", "runtime.ops", True)]
    assert "runtime.ops.registry" in found


def test_lowering_base_does_not_import_the_walker() -> None:
    bad = []
    for path in sorted((ROOT / "dsl" / "lower").glob("*.py")):
        if module_name(path) not in LOWERING_BASE:
            continue
        for line, mod in imports(path):
            if mod.startswith("dsl.lower.") and not any(
                    mod == m or mod.startswith(m + ".") for m in LOWERING_BASE):
                bad.append(f"{_where(path, line)}: import {mod}")
    assert not bad, "the lowering's state and values import the walker:\n" + "\n".join(bad)


def test_parsing_imports_one_way() -> None:
    """No import cycle through the parser and its caches (imports inside functions count):
    `dsl.cache` imports the parser on a miss, and the parser imports only `dsl.store`, which
    both use. (The walker of `dsl.lower`, whose modules call each other, is one module here.)"""
    paths = {module_name(p): p for p in modules("dsl")}
    node = lambda m: "dsl.lower" if m.startswith("dsl.lower.") else m
    graph: dict[str, set[str]] = {node(m): set() for m in paths}
    for me, path in paths.items():
        by_line: dict[int, set[str]] = {}
        for line, mod in imports(path):
            while mod and mod not in paths:  # the module a name belongs to
                mod = mod.rpartition(".")[0]
            if mod:
                by_line.setdefault(line, set()).add(mod)
        for found in by_line.values():  # `from dsl import ast`: dsl.ast, not the package
            for mod in found:
                if not any(m.startswith(mod + ".") for m in found) and node(mod) != node(me):
                    graph[node(me)].add(node(mod))
    for start in [m for m in ("dsl.store", "dsl.parser", "dsl.cache") if m in graph]:
        stack, seen = [[start]], set()
        while stack:
            path = stack.pop()
            for m in sorted(graph[path[-1]]):
                assert m != start, "import cycle: " + " -> ".join(path + [m])
                if m not in seen:
                    seen.add(m)
                    stack.append(path + [m])
