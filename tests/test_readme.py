"""The README's spec examples run as shown.

Every fenced block tagged `dl` is a complete spec: it compiles without warnings, in the
variants the README's `dslrun check NAME.dl --set ...` lines name, and trains for two steps.
A block tagged `dl fragment=NAME` is part of a spec: `FRAGMENTS[NAME]` wraps it into a minimal
one, which must compile. Any other fenced block must not look like spec text, so that no
example is silently skipped.
"""

from __future__ import annotations

import re
import warnings

import pytest
from conftest import ROOT

import dsl
from dsl.errors import DslWarning

README = ROOT / "README.md"
_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.M | re.S)
_SPEC_LINE = re.compile(r"^(model \w+\s*$|(objective|metric|output) \w+ *=|optimizer \w+\(|"
                        r"(net|def) \w+\(|input \w+ *:|train *\{)", re.M)
_CHECK_LINE = re.compile(r"`dslrun check (\w+)\.dl((?: --set \w+=\S+)+)`")

# name -> (text before the fragment, text after it)
FRAGMENTS: dict[str, tuple[str, str]] = {
    "recurrence": ("""model recurrence_fragment
data  random(n = 64, shape = [6, 3], classes = 2)
input x: f32[B, 6, 3]
input y: i64[B]
const T = 6
const H = 8
""", """
objective loss = cross_entropy(dense(concat(h, g, axis = -1), 2), y)
optimizer adam() minimize loss
"""),
    "gan": ("""model gan_fragment
input x: f32[B, 2]
const Z = 4
net G(z) { return dense(tanh(dense(z, 8)), 2) }
net D(x) { return dense(tanh(dense(x, 8)), 1)[:, 0] }
""", ""),
}


def blocks() -> list[tuple[int, str, str]]:
    """(line, info string, text) of every fenced block of the README."""
    text = README.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2))
            for m in _FENCE.finditer(text)]


def _tagged(kind: str) -> list[tuple[int, str, str]]:
    out = []
    for line, info, text in blocks():
        words = info.split()
        if words[:1] == ["dl"] and (kind == "fragment") == any(
                w.startswith("fragment=") for w in words):
            out.append((line, info, text))
    return out


SPECS = _tagged("spec")
PARTS = _tagged("fragment")


def _model_name(text: str) -> str:
    return re.search(r"^model\s+(\w+)", text, re.M).group(1)


def _compile(text: str, line: int, overrides: dict | None = None) -> dsl.Model:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = dsl.compile(text, file=f"README.md:{line}", overrides=overrides)
    found = [str(w.message) for w in caught if issubclass(w.category, DslWarning)]
    assert not found, f"README.md:{line}: the example warns:\n" + "\n".join(found)
    return model


def test_the_readme_has_examples() -> None:
    assert len(SPECS) >= 3 and len(PARTS) >= 2


def test_no_untagged_spec_text() -> None:
    for line, info, text in blocks():
        if info.split()[:1] != ["dl"]:
            assert not _SPEC_LINE.search(text), (
                f"README.md:{line}: a fenced block that looks like spec text is tagged "
                f"'{info}'; tag it ```dl (or ```dl fragment=NAME) so tests/test_readme.py "
                "checks it")


@pytest.mark.parametrize("line,info,text", SPECS, ids=[f"line{s[0]}" for s in SPECS])
def test_spec_example_trains(line: int, info: str, text: str) -> None:
    model = _compile(text, line)
    result = model.fit(steps=2)
    assert result.step == 2


def test_check_lines_compile() -> None:
    """`dslrun check NAME.dl --set A=B ...` in the README compiles that example so."""
    by_name = {_model_name(text): (line, text) for line, _, text in SPECS}
    lines = _CHECK_LINE.findall(README.read_text())
    assert lines
    for name, sets in lines:
        assert name in by_name, f"README: `dslrun check {name}.dl` names no example"
        overrides = {}
        for item in sets.split("--set")[1:]:
            k, v = item.strip().split("=", 1)
            overrides[k] = {"true": True, "false": False}.get(v, v if not v.isdigit()
                                                               else int(v))
        line, text = by_name[name]
        _compile(text, line, overrides)


@pytest.mark.parametrize("line,info,text", PARTS, ids=[f"line{s[0]}" for s in PARTS])
def test_fragment_compiles_in_a_minimal_spec(line: int, info: str, text: str) -> None:
    name = next(w for w in info.split() if w.startswith("fragment=")).split("=", 1)[1]
    assert name in FRAGMENTS, f"README.md:{line}: no wrapper for fragment '{name}' in " \
                              "tests/test_readme.py FRAGMENTS"
    head, tail = FRAGMENTS[name]
    _compile(head + text + tail, line)
