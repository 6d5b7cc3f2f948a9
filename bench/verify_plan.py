"""Check that the plan's buffer-reusing step is bit-identical to the plain loop.

    python bench/verify_plan.py [SPEC ...] [--steps 40] [--dtype float64 float32]

For each spec (default: every spec under specs/), trains `--steps` steps twice from the same
seed, once with `Plan.reuse_buffers = False` and once with it on, and compares every loss and
every variable byte for byte. It also evaluates the trained model both ways.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _train(spec: str, dtype: str, steps: int, reuse: bool) -> tuple[list, dict, dict, int]:
    import numpy as np

    import dsl
    from runtime import plan as plan_mod

    plan_mod.Plan.reuse_buffers = reuse
    m = dsl.load(spec, dtype=dtype)
    losses: list[Any] = []
    m.fit(steps=steps, on_step=lambda s, l: losses.append(dict(l)), final_eval=False)
    plans = [p for r in m.trainer._phases for p in r.plans.values()]
    fast = (sum(p.fast.kernels for p in plans if p.fast is not None),
            sum(p.fast.inplace for p in plans if p.fast is not None))
    vars_ = {k: np.array(v, copy=True) for k, v in m.trainer.variables.items()}
    try:
        ev = m.evaluate()
    except Exception as e:  # noqa: BLE001 - reported, compared as text
        ev = {"error": repr(e)}
    return losses, vars_, ev, fast


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
                l0, v0, e0, _ = _train(spec, dt, args.steps, False)
                l1, v1, e1, fast = _train(spec, dt, args.steps, True)
            except Exception as e:  # noqa: BLE001
                print(f"ERROR {spec} {dt}: {e!r}")
                bad += 1
                continue
            same_l = repr(l0) == repr(l1)
            same_v = v0.keys() == v1.keys() and all(
                v0[k].dtype == v1[k].dtype and v0[k].tobytes() == v1[k].tobytes() for k in v0)
            same_e = repr(e0) == repr(e1)
            ok = same_l and same_v and same_e
            bad += not ok
            tag = "ok  " if ok else "DIFF"
            print(f"{tag} {Path(spec).name:32s} {dt}  out= kernels: {fast[0]:3d}, "
                  f"in-place updates: {fast[1]:3d}"
                  + ("" if ok else f"  losses {same_l} vars {same_v} eval {same_e}"))
    print(f"{bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
