"""What `dslrun check` says about a compiled spec, as (label, text) rows: the command prints
them, a `Model` shows them as a table in a notebook (`Model._repr_html_`)."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["check_rows", "check_text", "rows_html"]


def check_rows(compiled: Any) -> list[tuple[str, str]]:
    """inputs, outputs, parameters, and data and procedures when the spec has them."""
    p = compiled.program
    from runtime.train.runner import TRAINER_INPUTS

    inputs = [f"{n}: {t}" for n, t in p.inputs.items() if n not in TRAINER_INPUTS]
    outs = [f"{k} {n}" for k, names in (("objective", p.objectives), ("metric", p.metrics),
                                         ("output", p.outputs)) for n in names]
    n_train = p.param_count(trainable_only=True)
    n_all = p.param_count()
    extra = f" ({n_all - n_train} frozen)" if n_all != n_train else ""
    rows = [("inputs", ", ".join(inputs) or "none"), ("outputs", ", ".join(outs) or "none"),
            ("parameters", f"{n_all}{extra}")]
    if p.data is not None:
        rows.append(("data", str(p.data[0])))
    if compiled.procedures:
        from dsl.procedures import signature

        rows.append(("procedures", ", ".join(signature(d)
                                             for d in compiled.procedures.values())))
    return rows


def memory_row(compiled: Any, max_memory: int | None = None) -> tuple[str, str] | None:
    """What training needs (`runtime.train.memory`), estimated without allocating anything;
    ResourceError when it cannot fit, as training would. None for a spec with nothing to
    train."""
    from dsl.data_check import missing_input
    from runtime.train.loop import Trainer
    from runtime.train.memory import human_bytes
    from runtime.train.runner import MissingInput

    if not compiled.program.phases:
        return None
    try:
        trainer = Trainer(compiled.program, dataset=compiled.dataset, allocate=False)
    except MissingInput as e:
        raise missing_input(compiled.program, e) from None
    est = trainer.check_memory(max_memory)
    parts = est.breakdown().rsplit(" = ", 1)[0]
    return "memory", f"about {human_bytes(est.total)} to train ({parts}; an upper bound)"


def check_text(compiled: Any, memory: tuple[str, str] | None = None) -> str:
    """The report of `dslrun check`: `NAME: ok`, then one line per row (and `memory`)."""
    lines = [f"{compiled.program.name}: ok"]
    for label, text in [*check_rows(compiled), *([memory] if memory else [])]:
        pad = "  " if label == "inputs" else " "  # inputs and outputs line up
        lines.append(f"{label}:{pad}{text}")
    return "\n".join(lines) + "\n"


def rows_html(title: str, rows: list[tuple[str, str]]) -> str:
    """A small HTML table of (label, text) rows under a bold title."""
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<div><b>{html.escape(title)}</b><table>{body}</table></div>"
