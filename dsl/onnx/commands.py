"""`dslrun export` and `dslrun import`: the command-line side of `dsl.onnx` (argument checks,
what is printed); the work is in `export` and `importer`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from dsl.onnx import OnnxError, require_onnx


def add_parsers(sub: Any) -> None:
    """The `export` and `import` subcommands."""
    ex = sub.add_parser("export", help="write the evaluation-mode forward graph as ONNX")
    ex.add_argument("spec", nargs="?", help="a spec file or the name of a shipped spec")
    ex.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a const or an input default")
    ex.add_argument("--dtype", choices=("float32", "float64"), default=None)
    ex.add_argument("--seed", type=int, default=None)
    ex.add_argument("--list", action="store_true",
                    help="list the shipped specs it can export, and why not the others")
    ex.add_argument("--checkpoint", metavar="CKPT",
                    help="a checkpoint file or run directory (default: the initial weights)")
    ex.add_argument("-o", "--out", metavar="FILE", help="the .onnx file to write")
    ex.add_argument("--output", action="append", metavar="NAME",
                    help="export this forward output (repeatable; default: the spec's outputs, "
                         "else the logits feeding its first metric)")
    ex.add_argument("--verify", action="store_true",
                    help="run the file with onnxruntime on a batch of the spec's data and "
                         "compare with dslrun")
    im = sub.add_parser("import", help="turn an ONNX model into a spec (.dl) and its weights")
    im.add_argument("model", help="an .onnx file")
    im.add_argument("-o", "--out", metavar="FILE",
                    help="the spec to write (default: MODEL's name with .dl, here); the "
                         "weights go beside it (FILE with .npz)")
    im.add_argument("--name", help="the spec's model name (default: from the file name)")
    im.add_argument("--force", action="store_true",
                    help="replace FILE and its .npz when they exist (a spec you edited is "
                         "otherwise never overwritten)")


def export_command(args: argparse.Namespace, compile_spec: Callable[..., Any]) -> int:
    """`dslrun export SPEC -o FILE`, or `dslrun export --list`."""
    require_onnx()
    if args.list:
        return _export_list()
    if not args.spec:
        raise OnnxError("export: name a spec (or give --list)")
    if not args.out:
        raise OnnxError("export: give the file to write with -o FILE.onnx")
    from pathlib import Path

    from dsl.onnx.export import describe, export_compiled, save, verify
    from runtime.train.runs import check_file_target

    check_file_target(args.out, "-o")
    c = compile_spec(args)
    result = export_compiled(c, args.checkpoint, args.output)
    path = save(result.model, Path(args.out))
    print(describe(result, path))
    if args.checkpoint is None:
        print("note: no --checkpoint: the initializers are the spec's initial weights",
              file=sys.stderr)
    if args.verify:
        worst, rows = verify(c, result, args.checkpoint)
        print(f"  onnxruntime vs dslrun on {rows}: largest difference {worst:.3g}")
        if worst > 1e-5:
            raise OnnxError(f"export: onnxruntime differs from dslrun by {worst:.3g} "
                            "(more than 1e-5)")
    return 0


def _export_list() -> int:
    """Each shipped spec: what it exports, or the ops it cannot."""
    from dsl.onnx.export import coverage

    rows = coverage()
    width = max(len(name) for name, _ in rows)
    for name, status in rows:
        print(f"{name:<{width}}  {status}")
    n_ok = sum(1 for _, s in rows if s.startswith("ok"))
    print(f"{n_ok} of {len(rows)} shipped specs export")
    return 0


def import_command(args: argparse.Namespace) -> int:
    """`dslrun import model.onnx [-o model.dl] [--force]`."""
    require_onnx()
    from pathlib import Path

    from dsl.onnx.importer import write_spec

    out = Path(args.out) if args.out else Path(Path(args.model).stem + ".dl")
    if not args.force:
        for existing in (out, out.with_suffix(".npz")):
            if existing.exists():
                raise OnnxError(f"{existing} exists; give another -o FILE, or --force to "
                                "replace it")
    spec, weights, summary = write_spec(args.model, out, name=args.name)
    print(f"wrote {spec}" + (f" and {weights}" if weights else ""))
    stale = out.with_suffix(".npz")
    if args.force and weights is None and stale != spec and stale.is_file():
        stale.unlink()  # an earlier import's weights, which the new spec does not have
        print(f"removed {stale} (the new model has no weights)")
    print(summary)
    return 0
