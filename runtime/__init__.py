"""dslrun runtime: the language-agnostic graph engine (IR, ops, autodiff, passes, plan, backends, training)."""
