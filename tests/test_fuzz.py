"""Property-based fuzzing of the front end (issue 11), a bounded number of examples.

The cases come from `bench/fuzz_cases.py`, shared with `bench/fuzz.py` (10,000 cases with a
time limit each): every shipped spec mutated (tokens deleted, duplicated and swapped, numbers
replaced by 0, -1, huge, nan and inf, names swapped, shape dims and option names changed,
brackets dropped, lines dropped or doubled, unicode inserted), random derivations of the
grammar, and plausible generated models. The contract: `dsl.compile` succeeds or raises a
`dsl.Error` with a message; a spec that compiles trains two steps and passes a small
check-grad under the same contract. Examples are derandomized, so a run is reproducible.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from conftest import ROOT

pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (the test extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import fuzz_cases as F  # noqa: E402


def bounded(n: int) -> settings:
    """n examples, derandomized (the same ones every run), no deadline (compiles vary
    with the machine's load)."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
SPECS = [name for name, _ in F.shipped()]


def _holds(text: str, grad: bool = True) -> F.Outcome:
    """Run a case and assert the contract: no exception but `dsl.Error`, a message."""
    out = F.run_case(text, grad=grad)
    assert out.kind in ("ok", "user", "user_nopos"), (
        f"{out.kind} in {out.stage}: {out.message} at {out.where}\n--- spec:\n{text}")
    if out.kind != "ok":
        assert out.message.strip(), f"an error without a message\n--- spec:\n{text}"
    return out


@bounded(100)
@given(spec=st.sampled_from(SPECS),
       mutations=st.lists(st.sampled_from(sorted(F.MUTATIONS)), min_size=1, max_size=3),
       rng=st.randoms(use_true_random=False))
def test_mutated_shipped_specs_fail_cleanly(spec: str, mutations: list[str],
                                            rng: random.Random) -> None:
    text = dict(F.shipped())[spec]
    _holds(F.apply(text, mutations, rng))


@bounded(60)
@given(rng=st.randoms(use_true_random=False))
def test_grammar_derivations_fail_cleanly(rng: random.Random) -> None:
    from dsl.parser import get_parser

    text = F.grammar_program(rng)
    get_parser().parse(text)  # a derivation of the grammar parses (postlexer included)
    _holds(text, grad=False)


@bounded(20)
@given(rng=st.randoms(use_true_random=False))
def test_plausible_programs_train_and_check_grad(rng: random.Random) -> None:
    """The generated models are valid: they compile, train two steps and pass check-grad."""
    text = F.plausible_program(rng)
    out = _holds(text)
    assert out.kind == "ok", f"{out.message}\n--- spec:\n{text}"


def test_every_mutation_changes_every_spec() -> None:
    """Each mutation operator does something on each shipped spec (the fuzz is not idle)."""
    for name, text in F.shipped():
        for m in sorted(F.MUTATIONS):
            changed = any(F.apply(text, [m], random.Random(k)) != text for k in range(4))
            assert changed, f"{m} never changes {name}"


def test_fuzz_runner_counts_and_reports(tmp_path) -> None:
    """bench/fuzz.py in a subprocess: every case counted once, each in a forked worker."""
    out = tmp_path / "fuzz.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz.py"), "-n", "6", "--start", "7",
         "--jobs", "2", "--timeout", "20", "--json", str(out), "--progress", "0"],
        capture_output=True, text=True, timeout=240)
    report = json.loads(out.read_text())
    assert sum(report["counts"].values()) == 6, proc.stdout + proc.stderr
    assert report["counts"]["escape"] == report["counts"]["hang"] == 0, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "errors with file:line:col" in proc.stdout
