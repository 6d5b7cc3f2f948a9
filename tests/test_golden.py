"""Golden graph texts: every spec under `specs/` (found at collection time), stages forward,
grad and optimized, compared with `tests/golden/<spec path without .dl>.<stage>.txt`.

    pytest tests/test_golden.py                   # compare; a mismatch prints a unified diff
    pytest tests/test_golden.py --update-golden   # (re)write the golden files, drop stale ones

Golden texts hold no absolute paths and no source positions, so moving the repository or
editing a comment in a spec does not churn them. Every golden text must also survive
print -> parse -> print unchanged (`runtime.ir_text.parse_text` then `runtime.ops.to_text`).
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TWO_PHASES

from dsl.compiler import Compiled, compile_file
from runtime.ir_text import parse_text
from runtime.ops import to_text

SPECS = ROOT / "specs"
GOLDEN = ROOT / "tests" / "golden"
STAGES = ("forward", "grad", "optimized")
_MODEL_LINE = re.compile(r"^\s*model\s+\w+", re.M)


def spec_files() -> list[Path]:
    """Every spec with a `model` line (files that only hold blocks for `include` are not
    programs and have no graphs)."""
    return [p for p in sorted(SPECS.rglob("*.dl")) if _MODEL_LINE.search(p.read_text())]


def spec_key(path: Path) -> str:
    return path.relative_to(SPECS).with_suffix("").as_posix()


def golden_path(key: str, stage: str) -> Path:
    return GOLDEN / f"{key}.{stage}.txt"


@functools.cache
def compiled(key: str) -> Compiled:
    return compile_file(str(SPECS / f"{key}.dl"))


def diff(expected: str, actual: str, name: str) -> str:
    return "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                        f"{name} (golden)", f"{name} (now)"))


# ---------------------------------------------------------------- print -> parse -> print

def split_phases(text: str) -> list[tuple[str | None, str]]:
    """A stage's text as (header line or None, one graph's text); `Compiled.text` puts a
    `# phase: NAME` line before each graph of a multi-phase program (and `# procedure: NAME`
    before each procedure's)."""
    chunks: list[tuple[str | None, str]] = []
    name: str | None = None
    cur: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith(("# phase: ", "# procedure: ")):
            if cur or chunks:
                chunks.append((name, "".join(cur)))
            name, cur = line.rstrip("\n"), []
        else:
            cur.append(line)
    chunks.append((name, "".join(cur)))
    return chunks


def reprint(text: str) -> str:
    """Parse every graph of a stage text and print it again with the same header."""
    parts = []
    for name, chunk in split_phases(text):
        header = dict(re.findall(r"^# (stage|passes): (.*)$", chunk, re.M))
        passes = header.get("passes", "(none)")
        g = parse_text(chunk)
        out = to_text(g, stage=header.get("stage"),
                      passes=[] if passes == "(none)" else passes.split(", "))
        parts.append((f"{name}\n" if name is not None else "") + out)
    return "\n".join(parts)


def check_portable(text: str, what: str) -> None:
    assert str(ROOT) not in text, f"{what} holds an absolute path ({ROOT})"
    assert not re.search(r"(^|[\s'\"])/(work|home|tmp|usr|root)/", text), \
        f"{what} holds an absolute path"
    assert "loc=" not in text, f"{what} holds source positions (loc=...)"
    assert not re.search(r"\.dl:\d+:\d+", text), f"{what} holds a source position (file:line:col)"


# ---------------------------------------------------------------- the golden files

_PROCEDURE = re.compile(r"^\s*procedure\s+\w+", re.M)
CASES = [(spec_key(p), stage) for p in spec_files()
         for stage in (*STAGES, *(("procedures",) if _PROCEDURE.search(p.read_text()) else ()))]


@pytest.mark.parametrize(("key", "stage"), CASES, ids=[f"{k}.{s}" for k, s in CASES])
def test_golden(key: str, stage: str, update_golden: bool) -> None:
    text = compiled(key).text(stage)
    check_portable(text, f"the {stage} text of specs/{key}.dl")
    path = golden_path(key, stage)
    rel = f"tests/golden/{key}.{stage}.txt"
    if update_golden:
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"missing golden file {rel}; run `pytest --update-golden` to create it, "
                    "then review it", pytrace=False)
    expected = path.read_text()
    if expected != text:
        pytest.fail(f"the {stage} graph of specs/{key}.dl differs from {rel}; if the change is "
                    f"intended, run `pytest --update-golden` and review the diff:\n"
                    + diff(expected, text, rel), pytrace=False)


def _golden_files() -> list[Path]:
    return sorted(GOLDEN.rglob("*.txt")) if GOLDEN.exists() else []


def test_no_stale_golden_files(update_golden: bool) -> None:
    """Every golden file belongs to an existing spec and stage (--update-golden removes the
    others)."""
    wanted = {golden_path(k, s) for k, s in CASES}
    stale = [p for p in _golden_files() if p not in wanted]
    if update_golden:
        for p in stale:
            p.unlink()
        return
    assert not stale, ("golden files without a spec: "
                       + ", ".join(p.relative_to(ROOT).as_posix() for p in stale)
                       + "; run `pytest --update-golden` to remove them")


GOLDEN_FILES = _golden_files()


@pytest.mark.parametrize("path", GOLDEN_FILES,
                         ids=[p.relative_to(GOLDEN).as_posix() for p in GOLDEN_FILES])
def test_golden_text_reprints_identically(path: Path) -> None:
    if not path.exists():
        pytest.skip("removed by --update-golden")
    text = path.read_text()
    check_portable(text, path.name)
    again = reprint(text)
    assert again == text, "print(parse(text)) != text:\n" + diff(text, again, path.name)


# ---------------------------------------------------------------- the machinery itself

_TINY = """
model tiny
input x: f32[B, 3]
input y: i64[B]
const H = 4
net clf(x) { return dense(dropout(relu(dense(x, H)), p = 0.25), 2) }
objective loss = cross_entropy(clf(x), y) + 1e-3 * l2(weights)
metric acc = accuracy(clf(x), y)
optimizer adam(lr = 1e-2) minimize loss
train { batch = 8, steps = 3 }
"""

_BIG_CONST = """
model sched
const T = 100
const abar = cumprod(1 - linspace(1e-4, 0.02, T))
input t: i64[B]
output a = abar[t]
"""


@pytest.mark.parametrize("text", [_TINY, TWO_PHASES, _BIG_CONST], ids=["tiny", "phases", "hash"])
@pytest.mark.parametrize("stage", ["forward", "grad", "step", "optimized"])
def test_reprint_of_inline_specs(tmp_path: Path, text: str, stage: str) -> None:
    """The round trip holds for single- and multi-phase stages and hashed constants, even
    while specs/ is empty."""
    spec = tmp_path / "inline.dl"
    spec.write_text(text)
    out = compile_file(str(spec)).text(stage)
    check_portable(out, "inline spec")
    assert reprint(out) == out
    if "order" in text and stage != "forward":
        assert [n for n, _ in split_phases(out)] == ["# phase: g_loss", "# phase: d_loss"]


def test_missing_golden_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec without golden files fails with the hint to run --update-golden."""
    me = sys.modules[__name__]
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "t.dl").write_text(_TINY)
    monkeypatch.setattr(me, "SPECS", tmp_path / "specs")
    monkeypatch.setattr(me, "GOLDEN", tmp_path / "golden")
    me.compiled.cache_clear()
    try:
        with pytest.raises(pytest.fail.Exception, match="pytest --update-golden"):
            me.test_golden("t", "forward", update_golden=False)
        me.test_golden("t", "forward", update_golden=True)
        assert (tmp_path / "golden" / "t.forward.txt").exists()
        me.test_golden("t", "forward", update_golden=False)
    finally:
        me.compiled.cache_clear()


# ---------------------------------------------------------------- independent of imports

_LEAN = """\
# dslgraph 1
# passes: (none)
inputs
  %0:f32[2,3] = input ; name='x'
body
  %1:f32[2,3] = leaky_relu %0
  %2:f32[2,3] = exp %1 ; role=grad
outputs
  output y = %2
"""

# Print each text read from stdin (a JSON list) with `runtime.ir_text.to_text` before and
# after importing the op registry, and canonically with `runtime.ops.to_text`; with argument "all",
# every other runtime and language module is imported first.
_PRINTER = """
import json, sys
from runtime.ir_text import parse_text, to_text
graphs = [parse_text(t) for t in json.load(sys.stdin)]
raw = [to_text(g) for g in graphs]
if sys.argv[1] == "all":
    import dsl.api, dsl.cli, runtime.autodiff, runtime.gradcheck, runtime.passes, runtime.plan
import runtime.ops
json.dump({"raw": raw, "raw_after": [to_text(g) for g in graphs],
           "canonical": [runtime.ops.to_text(g) for g in graphs],
           "ops": sorted(runtime.ops.REGISTRY)}, sys.stdout)
"""


def test_text_does_not_depend_on_imported_modules() -> None:
    """No module changes how graphs print by being imported: `runtime.ir_text.to_text` prints
    the attributes a graph holds, `runtime.ops.to_text` adds the registered defaults, and
    `runtime.ops` registers every op itself (the fusion pass's op included)."""
    import json
    import subprocess

    from conftest import cli_env

    texts = [_LEAN, golden_path("linear_regression", "optimized").read_text()]
    out = {}
    for which in ("ops", "all"):
        p = subprocess.run([sys.executable, "-c", _PRINTER, which], input=json.dumps(texts),
                           capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=120)
        assert p.returncode == 0, p.stderr
        out[which] = json.loads(p.stdout)
    assert out["ops"] == out["all"]
    res = out["ops"]
    assert res["raw"] == res["raw_after"]
    assert "leaky_relu %0\n" in res["raw"][0]
    assert "leaky_relu %0 {alpha=0.01}\n" in res["canonical"][0]
    body = lambda t: [ln for ln in t.splitlines() if not ln.startswith("#")]
    assert body(res["canonical"][1]) == body(texts[1])
    assert "fused_elementwise" in res["ops"]
