"""Bindings and names: a `Scope` holds one body's locals, the weight prefix of its
declarations (`classifier.dense1.`) and its state names; `CallSites` names the call sites of
each `def` in a body in source order (`dense1`, `dense2`), the prefixes of their weights.
"""

from __future__ import annotations

from typing import Any

from dsl import ast as A
from runtime.program import Variable


class Scope:
    """Bindings of one body: locals, the weight prefix, call-site names and state names."""

    def __init__(self, parent: Scope | None, prefix: str, sites: dict[int, str]) -> None:
        self.vars: dict[str, Any] = {}
        self.parent = parent
        self.prefix = prefix
        self.sites = sites
        self.state_vars: dict[str, str] = {}
        self.param: Variable | None = None  # in an optimizer rule: the parameter it updates

    def owner(self, name: str) -> Scope | None:
        """The innermost scope (this one or an enclosing one) that binds `name`."""
        s: Scope | None = self
        while s is not None and name not in s.vars:
            s = s.parent
        return s

    def lookup(self, name: str) -> tuple[bool, Any]:
        """(True, value) when `name` is bound here or in an enclosing scope, else (False, None)."""
        s = self.owner(name)
        return (True, s.vars[name]) if s is not None else (False, None)

    def rebind(self, name: str, value: Any) -> None:
        """Assign to the binding of `name` where it lives, or bind it here."""
        (self.owner(name) or self).vars[name] = value

    def names(self) -> set[str]:
        """Every name bound here or in an enclosing scope (for did-you-mean)."""
        out: set[str] = set()
        s: Scope | None = self
        while s is not None:
            out |= set(s.vars)
            s = s.parent
        return out

    def state_of(self, name: str) -> str | None:
        """The variable that local `name` stands for, when it is a state (or `param`)."""
        s = self.owner(name)
        return s.state_vars.get(name) if s is not None else None

    def optimizer_param(self) -> Variable | None:
        """Inside an optimizer rule: the parameter it updates (`zeros_like(param)`)."""
        s: Scope | None = self
        while s is not None and s.param is None:
            s = s.parent
        return s.param if s is not None else None


class CallSites:
    """Names the call sites of `def`s (not nets) in a body, cached per body."""

    def __init__(self, nets: dict[str, A.NetDef]) -> None:
        self.nets = nets
        self._cache: dict[int, dict[int, str]] = {}

    def of(self, body: tuple[A.Stmt, ...]) -> dict[int, str]:
        """id(call) -> its name, for every call of a `def` in `body` in source order:
        dense1, dense2, ... The ranges of a `repeat` are counted; its body is its own."""
        key = id(body)
        if key in self._cache:
            return self._cache[key]
        counts: dict[str, int] = {}
        out: dict[int, str] = {}

        def visit(node: Any) -> None:
            if isinstance(node, A.Repeat):
                visit(node.start)
                visit(node.stop)
                return
            if isinstance(node, A.Call):
                d = self.nets.get(node.func)
                if d is not None and d.kind == "def":
                    counts[node.func] = counts.get(node.func, 0) + 1
                    out[id(node)] = f"{node.func}{counts[node.func]}"
            if isinstance(node, tuple):
                for x in node:
                    visit(x)
            elif isinstance(node, A.Node) and not isinstance(node, A.Span):
                for f in node._fields:
                    if f != "span":
                        visit(getattr(node, f))

        for s in body:
            visit(s)
        self._cache[key] = out
        return out
