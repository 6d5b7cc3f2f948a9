"""The rewrite tables: numerically stabilizing rewrites and algebraic simplifications.

Every row is `Rule(before, after[, guard])` written in the pattern language of
`runtime.passes.rewrite`. The engine only rewrites when the replacement has exactly the
original node's type, which is what makes the identity rows safe under broadcasting (`x * 1`
with a `1` of a bigger shape is not `x`) and what limits `reshape(x) -> x` and friends to
same-shape cases. Deliberately absent: `exp(log(x)) -> x` (wrong for x <= 0), `x * 0 -> 0`
(wrong for inf/nan), anything looking through `stop_gradient`.
"""

from __future__ import annotations

from runtime.ir import Graph
from runtime.passes.rewrite import Attr, Binding, Const, Guard, Rule, Var

X, Y = Var("x"), Var("y")
ONE, ZERO, TWO = Const(1.0), Const(0.0), Const(2.0)


def floating(var: str) -> Guard:
    """Guard: the node bound to `var` has a float dtype (the stable kernels of softplus,
    sigmoid, log_softmax... keep their input's dtype, so integer inputs would truncate)."""
    return lambda g, b: g.nodes[b[var]].type.is_float


def _perm(axes: tuple[int, ...] | None, rank: int) -> tuple[int, ...]:
    return tuple(range(rank))[::-1] if axes is None else tuple(a % rank for a in axes)


def _composed(g: Graph, b: Binding) -> tuple[int, ...]:
    """Axes of transpose(transpose(x, p), q) as one transpose of x: r[i] = p[q[i]]."""
    rank = g.nodes[b["x"]].type.rank
    p, q = _perm(b["p"], rank), _perm(b["q"], rank)
    return tuple(p[i] for i in q)


def _identity_perm(g: Graph, b: Binding) -> bool:
    rank = g.nodes[b["x"]].type.rank
    return _perm(b["p"], rank) == tuple(range(rank))


# Rewrites that replace numerically dangerous compositions by stable primitives. `stabilize`
# runs only these, before differentiation, so that gradients are built from the stable forms.
STABILIZING_RULES: tuple[Rule, ...] = (
    # log(1 + exp(x)) -> softplus(x)
    Rule(("log", ("add", ONE, ("exp", X))), ("softplus", X), floating("x")),
    # log(exp(x) + 1) -> softplus(x)
    Rule(("log", ("add", ("exp", X), ONE)), ("softplus", X), floating("x")),
    # log1p(exp(x)) -> softplus(x)
    Rule(("log1p", ("exp", X)), ("softplus", X), floating("x")),
    # log(softmax(x, axis=a, temperature=t)) -> log_softmax(x, axis=a, temperature=t)
    Rule(("log", ("softmax", X, {"axis": Attr("a"), "temperature": Attr("t")})),
         ("log_softmax", X, {"axis": Attr("a"), "temperature": Attr("t")}), floating("x")),
    # log(sigmoid(x)) -> -softplus(-x)
    Rule(("log", ("sigmoid", X)), ("neg", ("softplus", ("neg", X))), floating("x")),
    # log(1 - sigmoid(x)) -> -softplus(x)
    Rule(("log", ("sub", ONE, ("sigmoid", X))), ("neg", ("softplus", X)), floating("x")),
    # log(sum(exp(x), axis=a, keepdims=k)) -> logsumexp(x, axis=a, keepdims=k)
    Rule(("log", ("sum", ("exp", X), {"axis": Attr("a"), "keepdims": Attr("k")})),
         ("logsumexp", X, {"axis": Attr("a"), "keepdims": Attr("k")}), floating("x")),
    # exp(x) / sum(exp(x), axis=a, keepdims=True) -> softmax(x, axis=a)
    Rule(("div", ("exp", X), ("sum", ("exp", X), {"axis": Attr("a"), "keepdims": True})),
         ("softmax", X, {"axis": Attr("a"), "temperature": 1.0}), floating("x")),
    # 1 / (1 + exp(-x)) -> sigmoid(x)
    Rule(("div", ONE, ("add", ONE, ("exp", ("neg", X)))), ("sigmoid", X), floating("x")),
)

# Identities that remove work without changing values (each fires only when the replacement
# has the original type exactly).
ALGEBRAIC_RULES: tuple[Rule, ...] = (
    # x * 1 -> x
    Rule(("mul", X, ONE), X),
    # 1 * x -> x
    Rule(("mul", ONE, X), X),
    # x + 0 -> x
    Rule(("add", X, ZERO), X),
    # 0 + x -> x
    Rule(("add", ZERO, X), X),
    # x - 0 -> x
    Rule(("sub", X, ZERO), X),
    # 0 - x -> -x
    Rule(("sub", ZERO, X), ("neg", X)),
    # x / 1 -> x
    Rule(("div", X, ONE), X),
    # x ** 1 -> x
    Rule(("pow", X, ONE), X),
    # x ** 2 -> square(x)
    Rule(("pow", X, TWO), ("square", X)),
    # -(-x) -> x
    Rule(("neg", ("neg", X)), X),
    # x + (-y) -> x - y
    Rule(("add", X, ("neg", Y)), ("sub", X, Y)),
    # x - (-y) -> x + y
    Rule(("sub", X, ("neg", Y)), ("add", X, Y)),
    # cast(x, dtype of x) -> x
    Rule(("cast", X), X),
    # sum_to(x, shape of x) -> x
    Rule(("sum_to", X), X),
    # broadcast_to(x, shape of x) -> x
    Rule(("broadcast_to", X), X),
    # reshape(x, shape of x) -> x
    Rule(("reshape", X), X),
    # reshape(reshape(x, s1), s2) -> reshape(x, s2)
    Rule(("reshape", ("reshape", X), {"shape": Attr("s")}), ("reshape", X, {"shape": Attr("s")})),
    # broadcast_to(broadcast_to(x, s1), s2) -> broadcast_to(x, s2)
    Rule(("broadcast_to", ("broadcast_to", X), {"shape": Attr("s")}),
         ("broadcast_to", X, {"shape": Attr("s")})),
    # transpose(x, identity) -> x
    Rule(("transpose", X, {"axes": Attr("p")}), X, _identity_perm),
    # transpose(transpose(x, p), q) -> transpose(x, p∘q)
    Rule(("transpose", ("transpose", X, {"axes": Attr("p")}), {"axes": Attr("q")}),
         ("transpose", X, {"axes": _composed})),
)

SIMPLIFY_RULES: tuple[Rule, ...] = STABILIZING_RULES + ALGEBRAIC_RULES
