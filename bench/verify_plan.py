"""Check that the plan's buffer-reusing step is bit-identical to the plain loop.

    python bench/verify_plan.py [SPEC ...] [--steps 40] [--dtype float64 float32]

For each spec (default: every spec under specs/), trains `--steps` steps twice from the same
seed, once with `Plan.reuse_buffers = False` and once with it on, and compares every loss and
every variable byte for byte. It also evaluates the trained model both ways.
`compare` does this for one spec (`tests/test_plan.py` runs it on every shipped spec).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Comparison:
    """One spec trained both ways: whether losses, variables and (when run) the evaluation
    agree byte for byte, and how many out= kernels and in-place updates the fast plans use."""

    same_losses: bool
    same_vars: bool
    same_eval: bool
    kernels: int
    inplace: int

    @property
    def ok(self) -> bool:
        return self.same_losses and self.same_vars and self.same_eval


def _train(spec: str, dtype: str, steps: int, reuse: bool, batch: int | None,
           evaluate: bool) -> tuple[list, dict, dict, tuple[int, int]]:
    import numpy as np

    import dsl
    from runtime import plan as plan_mod

    saved = plan_mod.Plan.reuse_buffers
    plan_mod.Plan.reuse_buffers = reuse
    try:
        m = dsl.load(spec, dtype=dtype)
        losses: list[Any] = []
        m.fit(steps=steps, batch=batch, on_step=lambda s, l: losses.append(dict(l)),
              final_eval=False)
        plans = [p for r in m.trainer.phases for p in r.plans.values()]
        fast = (sum(p.fast.kernels for p in plans if p.fast is not None),
                sum(p.fast.inplace for p in plans if p.fast is not None))
        vars_ = {k: np.array(v, copy=True) for k, v in m.trainer.variables.items()}
        ev: dict[str, Any] = {}
        if evaluate:
            try:
                ev = m.evaluate()
            except Exception as e:  # noqa: BLE001 - reported, compared as text
                ev = {"error": repr(e)}
    finally:
        plan_mod.Plan.reuse_buffers = saved
    return losses, vars_, ev, fast


def compare(spec: str, dtype: str = "float32", steps: int = 40, batch: int | None = None,
            evaluate: bool = True) -> Comparison:
    """Train `spec` for `steps` steps from the same seed with the plain loop
    (`Plan.reuse_buffers = False`) and with the buffer-reusing step, and compare."""
    l0, v0, e0, _ = _train(spec, dtype, steps, False, batch, evaluate)
    l1, v1, e1, fast = _train(spec, dtype, steps, True, batch, evaluate)
    same_v = v0.keys() == v1.keys() and all(
        v0[k].dtype == v1[k].dtype and v0[k].tobytes() == v1[k].tobytes() for k in v0)
    return Comparison(repr(l0) == repr(l1), same_v, repr(e0) == repr(e1), *fast)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("specs", nargs="*")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--dtype", nargs="+", default=["float64", "float32"])
    args = ap.parse_args(argv)
    specs = args.specs or [str(p) for p in sorted((ROOT / "specs").rglob("*.dl"))]
    bad = 0
    for spec in specs:
        for dt in args.dtype:
            try:
                c = compare(spec, dt, args.steps)
            except Exception as e:  # noqa: BLE001
                print(f"ERROR {spec} {dt}: {e!r}")
                bad += 1
                continue
            bad += not c.ok
            tag = "ok  " if c.ok else "DIFF"
            print(f"{tag} {Path(spec).name:32s} {dt}  out= kernels: {c.kernels:3d}, "
                  f"in-place updates: {c.inplace:3d}"
                  + ("" if c.ok else f"  losses {c.same_losses} vars {c.same_vars} "
                     f"eval {c.same_eval}"))
    print(f"{bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
