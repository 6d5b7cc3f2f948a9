"""Graph-to-graph optimization passes and the pipeline that runs them.

Every pass is a function `Graph -> Graph` that works on a copy and never mutates its argument:

- `stabilize`: numerically stabilizing rewrites only (`log(1+exp(x)) -> softplus(x)`, ...);
  the language applies the same rules to each node as it emits it (`rewrite.rewrite_at`),
  so gradients taken during lowering are built from the stable forms.
- `fold_constants`: evaluate nodes whose inputs are all constants.
- `merge_common_subexpressions`: compute equal subexpressions once.
- `simplify`: stabilizing rewrites plus algebraic identities (`x * 1 -> x`, ...), matrix
  products over stacked rows as one `tensordot` and the gates of an LSTM cell as one
  `lstm_gates` kernel, one rule engine (`runtime.passes.rewrite`)
  over data tables (`runtime.passes.rules`).
- `hoist_loop_invariants`: compute once, before a loop, what its body reads only from outside.
- `restructure_loops`: run once over whole sequences, before or after a loop, the work its
  body does per iteration without reading a carried value (input projections, the sums of a
  backward loop's weight gradients; `runtime.passes.loops`).
- `concat_padded_slices`: a sum of zero-padded slices tiling an axis (the gradient of `split`)
  becomes their `concat`.
- `eliminate_dead_code`: drop what no output or update needs (and what loops make for nobody).
- `fuse_elementwise`: group elementwise ops into `fused_elementwise` nodes (a lowering: the
  result has no VJP, so it runs last, after differentiation).

Every pass of `PIPELINE` also runs inside regions (loop bodies, `regions.everywhere`).
`run_pipeline` runs `PIPELINE` (or a chosen list), optionally verifying the invariants
(`verify_graph`) after every pass and dumping the canonical text after one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from runtime.ir import Graph, IRError
from runtime.ops import to_text
from runtime.ops.fused import FUSED
from runtime.passes.concat import concat_padded_slices
from runtime.passes.cse import merge_common_subexpressions
from runtime.passes.dce import eliminate_dead_code
from runtime.passes.fold import fold_constants
from runtime.passes.fuse import fuse_elementwise
from runtime.passes.loops import restructure_loops
from runtime.passes.regions import everywhere, hoist_loop_invariants
from runtime.passes.rewrite import (
    Attr,
    Const,
    RewriteStats,
    Rule,
    Var,
    rewrite,
)
from runtime.passes.rules import (
    ALGEBRAIC_RULES,
    CONTRACTION_RULES,
    FUSION_RULES,
    SIMPLIFY_RULES,
    STABILIZING_RULES,
)
from runtime.passes.verify import VerifyError, verify_graph

Pass = Callable[[Graph], Graph]


def stabilize(graph: Graph) -> Graph:
    """A copy of `graph` with the numerically dangerous patterns (`STABILIZING_RULES`)
    replaced by stable primitives; nothing else changes."""
    return rewrite(graph, STABILIZING_RULES)[0]


def simplify(graph: Graph) -> Graph:
    """A copy of `graph` rewritten with `SIMPLIFY_RULES` (stabilizing + algebraic) to a fixed
    point (bounded by the engine's iteration and growth limits)."""
    return rewrite(graph, SIMPLIFY_RULES)[0]


PIPELINE: list[tuple[str, Pass]] = [(name, everywhere(fn)) for name, fn in [
    ("stabilize", stabilize),
    ("fold_constants", fold_constants),
    ("merge_common_subexpressions", merge_common_subexpressions),
    ("simplify", simplify),
    ("hoist_loop_invariants", hoist_loop_invariants),
    ("restructure_loops", restructure_loops),
    ("concat_padded_slices", concat_padded_slices),
    ("eliminate_dead_code", eliminate_dead_code),
    ("fuse_elementwise", fuse_elementwise),
]]

PASSES: dict[str, Pass] = dict(PIPELINE)


def run_pipeline(graph: Graph, passes: Sequence[str | tuple[str, Pass]] | None = None,
                 dump_after: str | None = None,
                 verify: bool = False) -> tuple[Graph, list[str], str | None]:
    """Run `passes` (names from `PASSES` or `(name, function)` pairs; default `PIPELINE`) on
    `graph`, which is not modified.

    Returns the optimized graph (a new object), the names of the passes that ran, and the
    canonical text (`runtime.ops.to_text`, with a `# passes:` header) after the last run of
    `dump_after` when it is given. An unknown pass name, or a `dump_after` that is not among
    the passes to run, raises ValueError listing the valid names. With `verify`,
    `verify_graph` runs on the input and after every pass; a violation raises `VerifyError`
    naming the pass.
    """
    chosen: list[tuple[str, Pass]] = []
    for p in PIPELINE if passes is None else passes:
        if isinstance(p, str):
            if p not in PASSES:
                raise ValueError(f"unknown pass {p!r}; known passes: {', '.join(PASSES)}")
            chosen.append((p, PASSES[p]))
        else:
            chosen.append((p[0], p[1]))
    names = [n for n, _ in chosen]
    if dump_after is not None and dump_after not in names:
        raise ValueError(f"cannot dump after {dump_after!r}: passes that run: "
                         f"{', '.join(names) or '(none)'}")
    if verify:
        _verify(graph, "the input graph (before any pass)")
    g, ran, dump = graph.copy(), [], None
    for name, fn in chosen:
        g = fn(g)
        ran.append(name)
        if verify:
            _verify(g, f"after pass {name!r}")
        if name == dump_after:
            dump = to_text(g, passes=ran)
    return g, ran, dump


def _verify(g: Graph, where: str) -> None:
    try:
        verify_graph(g)
    except IRError as e:
        raise VerifyError(f"{where}: {e}") from e


__all__ = [
    "ALGEBRAIC_RULES", "CONTRACTION_RULES", "FUSED", "FUSION_RULES", "PASSES", "PIPELINE",
    "SIMPLIFY_RULES", "STABILIZING_RULES", "Attr", "Const", "Pass", "RewriteStats", "Rule",
    "Var", "VerifyError",
    "concat_padded_slices", "eliminate_dead_code", "fold_constants", "fuse_elementwise",
    "hoist_loop_invariants", "merge_common_subexpressions", "restructure_loops",
    "rewrite", "run_pipeline", "simplify", "stabilize", "verify_graph",
]
