"""The `dslrun` command line: train (default), check, graph, params, eval, check-grad, bench.

Every user mistake ends with one message (`file:line:col: error: ...` plus the source line and
a caret where there is a position) and exit status 1, never a traceback.

This module holds the arguments of every command and `main`, which dispatches to them; the
commands' bodies and the error report are in `dsl.cli_commands`.
"""

from __future__ import annotations

import argparse
import sys

from dsl.cli_commands import COMMAND_FUNCS, report_error


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="a spec file or the name of a shipped spec")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a const or an input default")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="make every float this dtype (default: float32, and the float "
                        "dtypes the spec writes, such as f64[3])")
    p.add_argument("--seed", type=int, default=None)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dslrun", description="Train and inspect dslrun specs.")
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    sub = ap.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train a spec (the default command)")
    _common(t)
    # --dtype None: the spec's dtypes, or the dtype of the run --resume continues
    g = t.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, help="train up to this step in total")
    g.add_argument("--epochs", type=int, help="train up to this epoch in total")
    t.add_argument("--batch", type=int)
    t.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    t.add_argument("--out", default=None, metavar="DIR",
                   help="the run directory (default: a new runs/<model>/<run id>)")
    t.add_argument("--resume", metavar="CKPT",
                   help="continue exactly from a checkpoint (a file or a run directory), "
                        "with the overrides, dtype and seed of its run")
    t.add_argument("--init-from", metavar="CKPT",
                   help="load the parameters that fit (fine-tuning); says what it skipped")
    t.add_argument("--init-strict", action="store_true",
                   help="with --init-from: every parameter must be in the checkpoint")
    t.add_argument("--json", metavar="PATH")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--nan-check", action="store_true",
                   help="run node by node and stop at the first non-finite value")
    t.add_argument("--no-plots", action="store_true",
                   help="draw no curves.png in the run directory")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of an MPI launcher (implied under "
                        "mpirun -n K with K > 1): gradients averaged by allreduce, rank 0 "
                        "writes the run")
    t.add_argument("--max-memory", metavar="SIZE",
                   help="the memory the run may use (8G, 512M), instead of what the machine "
                        "has available: the run is refused before allocating when its "
                        "estimate is larger, or a generated data set more than half of it")
    c = sub.add_parser("check", help="parse, lower and infer shapes")
    _common(c)
    c.add_argument("--max-memory", metavar="SIZE",
                   help="as for train: the memory a run may use (8G); check fails when the "
                        "training estimate is larger")
    gr = sub.add_parser("graph", help="print a graph stage")
    _common(gr)
    gr.add_argument("--stage", choices=("forward", "grad", "step", "optimized", "planned",
                                        "procedures"),
                    default="optimized", help="procedures: each procedure with its defaults")
    gr.add_argument("--format", choices=("text", "dot", "svg", "png"), default="text",
                    help="svg, png: drawn by Graphviz (needs its dot program)")
    gr.add_argument("-o", "--output", metavar="FILE",
                    help="write to FILE instead of standard output (png needs it)")
    gr.add_argument("--dump-after", metavar="PASS")
    gr.add_argument("--locs", action="store_true", help="print source positions")
    pa = sub.add_parser("params", help="list parameters and state")
    _common(pa)
    e = sub.add_parser("eval", help="evaluate a checkpoint")
    _common(e)
    # --dtype None: the dtype of the checkpoint's run
    e.add_argument("--checkpoint", metavar="CKPT",
                   help="a checkpoint file or run directory (default: the latest run)")
    e.add_argument("--split", choices=("test", "valid", "train"), default=None,
                   help="default: test, else valid, else train")
    e.add_argument("--json", metavar="PATH")
    e.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    sa = sub.add_parser("sample", help="run a procedure with trained parameters")
    _common(sa)
    sa.add_argument("procedure", nargs="?", help="default: the only (or first) procedure")
    sa.add_argument("--checkpoint", metavar="CKPT",
                    help="a checkpoint file or run directory (default: the latest run)")
    sa.add_argument("--out", metavar="DIR", help="where <procedure>.npz goes")
    sa.add_argument("--json", metavar="PATH")
    sa.add_argument("--no-plots", action="store_true", help="draw no <procedure>.png")
    cg = sub.add_parser("check-grad", help="finite-difference check of the spec's gradients")
    _common(cg)
    cg.add_argument("--order", type=int, choices=(1, 2), default=1)
    cg.add_argument("--tol", type=float, default=1e-4)
    b = sub.add_parser("bench", help="compile time and median step time")
    _common(b)
    b.add_argument("--steps", type=int, default=50)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    b.add_argument("--profile", action="store_true",
                   help="per op kind: count, time share, FLOPs, bytes moved; the overhead")
    b.add_argument("--json", metavar="PATH")
    d = sub.add_parser("doc", help="the language reference, or the entry of one name")
    d.add_argument("name", nargs="?", help="a layer, loss, optimizer, primitive, data set, ...")
    sub.add_parser("list", help="the shipped specs, one line each")
    from dsl.onnx.commands import add_parsers as add_onnx_parsers

    add_onnx_parsers(sub)  # export, import
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMAND_FUNCS and not argv[0].startswith("-"):
        from dsl.reference import mistyped_command

        typo = mistyped_command(argv[0], COMMAND_FUNCS)
        if typo:
            print(f"error: {typo}", file=sys.stderr)
            return 2
        argv = ["train", *argv]
    ap = _parser()
    args = ap.parse_args(argv)
    if args.version:
        from dsl.reference import version

        print(f"dslrun {version()}")
        return 0
    if args.command is None:
        ap.print_help()
        return 2
    try:
        return COMMAND_FUNCS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        status = report_error(e, args)
        if status is None:
            raise
        return status


if __name__ == "__main__":
    sys.exit(main())
