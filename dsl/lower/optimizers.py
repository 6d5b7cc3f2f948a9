"""Optimizers: `optimizer adam(lr = 1e-3) minimize loss over params(D)` is checked where it
stands (`prepare`: its rule, options, objective and parameters) and lowered in train mode after
every statement (`lower`): the gradients of the objective, the generic options (weight decay,
clipping) and the rule's body once per parameter, whose assignments become the updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsl import ast as A
from dsl.errors import DslError, NameErr, TypeErr, did_you_mean
from dsl.lower import calls, expressions, statements
from dsl.lower.context import Context
from dsl.lower.result import OptUse
from dsl.lower.rule_template import Template, record, stated
from dsl.lower.scope import Scope
from dsl.lower.values import Selection, describe, select
from runtime.autodiff import GradError, gradients
from runtime.ops import Val

GENERIC_OPT_OPTIONS = {"weight_decay": 0.0, "clip_norm": 0.0, "clip_value": 0.0,
                       "decay_biases": False}


def prepare(cx: Context, s: A.OptimizerUse) -> OptUse:
    """Check an optimizer use and evaluate its options and its selection of parameters."""
    rule = s.rule.func
    d = cx.defs.optimizers.get(rule)
    if d is None:
        raise cx.err(NameErr, f"unknown optimizer '{rule}'"
                     + did_you_mean(rule, cx.defs.optimizers), s.rule.span)
    options: dict[str, Any] = {}
    generic: dict[str, Any] = dict(GENERIC_OPT_OPTIONS)
    if s.rule.args:
        raise cx.err(TypeErr, f"optimizer '{rule}' takes keyword options only "
                     "(lr = ...)", s.rule.span)
    params = {p.name: p for p in d.params}
    for k in s.rule.kwargs:
        v = expressions.ev(cx, k.value, cx.globals)
        if k.name in params:
            calls.check_kind_of_default(cx, params[k.name], v, k.span, f"optimizer '{rule}'")
            options[k.name] = v
        elif k.name in generic:
            if isinstance(v, Val):
                raise cx.err(TypeErr, f"'{k.name}' must be a constant", k.span)
            generic[k.name] = v
        else:
            valid = [p.name for p in d.params] + list(generic)
            raise cx.err(NameErr, f"optimizer '{rule}' has no option '{k.name}'"
                         + did_you_mean(k.name, valid)
                         + f"; its options are: {', '.join(valid)}", k.span)
    for p in d.params:
        if p.name not in options:
            if p.default is None:
                raise cx.err(TypeErr, f"optimizer '{rule}' needs '{p.name}'", s.span)
            options[p.name] = expressions.ev(cx, p.default, cx.globals)
    objectives = cx.made.objectives
    if s.objective not in objectives:
        raise cx.err(NameErr, f"unknown objective '{s.objective}'"
                     + did_you_mean(s.objective, objectives), s.span)
    if s.over is not None:
        sel = expressions.ev(cx, s.over, cx.globals)
        if isinstance(sel, Val) and sel.node.op == "param":
            sel = Selection((sel.node.name,))
        if not isinstance(sel, Selection):
            raise cx.err(TypeErr, f"'over' needs a parameter selection, got "
                         f"{describe(sel)}", s.over.span)
    else:
        sel = select(cx, "params", None)
    for other in cx.made.opt_uses:
        both = set(other.names) & set(sel.names)
        if both:
            raise cx.err(NameErr, f"parameter '{sorted(both)[0]}' is trained by two "
                         "optimizers; give each an 'over' selection", s.span)
    if not sel.names:
        raise cx.err(NameErr, f"optimizer '{rule}' has no parameters to train", s.span)
    return OptUse(s, rule, options, generic, s.objective, sel.names)


def lower(cx: Context, use: OptUse) -> None:
    """Emit the gradients and the update rule of `use`, filling `use.grads` and
    `use.updates` (a rule's updates belong to its optimizer, not to `state_updates`)."""
    d = cx.defs.optimizers[use.rule]
    cx.span = use.stmt.span
    obj = cx.made.objectives[use.objective]
    pids = [cx.made.var_node[n] for n in use.names]
    with cx.b.context(role="grad", loc=cx.loc(use.stmt.span)):
        try:
            grads = gradients(cx.b, obj, pids)
        except GradError as ex:
            raise cx.err(TypeErr, str(ex), use.stmt.span) from None
    pairs = [(n, p, g) for n, p, g in zip(use.names, pids, grads) if g is not None]
    if not pairs:
        raise cx.err(TypeErr, f"objective '{use.objective}' does not depend on any "
                     "parameter the optimizer trains", use.stmt.span)
    replay = Replay(stated(d.body), {})
    with cx.b.context(role="update", loc=cx.loc(use.stmt.span)):
        gvals = _generic(cx, use, pairs)
        for (n, p, _), g in zip(pairs, gvals):
            _rule(cx, use, d, n, Val(cx.b, p), g, Val(cx.b, obj), replay)


def _generic(cx: Context, use: OptUse, pairs: list[tuple[str, int, Val]]) -> list[Val]:
    """The gradients after the generic options, in PyTorch's order: clip_value, then
    clip_norm over all of them (as `clip_grad_value_` and `clip_grad_norm_` between backward
    and step), then weight decay (of weights, and of biases with decay_biases, as the
    optimizers' own weight_decay). The train block's clip_norm and clip_value apply to an
    optimizer that does not set its own."""
    gen = dict(use.generic)
    own = {k.name for k in use.stmt.rule.kwargs}
    for k in ("clip_norm", "clip_value"):
        v = cx.made.train_settings.get(k)
        if k not in own and isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
            gen[k] = v  # other values are the compiler's to report (at the setting)
    b = cx.b
    gvals = []
    for n, _, g in pairs:
        use.grads[n] = g.id
        if g.node.role == "grad" and g.node.name is None:  # not a shared forward node
            cx.graph.replace_node(g.id, name=f"{n}.grad")
        gvals.append(g)
    if gen["clip_value"]:
        c = float(gen["clip_value"])
        gvals = [b.emit("maximum", b.emit("minimum", g, b.lift(c, g)), b.lift(-c, g))
                 for g in gvals]
    if gen["clip_norm"]:
        total = None
        for g in gvals:
            sq = b.emit("sum", g * g)
            total = sq if total is None else total + sq
        norm = b.emit("sqrt", total)
        scale = b.emit("minimum", b.lift(1.0, norm), float(gen["clip_norm"]) / (norm + 1e-6))
        gvals = [g * scale for g in gvals]
    decay = float(gen["weight_decay"])
    if decay:
        gvals = [g + Val(b, p) * decay if cx.made.variables[n].kind == "weight"
                 or gen["decay_biases"] else g for (n, p, _), g in zip(pairs, gvals)]
    return gvals


@dataclass
class Replay:
    """A rule's body split for replay (`rule_template.stated`; None: lowered from its
    statements for every parameter) and its templates by parameter, gradient and state
    types (None: that type is lowered from the statements)."""

    parts: tuple[tuple[A.StateDecl, ...], tuple[A.Stmt, ...]] | None
    templates: dict[tuple, Template | None]


def _rule(cx: Context, use: OptUse, d: A.OptimizerDef, n: str, param: Val, grad: Val,
          obj: Val, replay: Replay) -> None:
    """The rule's body for parameter `n`: its state is named `opt.<n>.<state>`. A parameter
    whose type a parameter before it had replays that one's recorded nodes
    (`dsl.lower.rule_template`)."""
    prefix = f"opt.{n}."
    scope = Scope(cx.globals, prefix, {})
    scope.vars.update(use.options)
    scope.vars["param"] = param
    scope.vars["grad"] = grad
    scope.vars["obj"] = obj
    scope.param = cx.made.variables[n]
    scope.state_vars["param"] = n
    dt = param.type.dtype
    parts = replay.parts
    templates = replay.templates
    if param.type.is_float and dt != cx.float_dtype:  # `param w: f64[3]` in an f32 program:
        parts = None  # (not replayed: the casts below come first)
        for c in ("step", "epoch"):  # its rule computes in f64, bias corrections included
            if _mentions(d.body, c):
                scope.vars[c] = cx.b.emit("cast", expressions.counter(cx, c), dtype=dt)
    before = dict(cx.made.state_updates)
    try:
        if parts is None:
            statements.exec_body(cx, d.body, scope)
        else:
            states, rest = parts
            statements.exec_body(cx, states, scope)
            inputs = {"param": param.id, "grad": grad.id}
            inputs.update({f"state:{s.name}": cx.made.var_node[prefix + s.name]
                           for s in states})
            key = (param.type, grad.type, *[cx.graph.nodes[inputs[f"state:{s.name}"]].type
                                             for s in states])
            template = templates.get(key)
            if template is not None:
                for k, nid in template.replay(cx.graph, cx.b, inputs).items():
                    cx.made.state_updates[n if k == "param" else prefix + k[6:]] = nid
            else:
                start, n_vars = cx.graph.next_id, len(cx.made.variables)
                statements.exec_body(cx, rest, scope)
                if key not in templates:
                    made = {v: nid for v, nid in cx.made.state_updates.items()
                            if before.get(v) != nid}
                    templates[key] = record(cx.graph, n, prefix, start, inputs, made, n_vars,
                                            len(cx.made.variables))
    except statements.Return:
        raise cx.err(TypeErr, "an optimizer body does not return", d.span) from None
    except DslError as ex:  # a mistake inside a prelude optimizer: at the spec's use of it
        raise calls.at_call_site(ex, use.rule, use.stmt.span) from None
    for var, nid in cx.made.state_updates.items():
        if before.get(var) != nid:
            use.updates[var] = nid
    cx.made.state_updates = before  # a rule's updates belong to its optimizer only
    if n not in use.updates:
        raise cx.err(
            TypeErr, f"optimizer '{use.rule}' never assigns 'param', so it would "
            "train nothing: its rule must end with 'param = param - ...'", d.span,
            notes=(f"used at {use.stmt.span.file}:{use.stmt.span.line}:"
                   f"{use.stmt.span.col}",))


def _mentions(node: Any, name: str) -> bool:
    """The AST `node` (a statement, an expression, or a tuple of them) reads `name`."""
    return A.contains(node, lambda n: isinstance(n, A.Name) and n.id == name)
