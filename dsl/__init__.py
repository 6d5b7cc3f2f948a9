"""dslrun's language: parser, AST, errors, lowering, prelude, the Python API and the CLI.

    import dsl
    model = dsl.load("mlp_digits")      # or dsl.compile(spec_text)
    model.fit(epochs=5)
    print(model.evaluate())
"""

from dsl.api import Model, compile, load
from dsl.errors import DslError

__all__ = ["DslError", "Model", "compile", "load"]
