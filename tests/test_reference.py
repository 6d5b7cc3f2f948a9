"""The generated reference (`dsl/reference.py`, `docs/reference.md`) and the command-line
commands around it: `dslrun doc [NAME]`, `dslrun list`, `dslrun --version` and the message for
a mistyped command.

    pytest tests/test_reference.py --update-golden   # rewrite docs/reference.md
"""

from __future__ import annotations

import difflib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT

from dsl import reference
from dsl.errors import DslError

DOC = ROOT / "docs" / "reference.md"
REGENERATE = ("python -m dsl.reference > docs/reference.md "
              "(or pytest tests/test_reference.py --update-golden)")


def test_docs_reference_is_current(update_golden: bool) -> None:
    text = reference.reference_text()
    if update_golden:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
    old = DOC.read_text() if DOC.exists() else ""
    if old != text:
        diff = "".join(list(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                 "docs/reference.md", "generated"))[:60])
        pytest.fail(f"docs/reference.md is not current; regenerate it: {REGENERATE}\n{diff}")


def test_every_name_has_a_description() -> None:
    """Only primitives may go without one (their names say it; most have an OpDef doc)."""
    where = {"Compile-time builtins": "BUILTIN_DOCS in dsl/reference.py (or a docstring)",
             "Initializers": "INIT_DOCS in dsl/reference.py",
             "Train settings": "a comment on the field in runtime/program.py, SETTING_DOCS "
                               "in dsl/reference.py or field metadata 'doc'",
             "Augmentations": "AUGMENT_DOCS in dsl/reference.py",
             "Data sets": "a docstring on the loader in runtime/train/data/"}
    missing = [f"{e.section}: {e.name} (add to {where.get(e.section, 'dsl/prelude.dl')})"
               for e in reference.entries()
               if e.section != "Primitives" and not e.description.strip()]
    assert not missing, "no description:\n" + "\n".join(missing)


def test_the_tables_name_only_what_exists() -> None:
    from dsl.lower import BUILTINS, TRAIN_SETTINGS
    from runtime.init import INITIALIZERS
    from runtime.train.augment import AUGMENTATIONS

    for table, names in ((reference.BUILTIN_DOCS, BUILTINS), (reference.INIT_DOCS, INITIALIZERS),
                         (reference.SETTING_DOCS, TRAIN_SETTINGS),
                         (reference.AUGMENT_DOCS, AUGMENTATIONS)):
        assert set(table) <= set(names), set(table) - set(names)


def test_sections_cover_every_source() -> None:
    sections = {e.section for e in reference.entries()}
    for s in ("Layers", "Losses", "Metrics", "Schedules of step / epoch",
              "Optimizers (update rules)", "Convolution and pooling", "Normalization",
              "Compile-time builtins", "Primitives", "Initializers", "Data sets",
              "Train settings", "Augmentations"):
        assert s in sections


@pytest.mark.parametrize("name,says", [
    ("dense", ["dense(x, units, bias = true, init = default, bias_init = zeros)", "prelude def"]),
    ("adam", ["optimizer adam(lr = 1e-3, beta1 = 0.9", "bias correction"]),
    ("diabetes", ["standardize = true", "standardizes y"]),
    ("digits", ["data digits(test_fraction = 0.2", "image = false"]),
    ("glorot_normal", ["xavier_normal(gain = 1.0)"]),  # an alias finds its initializer
    ("conv2d", ["prelude def", "primitive", "`def conv2d` it is this primitive"]),
    ("sum", ["builtin", "primitive", "reaches the builtin"]),
    ("batch", ["train setting", "full-batch"]),
    ("hflip", ["hflip(p = 0.5)", "augmentation"]),
])
def test_entry(name: str, says: list[str]) -> None:
    text = reference.entry_text(name)
    for s in says:
        assert s in text, (s, text)


def test_unknown_name_is_one_line_with_a_did_you_mean() -> None:
    with pytest.raises(DslError) as e:
        reference.entry_text("dens")
    assert "'dense'" in str(e.value) and "\n" not in str(e.value)


def test_mistyped_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = ["train", "check", "doc", "list"]
    monkeypatch.chdir(tmp_path)
    assert reference.mistyped_command("chek", commands) == \
        "unknown command 'chek' (did you mean 'check'?)"
    assert reference.mistyped_command("mlp_digits", commands) is None  # close to no command
    assert reference.mistyped_command("lasso", ["lass"]) is None  # a shipped spec's name
    (tmp_path / "chek").write_text("model m\n")
    assert reference.mistyped_command("chek", commands) is None  # an existing file


def test_spec_summaries() -> None:
    rows = dict(reference.spec_summaries())
    assert "mlp_digits" in rows and "bench/mlp_small" in rows and "mlp_small" not in rows
    assert all(rows.values()), [k for k, v in rows.items() if not v]


# ---------------------------------------------------------------- through the command line

SPEC_NAMED_LIKE_A_TYPO = """model lst
param w: [2] = zeros
objective loss = sum((w - 1) ** 2)
optimizer sgd(lr = 0.1) minimize loss
train { steps = 1 }
"""

RUNS = {
    "doc": ["doc"],
    "doc_adam": ["doc", "adam"],
    "doc_typo": ["doc", "adamm"],
    "list": ["list"],
    "version": ["--version"],
    "chek": ["chek", "mlp_digits"],
    "file_named_like_a_typo": ["lst", "--quiet"],
}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory, cli_runner) -> dict:
    work = tmp_path_factory.mktemp("doc")
    (work / "lst").write_text(SPEC_NAMED_LIKE_A_TYPO)
    with ThreadPoolExecutor(4) as pool:
        futures = {k: pool.submit(cli_runner, args, work) for k, args in RUNS.items()}
        return {k: f.result() for k, f in futures.items()}


def test_cli_doc(out) -> None:
    assert out["doc"].returncode == 0 and out["doc"].stdout == reference.reference_text()
    assert out["doc_adam"].returncode == 0
    assert out["doc_adam"].stdout.startswith("### adam\n")


def test_cli_doc_unknown_name(out) -> None:
    r = out["doc_typo"]
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ("error: doc: nothing named 'adamm' (did you mean 'adam'?); "
                        "`dslrun doc` prints the whole reference\n")


def test_cli_list(out) -> None:
    r = out["list"]
    assert r.returncode == 0
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert "mlp_digits" in names and "bench/lenet" in names and "lenet" in names


def test_cli_version(out) -> None:
    from importlib.metadata import version

    assert out["version"].returncode == 0
    assert out["version"].stdout == f"dslrun {version('dslrun')}\n"


def test_cli_mistyped_command(out) -> None:
    r = out["chek"]
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "error: unknown command 'chek' (did you mean 'check'?)\n"


def test_cli_file_named_like_a_command_trains(out) -> None:
    r = out["file_named_like_a_typo"]
    assert r.returncode == 0, r.stderr
