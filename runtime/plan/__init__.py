"""Execution plans: a graph compiled once into a flat list of kernels and run step after step.

    step         `Plan` (dims bound, nodes ordered, kernels bound to slots; compute and commit),
                 `PlanContext` (what an op's compile hook gets), `RegionPlan` (a loop's body)
    buffers      the buffer-reusing step on NumPy: out= kernels, buffer lifetimes and pool,
                 updates written in place (and the same for loop bodies)
    out_kernels  NumPy's kernel table: each op's out= form (checked bit-identical with the plain
                 kernel) or the reason it runs plain (`runtime.backends.KernelTable`)
    assign       memory planning as a pure function: graph and kernel table to an assignment
                 of buffers (`dslrun graph --stage planned`)
    scan         the driver of loops with a fixed trip count (one generated function each)
    memory       glibc malloc keeps freed memory for the next step
    codegen      a list of steps as one generated Python function
"""

from runtime.plan.step import NonFiniteError, Plan, PlanContext, RegionPlan

__all__ = ["NonFiniteError", "Plan", "PlanContext", "RegionPlan"]
