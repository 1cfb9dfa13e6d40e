"""Tensors that are an elementwise function of one ranged tensor through a chain of ops.

PP-LCNet (PP-OCRv4 det and rec) follows every ``Conv -> HardSwish`` with a learnable affine
block, ``HardSwish(v) * a + b`` with scalar ``a`` and ``b``, whose output feeds the next Conv and
so is ranged. Exported from Paddle the HardSwish is itself spelled ``Mul(Mul(v, c), HardSigmoid(v))``.
Every such output is a fixed function of the Conv output ``v`` that calibration already fetches:
29 of rec's 78 fetched tensors (20 of 43 MB per sample) are these chains. ``trace`` composes the
chain into one numpy function of ``v``; its min/max come from sampling ``[min v, max v]`` densely
(the chain may have interior extrema, as hard swish does) and its histogram from ``v``'s bins moved
through it (``derived.derive``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_ir as ir

from onnxslim.passes.quantization.ranges import hard_swish, sigmoid

Function = Callable[[np.ndarray], np.ndarray]

MAX_OPS = 8
"""Longest chain followed back from a ranged tensor (the Paddle spelling above is 5 ops)."""

GRID = 4097
"""Points sampled between a source's min and max for the chain's extrema: endpoints are exact, and
an interior extremum (where the slope is zero) is missed by O(step^2), about 1e-6 of the span."""


class Chain:
    """``function`` of the source tensor, with its extrema over an interval."""

    __name__ = "chain"

    def __init__(self, function: Function, ops: tuple[str, ...]):
        self.function, self.ops = function, ops

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.function(np.asarray(x, dtype=np.float64))

    def extrema(self, low: float, high: float) -> tuple[float, float]:
        values = self(np.linspace(low, high, GRID))
        return float(values.min()), float(values.max())

    def __repr__(self) -> str:
        return f"Chain({' -> '.join(self.ops)})"


def trace(value: ir.Value, names: set[str]) -> tuple[str, Chain] | None:
    """``(source, chain)`` when ``value`` is an elementwise function of the one ranged tensor
    ``source`` (in ``names``, not ``value`` itself) through at least one op; else None."""
    producer = value.producer()
    if producer is None:
        return None
    found = _trace_node(producer, value, names, MAX_OPS)
    if found is None:
        return None
    source, function, ops = found
    return source, Chain(function, ops)


def _trace(value: ir.Value | None, names: set[str], budget: int):
    if value is None:
        return None
    if value.name in names:
        return value.name, (lambda x: x), ()
    producer = value.producer()
    if producer is None or budget <= 0:
        return None
    return _trace_node(producer, value, names, budget)


def _trace_node(node: ir.Node, value: ir.Value, names: set[str], budget: int):
    if len(node.outputs) != 1 or node.outputs[0] is not value or not node.inputs:
        return None
    unary = _unary(node)
    if unary is not None:
        inner = _trace(node.inputs[0], names, budget - 1)
        if inner is None:
            return None
        source, function, ops = inner
        return source, (lambda x: unary(function(x))), (*ops, node.op_type)
    if node.op_type in _ARITHMETIC and len(node.inputs) == 2:
        return _trace_arithmetic(node, names, budget)
    return None


_UNARY: dict[str, Function] = {"Relu": lambda x: np.maximum(x, 0), "Identity": lambda x: x, "Neg": np.negative,
                               "Tanh": np.tanh, "Sigmoid": sigmoid, "HardSwish": hard_swish}
_ARITHMETIC = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


def _trace_arithmetic(node: ir.Node, names: set[str], budget: int):
    operator = _ARITHMETIC[node.op_type]
    left, right = node.inputs
    constants = [scalar_constant(left), scalar_constant(right)]
    if constants[0] is not None and constants[1] is not None:
        return None
    if constants[1] is not None:  # f(v) op c
        if node.op_type == "Div" and constants[1] == 0:
            return None
        inner = _trace(left, names, budget - 1)
        if inner is None:
            return None
        c = constants[1]
        return inner[0], (lambda x, f=inner[1]: operator(f(x), c)), (*inner[2], node.op_type)
    if constants[0] is not None:  # c op f(v); c / f(v) may divide by zero
        if node.op_type == "Div":
            return None
        inner = _trace(right, names, budget - 1)
        if inner is None:
            return None
        c = constants[0]
        return inner[0], (lambda x, f=inner[1]: operator(c, f(x))), (*inner[2], node.op_type)
    if node.op_type == "Div":
        return None
    # f(v) op g(v), same v, same shape (HardSwish as v * HardSigmoid(v), SiLU): elementwise in v
    a, b = _trace(left, names, budget - 1), _trace(right, names, budget - 1)
    if a is None or b is None or a[0] != b[0]:
        return None
    return a[0], (lambda x, f=a[1], g=b[1]: operator(f(x), g(x))), (*a[2], *b[2], node.op_type)


def _unary(node: ir.Node) -> Function | None:
    op, attributes = node.op_type, node.attributes
    if op in _UNARY:
        return _UNARY[op]
    if op == "HardSigmoid":
        alpha, beta = attributes.get_float("alpha", 0.2), attributes.get_float("beta", 0.5)
        return lambda x: np.clip(alpha * x + beta, 0, 1)
    if op == "LeakyRelu":
        alpha = attributes.get_float("alpha", 0.01)
        return lambda x: np.where(x >= 0, x, alpha * x)
    if op == "Clip":
        if len(node.inputs) > 1:  # opset 11+: optional bounds as inputs, which must be constants here
            bounds = [None if v is None else scalar_constant(v) for v in node.inputs[1:3]]
            if any(v is not None and b is None for v, b in zip(node.inputs[1:3], bounds)):
                return None
            bounds += [None] * (2 - len(bounds))
        else:
            bounds = [attributes.get_float("min", None), attributes.get_float("max", None)]
        low, high = (-np.inf if bounds[0] is None else bounds[0]), (np.inf if bounds[1] is None else bounds[1])
        return lambda x: np.clip(x, low, high)
    return None


def scalar_constant(value: ir.Value | None) -> float | None:
    """The value of a one-element float constant (initializer or Constant node), else None."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None or tensor.size != 1 or not tensor.dtype.is_floating_point():
        return None
    return float(tensor.numpy().reshape(()))
