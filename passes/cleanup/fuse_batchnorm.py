"""BatchNormalization folded into the preceding Conv, ConvTranspose or Gemm."""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.rules.common import (
    fuse_batchnorm_into_conv_rule,
    fuse_batchnorm_into_conv_transpose_rule,
    fuse_batchnorm_into_gemm_rule,
)

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.passes._rewrite import apply_rules


class FuseBatchNorm(Pass):
    """Fold inference-mode BatchNormalization into the weights and bias of the Conv/ConvTranspose/Gemm before it.

    Before: ``Conv(x, W, B) -> BatchNormalization(scale, bias, mean, var)``.
    After: ``Conv(x, W * s, (B - mean) * s + bias)`` with ``s = scale / sqrt(var + eps)``.
    Applies when W, B and the BN statistics are constants and the Conv output has no other reader.
    """

    name = "fuse-batchnorm"

    def call(self, model: ir.Model) -> PassResult:
        result = apply_rules(
            model,
            (fuse_batchnorm_into_conv_rule, fuse_batchnorm_into_conv_transpose_rule, fuse_batchnorm_into_gemm_rule),
        )
        result.stats = {"batchnorms_fused": result.stats["rewrites"], "nodes_removed": result.stats["nodes_removed"]}
        return result
