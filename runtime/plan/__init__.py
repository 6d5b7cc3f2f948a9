"""Execution plans: a graph compiled once into a flat list of kernels and run step after step.

    step         `Plan` (dims bound, nodes ordered, kernels bound to slots; compute and commit),
                 `PlanContext` (what an op's compile hook gets), `RegionPlan` (a loop's body)
    buffers      the buffer-reusing step on NumPy: out= kernels, buffer lifetimes and pool,
                 updates written in place
    out_kernels  the out= forms of kernels, checked bit-identical with the plain ones
    codegen      a list of steps as one generated Python function
"""

from runtime.plan.step import NonFiniteError, Plan, PlanContext, RegionPlan

__all__ = ["NonFiniteError", "Plan", "PlanContext", "RegionPlan"]
