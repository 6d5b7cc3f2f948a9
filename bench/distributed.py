"""Data-parallel throughput: samples per second of `dslrun SPEC` in one process and under
`mpirun -n K` (`runtime.train.distributed`), from the `seconds` column of each run's
metrics.csv (first to last logged step: no compile, no evaluation).

    python bench/distributed.py [SPEC] [--steps 60] [--ranks 2]

Each process uses one BLAS thread (OPENBLAS_NUM_THREADS=1), so K ranks use K cores. On a loaded
machine the numbers say more about the load than about the method: quote them with the load.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# one machine: shared memory between the ranks (`OMPI_MCA_btl=self,tcp` in the environment
# measures loopback TCP instead; an Allreduce of mlp_large's 7.5 MB took 12 ms over sm and 26 ms
# over TCP here); as root in containers
ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def throughput(cmd: list[str], run_dir: Path, batch: int) -> float:
    subprocess.run(cmd, check=True, env={"OMPI_MCA_btl": "self,sm", **os.environ, **ENV})
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "step"]
    first, last = rows[0], rows[-1]
    steps = int(last["step"]) - int(first["step"])
    return steps * batch / (float(last["seconds"]) - float(first["seconds"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "bench" / "mlp_large.dl"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--ranks", type=int, default=2)
    a = ap.parse_args()
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    dslrun, mpirun = shutil.which("dslrun", path=path), shutil.which("mpirun", path=path)
    if dslrun is None or mpirun is None:
        print("needs the dslrun script and mpirun (pip install -e '.[mpi]')", file=sys.stderr)
        return 2
    common = [a.spec, "--steps", str(a.steps), "--batch", str(a.batch), "--quiet",
              "--no-plots"]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        one = throughput([dslrun, *common, "--out", str(t / "one")], t / "one", a.batch)
        many = throughput([mpirun, "--oversubscribe", "-n", str(a.ranks), dslrun, *common,
                           "--out", str(t / "many")], t / "many", a.batch)
    print(f"{Path(a.spec).name}: batch {a.batch}, {a.steps} steps")
    print(f"  1 process : {one:10.0f} samples/s")
    print(f"  {a.ranks} processes: {many:10.0f} samples/s  ({many / one:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
