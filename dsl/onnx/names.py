"""The dslrun ops that are one ONNX op each way, by kind: the export table (`ops.py`) and the
import table (`import_ops.py`) both make their rows for these pairs from here, each with its
own row maker per kind, so adding a pair is one line. Ops written with several ONNX ops, or
read from one that has no dslrun twin (Softplus, Xor, Sum, ...), stay in their own table.
"""

from __future__ import annotations

# kind -> {dslrun op: ONNX op type}; the kind picks the row maker on each side
ONE_TO_ONE: dict[str, dict[str, str]] = {
    "arithmetic": {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow",
                   "maximum": "Max", "minimum": "Min", "matmul": "MatMul"},
    "unary": {"neg": "Neg", "abs": "Abs", "sign": "Sign", "exp": "Exp", "log": "Log",
              "sqrt": "Sqrt", "sin": "Sin", "cos": "Cos", "tanh": "Tanh", "erf": "Erf",
              "sigmoid": "Sigmoid", "relu": "Relu"},
    "comparison": {"greater": "Greater", "less": "Less", "greater_equal": "GreaterOrEqual",
                   "less_equal": "LessOrEqual", "equal": "Equal"},
    "logical": {"logical_and": "And", "logical_or": "Or", "logical_not": "Not"},
    "reduction": {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax",
                  "min": "ReduceMin", "logsumexp": "ReduceLogSumExp"},
    "softmax": {"softmax": "Softmax", "log_softmax": "LogSoftmax"},
    "pool": {"max_pool2d": "MaxPool", "avg_pool2d": "AveragePool"},
}

