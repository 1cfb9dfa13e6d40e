"""A per-channel bias Add or scale Mul after a convolution, folded into its weights."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult
from onnxscript.rewriter._rewrite_rule import RewriteRuleClassBase

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.passes._rewrite import apply_rules
from onnxslim.passes._constants import fixed_tensor

_FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16}


def _per_channel(value: ir.Value, channels: int, rank: int) -> np.ndarray | None:
    """The constant as a [channels] vector if it broadcasts along axis 1 only of a rank-``rank`` tensor."""
    tensor = fixed_tensor(value)
    if tensor is None:
        return None
    array = tensor.numpy()
    shape = list(array.shape)
    if array.size == 1 and len(shape) <= rank:
        return np.full(channels, array.ravel()[0], dtype=array.dtype)
    if len(shape) == rank and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != rank - 1 or shape[0] != channels or any(d != 1 for d in shape[1:]):
        return None
    return array.reshape(channels)


class _ConvThen(RewriteRuleClassBase):
    """Shared check: constant weights, a known output rank, the constant per output channel."""

    conv_type = "Conv"
    follower = "Add"

    def pattern(self, op, x, w, c):
        conv = getattr(op, self.conv_type)(x, w, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["conv_out"])
        return getattr(op, self.follower)(conv, c)

    def check(self, context, x, w, c, conv_out, **_) -> MatchResult:
        result = MatchResult()
        node = conv_out.producer()
        weight = fixed_tensor(w)
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if weight is None or (bias is not None and fixed_tensor(bias) is None):
            return result.fail("weights or bias are not constant")
        if weight.dtype not in _FLOAT_TYPES or c.dtype != weight.dtype:
            return result.fail("not a float convolution of the constant's dtype")
        self._channels = self.output_channels(weight.shape.numpy(), node)
        self._vector = _per_channel(c, self._channels, len(weight.shape))
        if self._vector is None:
            return result.fail("constant is not per output channel")
        return result

    @staticmethod
    def output_channels(shape, node) -> int:
        return int(shape[0])

    def fused(self, op, x, w, conv_out, new_w, new_b):
        node = conv_out.producer()
        name = w.name or "w"
        return getattr(op, self.conv_type)(x, op.initializer(ir.tensor(new_w), name=f"{name}_fused"),
                                           op.initializer(ir.tensor(new_b), name=f"{name}_fused_bias"), **node.attributes)

    def old_bias(self, conv_out, dtype) -> np.ndarray:
        node = conv_out.producer()
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            return fixed_tensor(node.inputs[2]).numpy()
        return np.zeros(self._channels, dtype=dtype)


class _ConvAdd(_ConvThen):
    def rewrite(self, op, x, w, c, conv_out, **_):
        weight = fixed_tensor(w).numpy()
        new_b = (self.old_bias(conv_out, weight.dtype) + self._vector).astype(weight.dtype)
        return self.fused(op, x, w, conv_out, weight, new_b)


class _ConvTransposeAdd(_ConvAdd):
    conv_type = "ConvTranspose"

    @staticmethod
    def output_channels(shape, node) -> int:
        return int(shape[1]) * node.attributes.get_int("group", 1)


class _ConvMul(_ConvThen):
    follower = "Mul"

    def rewrite(self, op, x, w, c, conv_out, **_):
        weight = fixed_tensor(w).numpy()
        scale = self._vector.reshape((-1,) + (1,) * (weight.ndim - 1))
        new_b = (self.old_bias(conv_out, weight.dtype) * self._vector).astype(weight.dtype)
        return self.fused(op, x, w, conv_out, (weight * scale).astype(weight.dtype), new_b)


class FuseConvAffine(Pass):
    """Fold a per-channel (or scalar) bias Add after Conv/ConvTranspose, or scale Mul after Conv, into the weights.

    Before: ``Add(Conv(x, W), b[1, C, 1, 1])`` (Paddle writes conv bias this way) or
    ``Mul(Conv(x, W, B), s)``. After: ``Conv(x, W, B + b)`` / ``Conv(x, W * s, B * s)``.
    Applies when W, B and the constant are constants of the same float type, the constant
    varies only along the channel axis, and the convolution's output has no other reader.
    """

    name = "fuse-conv-affine"

    def call(self, model: ir.Model) -> PassResult:
        result = apply_rules(model, (_ConvAdd.rule(), _ConvTransposeAdd.rule(), _ConvMul.rule()), commute=True)
        result.stats = {"fused": result.stats["rewrites"], "nodes_removed": result.stats["nodes_removed"]}
        return result
