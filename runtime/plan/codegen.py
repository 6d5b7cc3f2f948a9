"""Straight-line Python for a plan's steps: one generated function per step list, so that a
step runs without building argument lists or walking anything at run time."""

from __future__ import annotations

from typing import Any

__all__ = ["codegen"]


def codegen(steps: list[tuple[Any, tuple[int, ...], int]], name: str) -> Any:
    """`def name(vals)` running `vals[out] = fn(vals[i], ...)` for each step, unrolled."""
    ns: dict[str, Any] = {}
    lines = [f"def {name}(vals):"]
    for k, (fn, ins, out) in enumerate(steps):
        ns[f"f{k}"] = fn
        lines.append(f"    vals[{out}] = f{k}({', '.join(f'vals[{i}]' for i in ins)})")
    lines.append("    return None")
    exec(compile("\n".join(lines), f"<plan {name}>", "exec"), ns)
    return ns[name]
