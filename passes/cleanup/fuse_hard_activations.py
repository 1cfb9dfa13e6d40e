"""Decomposed hard-sigmoid / hard-swish (``relu6(x + 3) / 6``) folded into single ops."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult
from onnxscript.rewriter._rewrite_rule import RewriteRuleClassBase

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.passes._rewrite import apply_rules
from onnxslim.passes.cleanup.infer_shapes import inferred_shapes
from onnxslim.passes._constants import fixed_tensor

_HARDSWISH_OPSET = 14
_FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16}
"""What ONNX Runtime's CPU provider has HardSigmoid/HardSwish kernels for (not double: a fused
float64 model did not load and the pass was rolled back)."""


def _scalar(value: ir.Value | None) -> float | None:
    tensor = fixed_tensor(value) if value is not None else None
    if tensor is None or tensor.size != 1:
        return None
    return float(tensor.numpy().ravel()[0])


def _clip_bounds(clip: ir.Node) -> tuple[float | None, float | None]:
    if "min" in clip.attributes or "max" in clip.attributes:  # opset < 11
        return clip.attributes.get_float("min", None), clip.attributes.get_float("max", None)
    inputs = list(clip.inputs) + [None, None]
    return _scalar(inputs[1]), _scalar(inputs[2])


class _HardBase(RewriteRuleClassBase):
    use_hardswish = False

    def check_relu6_plus_3(self, x: ir.Value, shifted: ir.Value, clipped: ir.Value, result: MatchResult) -> MatchResult:
        add, clip = shifted.producer(), clipped.producer()
        three = next((v for v in add.inputs if v is not x), None)
        if _scalar(three) != 3.0 or _clip_bounds(clip) != (0.0, 6.0):
            return result.fail("not relu6(x + 3)")
        if x.dtype not in _FLOAT_TYPES or x.shape is None:
            return result.fail("x must be a float tensor of known rank")
        for const in (three, *clip.inputs[1:]):
            if const is not None and const.shape is not None and len(const.shape) > len(x.shape):
                return result.fail("a constant would broadcast x to a higher rank")
        return result

    def hard_sigmoid(self, op, x):
        return op.HardSigmoid(x, alpha=1.0 / 6.0, beta=0.5)

    def hard_swish(self, op, x):
        return op.HardSwish(x) if self.use_hardswish else op.Mul(x, self.hard_sigmoid(op, x))


class _HardSigmoid(_HardBase):
    """Div(Clip(Add(x, 3), 0, 6), 6); with ``scale_op = "Mul"``, the product by 1/6."""

    scale_op, scale = "Div", 6.0

    def pattern(self, op, x, three, k):
        return getattr(op, self.scale_op)(self.relu6_plus_3(op, x, three), k)

    def relu6_plus_3(self, op, x, three):
        shifted = op.Add(x, three, _outputs=["shifted"])
        return op.Clip(shifted, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["clipped"])

    def check(self, context, x, shifted, clipped, k, **_) -> MatchResult:
        scale = _scalar(k)
        if scale is None or np.float32(scale) != np.float32(self.scale):
            return MatchResult().fail(f"not {self.scale_op} by {self.scale:g}")
        return self.check_relu6_plus_3(x, shifted, clipped, MatchResult())

    def rewrite(self, op, x, **_):
        return self.hard_sigmoid(op, x)


class _HardSwishDivLast(_HardSigmoid):
    """Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6): Paddle's hardswish (or the product by 1/6)."""

    def pattern(self, op, x, three, k):
        return getattr(op, self.scale_op)(op.Mul(x, self.relu6_plus_3(op, x, three)), k)

    def rewrite(self, op, x, **_):
        return self.hard_swish(op, x)


_TIMES_SIXTH = {"scale_op": "Mul", "scale": 1 / 6}
_HardSigmoidTimesSixth = type("_HardSigmoidTimesSixth", (_HardSigmoid,), _TIMES_SIXTH)
_HardSwishTimesSixth = type("_HardSwishTimesSixth", (_HardSwishDivLast,), _TIMES_SIXTH)


class _HardSwishFromSigmoid(_HardBase):
    """Mul(x, HardSigmoid(x, 1/6, 0.5)) where HardSwish exists."""

    def pattern(self, op, x):
        return op.Mul(x, op.HardSigmoid(x, _allow_other_attributes=True, _outputs=["gate"]))

    def check(self, context, x, gate, **_) -> MatchResult:
        result = MatchResult()
        node = gate.producer()
        alpha, beta = node.attributes.get_float("alpha", 0.2), node.attributes.get_float("beta", 0.5)
        if not self.use_hardswish or not np.isclose(alpha, 1 / 6) or beta != 0.5:
            return result.fail("no HardSwish in this opset, or another hard sigmoid")
        return result

    def rewrite(self, op, x, **_):
        return op.HardSwish(x)


class FuseHardActivations(Pass):
    """Fold ``relu6(x + 3) / 6`` into HardSigmoid and ``x * relu6(x + 3) / 6`` into HardSwish.

    Before: ``Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)`` (Paddle, MobileNetV3-style exports).
    After: ``HardSwish(x)`` from opset 14, ``Mul(x, HardSigmoid(x, alpha=1/6, beta=0.5))`` before.
    Applies when the constants are exactly 3, 0, 6 and 6 (or a product by float32(1/6)) and
    broadcast no higher than x.
    """

    name = "fuse-hard-activations"

    def call(self, model: ir.Model) -> PassResult:
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        attrs = {"use_hardswish": opset >= _HARDSWISH_OPSET}
        rules = [type(cls.__name__, (cls,), attrs).rule()
                 for cls in (_HardSwishDivLast, _HardSwishTimesSixth, _HardSigmoid, _HardSigmoidTimesSixth, _HardSwishFromSigmoid)]
        with inferred_shapes(model):  # the rules check x's rank and dtype
            result = apply_rules(model, rules, commute=True)
        result.stats = {"fused": result.stats["rewrites"], "nodes_removed": result.stats["nodes_removed"]}
        return result
