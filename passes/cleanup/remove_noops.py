"""Removal of operations that do nothing at inference time."""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter.rules.common import (
    add_0_rule,
    cast_cast_rule,
    div_by_1_rule,
    dropout_inference_rule,
    dropout_zero_rule,
    mul_by_1_rule,
    no_op_cast_rule,
    no_op_expand_rule,
    no_op_transpose_rule,
    reshape_reshape_rule,
    sub_0_rule,
    transpose_transpose_rule,
    unsqueeze_unsqueeze_rule,
)

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import graph_stats
from onnxslim.passes._rewrite import apply_rules

_RULES = (
    dropout_inference_rule,
    dropout_zero_rule,
    no_op_cast_rule,
    no_op_expand_rule,
    no_op_transpose_rule,
    add_0_rule,
    sub_0_rule,
    mul_by_1_rule,
    div_by_1_rule,
    cast_cast_rule,
    reshape_reshape_rule,
    transpose_transpose_rule,
    unsqueeze_unsqueeze_rule,
)


class RemoveNoops(Pass):
    """Remove Identity, inference-mode Dropout, Cast to the same type, x+0, x*1 and merge repeated Reshape/Transpose.

    Before: ``Conv -> Identity -> Dropout -> Relu``. After: ``Conv -> Relu``. An Identity that
    produces a graph output is kept (the output's name is part of the contract).
    """

    name = "remove-noops"

    def call(self, model: ir.Model) -> PassResult:
        before = graph_stats(model).nodes
        modified = ir.passes.common.IdentityEliminationPass()(model).modified
        result = apply_rules(model, _RULES)
        return PassResult(
            model,
            modified=modified or result.modified,
            stats={"nodes_removed": before - graph_stats(model).nodes},
        )
