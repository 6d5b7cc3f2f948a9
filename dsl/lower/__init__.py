"""Lowering: a spec's AST becomes graphs, variables and settings, the `Lowered` record the
compiler assembles a `runtime.program.Program` from.

An interpreter walks the statements. Compile-time values (numbers, strings, lists, NumPy
constants, shapes) are computed directly; tensor expressions emit nodes through a
`runtime.ops.Builder`. `def` call sites own their weights (`dense1`, `dense2` per body, in
source order), a `net` shares one set of weights across all its calls, `repeat` gives each
repetition its own scope. Names are hierarchical (`classifier.dense1.W`) and are the same in
errors, graph text, checkpoints and selections.

    program       the entry point `lower`: definitions, the top level, the train-only parts
    result        `Lowered` (what the compiler reads), `Made` (what the walk fills), `OptUse`
    context       `Context`: the state the modules share (graph, definitions, overrides, ...)
    scope         `Scope` (bindings, weight prefixes) and `CallSites` (dense1, dense2, ...)
    statements    the statement walker: assignments, for/repeat/if, the unroll budget
    expressions   the expression walker: names, attributes, data fields, index items
    values        coercion, constants, promotion, arithmetic, comparison, indexing, selections
    declarations  inputs, consts, results, params, state, types and initial values
    calls         defs and nets at their call sites, argument binding, primitive ops
    optimizers    `optimizer ... minimize ...`: gradients, generic options, update rules
    settings      the `train { }` block
    builtins      the BUILTINS table and the compile-time builtins
    tensor_builtins  the builtins that make tensors
"""

from dsl.lower.builtins import BUILTINS
from dsl.lower.optimizers import GENERIC_OPT_OPTIONS
from dsl.lower.program import lower
from dsl.lower.result import Lowered, OptUse, Seed
from dsl.lower.settings import TRAIN_SETTINGS

__all__ = ["BUILTINS", "GENERIC_OPT_OPTIONS", "TRAIN_SETTINGS", "Lowered", "OptUse", "Seed",
           "lower"]
