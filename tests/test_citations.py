"""Specs, the prelude and the documentation cite the course documents by title and section
(e.g. "ESE 546 book §8.3, Eq. 8.12"), never by the file names of their text copies."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

_FILE_NAME = re.compile(r"[0-9a-f]{16}\.txt")


def cited_files() -> list[Path]:
    """Every shipped .dl file (specs and the prelude) and every documentation file."""
    files = sorted((ROOT / "specs").rglob("*.dl")) + sorted((ROOT / "dsl").rglob("*.dl"))
    files += [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return files


def test_no_document_file_names() -> None:
    files = cited_files()
    assert len(files) > 10
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
            for p in files for n, line in enumerate(p.read_text().splitlines(), 1)
            if _FILE_NAME.search(line)]
    assert not hits, ("cite the course documents by title and section (see the legend at the "
                      "top of dsl/prelude.dl), not by file name:\n" + "\n".join(hits))
