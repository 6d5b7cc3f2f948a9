"""dslrun runtime: the language-agnostic graph engine.

IR, ops, autodiff, passes, plan, backends and training; it never imports `dsl`.
"""
