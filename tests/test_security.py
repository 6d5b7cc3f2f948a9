"""What dslrun promises about the files it is given (README, "What dslrun promises"): a spec
never executes Python and nothing is ever unpickled; `include` and data paths are resolved
relative to the spec and printed in errors; a checkpoint or data file that is not what it
claims to be is one clear error. Each promise is tested here on the command line."""

from __future__ import annotations

import ast
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli

GOOD = """model m
data npz("d.npz")
input x: f32[B, 2]
input y: i64[B]
param w: f32[2, 2] = zeros
objective loss = cross_entropy(x @ w, y)
optimizer sgd(lr = 0.1) minimize loss
train { steps = 2 }
"""


class _Planted:
    """Unpickling this creates the file `path` (through `open`): the proof of a load."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A spec directory `spec/` (with d.npz, a good training set) under tmp_path."""
    d = tmp_path / "spec"
    d.mkdir()
    np.savez(d / "d.npz", x=np.zeros((8, 2), np.float32), y=np.zeros(8, np.int64))
    (d / "s.dl").write_text(GOOD)
    return d


def fails(args: list[str], cwd: Path, *says: str) -> str:
    """Run dslrun: exit status 1, one error, no traceback, each of `says` in the message."""
    done = run_cli(args, cwd)
    err = done.stderr
    assert done.returncode == 1, (args, done.stdout, err)
    assert "Traceback" not in err and err.count("error:") == 1, err
    for s in says:
        assert s in err, (s, err)
    return err


# --------------------------------------------------------------------------- no Python

def test_a_spec_never_executes_python(place: Path) -> None:
    marker = place / "MARKER"
    code = f"open({str(marker)!r}, 'w')"
    (place / "evil.py").write_text(code + "\n")
    (place / "inc.dl").write_text(GOOD.replace("input x", 'include "evil.py"\ninput x'))
    fails(["check", "spec/inc.dl"], place.parent, "spec/evil.py:1:6: error:")
    # Python in every place a string goes: a constant, an option, a data file's name
    hostile = GOOD.replace('npz("d.npz")', f'npz("d.npz\\"); {code} #")') \
        .replace("train {", f'const S = "{code}"\ntrain {{')
    (place / "h.dl").write_text(hostile)
    fails(["check", "spec/h.dl"], place.parent, "does not exist")
    (place / "opt.dl").write_text(GOOD.replace("objective loss = cross_entropy(x @ w, y)",
                                               f'objective loss = cross_entropy(x @ w, y, '
                                               f'reduction = "{code}")'))
    assert "Traceback" not in run_cli(["check", "spec/opt.dl"], place.parent).stderr
    (place / "ok.dl").write_text(GOOD.replace("train {", f'const S = "{code}"\ntrain {{'))
    done = run_cli(["train", "spec/ok.dl", "--quiet", "--out", "run"], place.parent)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else (
                f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute)
                and isinstance(f.value, ast.Name) else "")
            out.append((name, node))
    return out


# Every place the sources run generated code or read serialized objects, and why it is safe.
REVIEWED = {
    ("exec", "runtime/plan/codegen.py"): "a step: generated from slot numbers only",
    ("exec", "runtime/plan/scan.py"): "a loop driver: generated from slot numbers only",
    ("exec", "runtime/ops/fused.py"): "a fused kernel: generated identifiers only",
    ("pickle.loads", "dsl/cache.py"): "dslrun's own parse cache, in a private 0700 directory",
    ("np.load", "runtime/train/npz.py"): "allow_pickle=False",
    ("importlib.import_module", "runtime/ops/elementwise.py"):
        "scipy.special or cupyx.scipy.special, from a fixed table",
}
RISKY = ("exec", "eval", "pickle.load", "pickle.loads", "np.load", "numpy.load",
         "marshal.loads", "shelve.open", "__import__", "importlib.import_module")


def test_only_reviewed_code_executes_generated_code_or_reads_serialized_objects() -> None:
    found = {}
    for folder in ("dsl", "runtime"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for name, call in _calls(ast.parse(path.read_text())):
                if name in RISKY:
                    found.setdefault((name, rel), []).append(call)
    assert set(found) <= set(REVIEWED), sorted(set(found) - set(REVIEWED))
    for call in found.get(("np.load", "runtime/train/npz.py"), []):
        kw = {k.arg: k.value for k in call.keywords}
        assert isinstance(kw.get("allow_pickle"), ast.Constant) and \
            kw["allow_pickle"].value is False


# --------------------------------------------------------------------------- no unpickling

def test_a_pickle_is_never_loaded(place: Path) -> None:
    marker = place / "MARKER"
    planted = pickle.dumps(_Planted(marker))
    (place / "evil.npz").write_bytes(planted)
    (place / "evil.pkl").write_bytes(planted)
    np.save(place / "evil_obj.npy", np.array([_Planted(marker)], dtype=object),
            allow_pickle=True)
    np.savez(place / "evil_obj.npz", x=np.array([_Planted(marker)], dtype=object),
             y=np.zeros(1, np.int64))
    root = place.parent
    for f in ("evil.npz", "evil.pkl", "evil_obj.npy"):
        fails(["eval", "spec/s.dl", "--checkpoint", f"spec/{f}"], root, "is not a checkpoint")
        fails(["train", "spec/s.dl", "--init-from", f"spec/{f}"], root, "is not a checkpoint")
    fails(["train", "spec/s.dl", "--resume", "spec/evil.pkl"], root, "not a zip archive")
    fails(["eval", "spec/s.dl", "--checkpoint", "spec/evil_obj.npz"], root,
          "array 'x': it holds Python objects, which are never loaded")
    for f in ("evil.npz", "evil_obj.npz", "evil_obj.npy"):
        (place / "data.dl").write_text(GOOD.replace("d.npz", f))
        fails(["check", "spec/data.dl"], root, f"data file spec/{f} cannot be read")
    assert not marker.exists()


# --------------------------------------------------------------------------- bad files

def _damaged(place: Path) -> dict[str, str]:
    """Files that claim to be .npz and are not, with what the error says about each."""
    good = (place / "d.npz").read_bytes()
    (place / "truncated.npz").write_bytes(good[: len(good) // 2])
    (place / "random.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    (place / "empty.npz").write_bytes(b"")
    with zipfile.ZipFile(place / "notes.npz", "w") as z:
        z.writestr("notes.txt", "not an array")
    np.save(place / "one.npy", np.zeros(3))
    os.replace(place / "one.npy", place / "single.npz")
    return {"truncated.npz": "it is a damaged or truncated zip archive",
            "random.npz": "it is not a zip archive", "empty.npz": "it is not a zip archive",
            "notes.npz": "the zip archive holds 'notes.txt', which is not a NumPy array",
            "single.npz": "it is a single .npy array"}


def test_a_checkpoint_that_is_not_one_is_a_clear_error(place: Path) -> None:
    root = place.parent
    for f, why in _damaged(place).items():
        fails(["eval", "spec/s.dl", "--checkpoint", f"spec/{f}"], root,
              f"spec/{f} is not a checkpoint (.npz) file: {why}")
        fails(["train", "spec/s.dl", "--resume", f"spec/{f}"], root, why)
    fails(["eval", "spec/s.dl", "--checkpoint", "spec/d.npz"], root,
          "spec/d.npz is an .npz file but not a dslrun checkpoint")
    fails(["eval", "spec/s.dl", "--checkpoint", "spec/none.npz"], root, "spec/none.npz")


def test_a_data_file_that_is_not_what_it_claims_is_a_clear_error(place: Path) -> None:
    root = place.parent
    for f, why in _damaged(place).items():
        (place / "data.dl").write_text(GOOD.replace("d.npz", f))
        fails(["check", "spec/data.dl"], root, f"spec/data.dl:2:1: error: data file "
                                               f"spec/{f} cannot be read", why)
    (place / "bad.csv").write_bytes(np.random.default_rng(1).bytes(300))
    (place / "data.dl").write_text(GOOD.replace('npz("d.npz")', 'csv("bad.csv")'))
    fails(["check", "spec/data.dl"], root, "data file spec/bad.csv cannot be read")


# --------------------------------------------------------------------------- paths

def test_include_and_data_paths_resolve_relative_to_the_spec(place: Path) -> None:
    (place / "lib").mkdir()
    (place / "lib" / "blocks.dl").write_text("def lin(x) { return x @ w }\n")
    (place / "inc.dl").write_text(GOOD.replace("input x", 'include "lib/blocks.dl"\ninput x')
                                  .replace("x @ w", "lin(x)"))
    elsewhere = place.parent / "elsewhere"
    elsewhere.mkdir()
    done = run_cli(["check", "../spec/inc.dl"], elsewhere)  # from another directory
    assert done.returncode == 0, done.stderr
    (place / "missing.dl").write_text(GOOD.replace("input x", 'include "lib/nope.dl"\ninput x'))
    fails(["check", "../spec/missing.dl"], elsewhere,
          "../spec/missing.dl:3:1: error: include: no file 'lib/nope.dl' (looked in ../spec)")
    (place / "nodata.dl").write_text(GOOD.replace("d.npz", "nope.npz"))
    fails(["check", "../spec/nodata.dl"], elsewhere, "data file ../spec/nope.npz does not exist")
    (place / "binary.dl").write_text(GOOD.replace("input x", 'include "d.npz"\ninput x'))
    fails(["check", "../spec/binary.dl"], elsewhere, "d.npz", "not a text file")
