"""Tensors read only by a hard swish: their range stops at its saturation point, and calibration
can read their maximum off the hard swish's output.

``y = c * x * clip(alpha * x + beta, 0, 1)`` (opset 14's ``HardSwish``: alpha 1/6, beta 0.5, c 1;
older and Paddle exports spell it ``Mul(x, HardSigmoid(x))``, with a ``Mul`` by a positive scalar
on the way) is 0 for every ``x <= -beta / alpha``. A quantization range for ``x`` that stops there
(``lower_bound``) gives the same outputs as one reaching down to ``min(x)``, on a finer grid:
PP-LCNet's Conv outputs reach -20 to -50 before their hard swish.

Calibration cost: ONNX Runtime fuses ``Conv -> HardSigmoid -> Mul`` into one kernel, and fetching
``x`` undoes that fusion for the whole run (PP-OCRv4 rec: 30 HardSigmoid and 30 Mul kernels over
unfused tensors, +40% over the float forward pass). ``y`` is still computed by the fused kernel, and
``max(x)`` is a function of ``max(y)`` (``input_maximum``), so the minmax method reads a
``GlobalMaxPool(y)`` instead (``probes.py``), which ORT runs on the fused kernel's blocked layout.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx_ir as ir

from onnxslim.passes.quantization.chains import scalar_constant

LEVELS = 256
"""8-bit grid points (``lower_bound``'s margin of one step)."""


@dataclasses.dataclass(frozen=True)
class HardSwishUse:
    output: ir.Value
    """``y``, the hard swish's output."""
    alpha: float = 1 / 6
    beta: float = 0.5
    scale: float = 1.0

    @property
    def saturation(self) -> float:
        """The ``x`` at and below which ``y`` is 0."""
        return -self.beta / self.alpha

    def lower_bound(self, high: float) -> float:
        """The lowest value a range up to ``high`` needs: one 8-bit grid step below the saturation
        point. Ending exactly at it, the zero point's rounding can leave the grid's lowest value
        just above it (-2.97 for [-3, 22]), and every clipped value then comes out as hard swish
        of that, -0.016, not 0."""
        return self.saturation - max(high - self.saturation, 0.0) / (LEVELS - 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.scale * x * np.clip(self.alpha * x + self.beta, 0, 1)

    def input_maximum(self, output_maximum: float) -> float:
        """``max(x)`` given ``max(y)``: ``y`` increases with ``x`` from its minimum (at
        ``-beta / (2 alpha)``) on, and every larger ``x`` gives a larger ``y``. A ``max(y)`` at or
        below 0 gives the largest ``x`` that can produce it: an upper bound of ``max(x)``."""
        u = output_maximum / self.scale
        if u >= (1 - self.beta) / self.alpha:
            return u
        return (-self.beta + math.sqrt(max(0.0, self.beta ** 2 + 4 * self.alpha * u))) / (2 * self.alpha)


def hard_swish_use(value: ir.Value) -> HardSwishUse | None:
    """The hard swish that is ``value``'s only reader, if it is one (see the module docstring)."""
    consumers = value.consumers()
    home = value.producer().graph if value.producer() is not None else value.graph
    if any(c.graph is not home for c in consumers):  # a reader inside an If/Loop branch: its output is not here
        return None
    if len(consumers) == 1 and consumers[0].op_type == "HardSwish" and consumers[0].domain in ("", "ai.onnx"):
        return HardSwishUse(consumers[0].outputs[0])
    gates = [c for c in consumers if c.op_type == "HardSigmoid"]
    if len(consumers) != 2 or len(gates) != 1 or gates[0].inputs[0] is not value:
        return None
    gate, (other,) = gates[0], [c for c in consumers if c is not gates[0]]
    alpha, beta = gate.attributes.get_float("alpha", 0.2), gate.attributes.get_float("beta", 0.5)
    gated = gate.outputs[0].consumers()
    if alpha <= 0 or other.op_type != "Mul" or len(gated) != 1 or gated[0].op_type != "Mul":
        return None
    product, scale = gated[0], 1.0
    if product is not other:  # c * x first, then times the gate
        scale = _positive_scalar(other, value)
        if (scale is None or set(product.inputs) != {other.outputs[0], gate.outputs[0]}
                or len(other.outputs[0].consumers()) != 1):  # c * x read elsewhere sees the clipped values
            return None
    elif set(product.inputs) != {value, gate.outputs[0]}:
        return None
    return HardSwishUse(product.outputs[0], alpha, beta, scale)


def _positive_scalar(node: ir.Node, value: ir.Value) -> float | None:
    """``c`` when ``node`` is ``Mul(value, c)`` with a positive scalar constant ``c``."""
    others = [v for v in node.inputs if v is not value]
    if len(node.inputs) != 2 or len(others) != 1:
        return None
    c = scalar_constant(others[0])
    return c if c is not None and c > 0 else None
