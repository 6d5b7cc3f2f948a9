"""The rewrite tables: numerically stabilizing rewrites, algebraic simplifications, matrix
products over stacked rows as one product, and fused kernels for known compositions (the
gates of an LSTM cell).

Every row is `Rule(before, after[, guard])` written in the pattern language of
`runtime.passes.rewrite`. The engine only rewrites when the replacement has exactly the
original node's type, which is what makes the identity rows safe under broadcasting (`x * 1`
with a `1` of a bigger shape is not `x`) and what limits `reshape(x) -> x` and friends to
same-shape cases. Deliberately absent: `exp(log(x)) -> x` (wrong for x <= 0), `x * 0 -> 0`
(wrong for inf/nan), anything looking through `stop_gradient`.
"""

from __future__ import annotations

from typing import Any

from runtime.ir import Graph
from runtime.passes.rewrite import Attr, Binding, Const, Guard, Rule, Var

X, Y, W = Var("x"), Var("y"), Var("w")
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



def _rank(g: Graph, b: Binding, var: str) -> int:
    return g.nodes[b[var]].type.rank


def _rows_times_matrix(g: Graph, b: Binding) -> bool:
    """x has rows in two or more leading axes ([..., T, K]), w is a matrix."""
    return _rank(g, b, "x") >= 3 and _rank(g, b, "w") == 2


def _summed_products(g: Graph, b: Binding) -> bool:
    """sum_to(matmul(swap(x), y), s): x [..., T, K] and y [..., T, N] share every leading axis
    and s = [K, N] sums all the products (a dense layer's weight gradient on sequences)."""
    x, y = g.nodes[b["x"]].type, g.nodes[b["y"]].type
    r = x.rank
    return (r >= 3 and y.rank == r
            and _perm(b["p"], r) == (*range(r - 2), r - 1, r - 2)
            and x.shape[:-1] == y.shape[:-1] and tuple(b["s"]) == (x.shape[-1], y.shape[-1]))


def _transposed_product(g: Graph, b: Binding) -> bool:
    """transpose(tensordot(x, y, axes=n)) of a matrix: x [K, c...] and y [c..., N]."""
    n = b["n"]
    return (_rank(g, b, "x") == n + 1 and _rank(g, b, "y") == n + 1
            and _perm(b["p"], 2) == (1, 0))


def _last_first(var: str) -> Any:
    """The axes moving the last axis of `var` to the front."""
    def axes(g: Graph, b: Binding) -> tuple[int, ...]:
        r = _rank(g, b, var)
        return (r - 1, *range(r - 1))
    return axes


def _first_last(var: str) -> Any:
    """The axes moving the first axis of `var` to the end."""
    def axes(g: Graph, b: Binding) -> tuple[int, ...]:
        r = _rank(g, b, var)
        return (*range(1, r), 0)
    return axes


def _leading_axes(g: Graph, b: Binding) -> int:
    return _rank(g, b, "x") - 1


# Matrix products over rows stacked in several leading axes (sequences [B, T, features]) as
# one product over the flattened rows (`tensordot`, one BLAS call instead of one per leading
# index and a sum): the same sums, added in another order.
CONTRACTION_RULES: tuple[Rule, ...] = (
    # matmul(x [..., T, K], w [K, N]) -> tensordot(x, w, axes=1)
    Rule(("matmul", X, W), ("tensordot", X, W, {"axes": 1}), _rows_times_matrix),
    # sum_to(matmul(swap(x), y), [K, N]) -> tensordot(x with K first, y, axes=rank - 1)
    Rule(("sum_to", ("matmul", ("transpose", X, {"axes": Attr("p")}), Y), {"shape": Attr("s")}),
         ("tensordot", ("transpose", X, {"axes": _last_first("x")}), Y,
          {"axes": _leading_axes}), _summed_products),
    # transpose(tensordot(x, y)) -> tensordot(y with N first, x with K last)
    Rule(("transpose", ("tensordot", X, Y, {"axes": Attr("n")}), {"axes": Attr("p")}),
         ("tensordot", ("transpose", Y, {"axes": _last_first("y")}),
          ("transpose", X, {"axes": _first_last("x")}), {"axes": Attr("n")}),
         _transposed_product),
)


def _quarter(g: Graph, z: int, index: Any) -> int | None:
    """k when `index` reads z[..., k H : (k + 1) H] of z [..., 4H] (gate k of an LSTM cell)."""
    t = g.nodes[z].type
    n = t.shape[-1] if t.rank else None
    if not isinstance(n, int) or n % 4 or not isinstance(index, tuple) or len(index) != t.rank:
        return None
    if any(e != ("s", None, None, None) for e in index[:-1]):
        return None
    h, last = n // 4, index[-1]
    if last[0] != "s" or last[3] not in (None, 1):
        return None
    start = 0 if last[1] is None else last[1]
    stop = n if last[2] is None else last[2]
    if start < 0 or start % h or stop != start + h:
        return None
    return start // h


def _lstm_gate(gates: tuple[int, ...]) -> Guard:
    """Guard: the slice bound to `ix` is gate k of x for a k in `gates`, x is a float split
    into its four gates (getitem users for every quarter of its last axis: an LSTM cell), or
    an earlier gate of x was rewritten already (x has an `lstm_gates` user)."""
    def guard(g: Graph, b: Binding) -> bool:
        z = b["x"]
        if not g.nodes[z].type.is_float or _quarter(g, z, b["ix"]) not in gates:
            return False
        users = [g.nodes[u] for u in g.user_set(z)]
        seen = {_quarter(g, z, n.attrs.get("index")) for n in users if n.op == "getitem"}
        return {0, 1, 2, 3} <= seen or any(n.op == "lstm_gates" for n in users)
    return guard


# The gate activations of an LSTM cell (PyTorch's order i, f, g, o) as one `lstm_gates` kernel
# over all four gates, read back by the same slices.
FUSION_RULES: tuple[Rule, ...] = (
    # sigmoid(x[..., gate i, f or o]) -> lstm_gates(x)[..., same gate]
    Rule(("sigmoid", ("getitem", X, {"index": Attr("ix")})),
         ("getitem", ("lstm_gates", X), {"index": Attr("ix")}), _lstm_gate((0, 1, 3))),
    # tanh(x[..., gate g]) -> lstm_gates(x)[..., gate g]
    Rule(("tanh", ("getitem", X, {"index": Attr("ix")})),
         ("getitem", ("lstm_gates", X), {"index": Attr("ix")}), _lstm_gate((2,))),
)

SIMPLIFY_RULES: tuple[Rule, ...] = (STABILIZING_RULES + ALGEBRAIC_RULES + CONTRACTION_RULES
                                    + FUSION_RULES)
