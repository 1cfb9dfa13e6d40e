"""Running onnxscript rewrite rules inside an onnxslim pass."""

from __future__ import annotations

from typing import Sequence

import onnx_ir as ir
from onnxscript.rewriter import pattern

from onnxslim.core.pass_base import PassResult
from onnxslim.core.stats import count_nodes


def apply_rules(model: ir.Model, rules: Sequence[pattern.RewriteRule], *, commute: bool = False) -> PassResult:
    """Applies ``rules`` until none matches; stats count rewrites and removed nodes."""
    nodes_before = count_nodes(model)
    rewrites = pattern.RewriteRuleSet(list(rules), commute=commute).apply_to_model(model)
    if rewrites:
        # Rules leave replaced initializers behind; drop what no node reads any more.
        ir.passes.common.RemoveUnusedNodesPass()(model)
    return PassResult(
        model,
        modified=bool(rewrites),
        stats={"rewrites": rewrites, "nodes_removed": nodes_before - count_nodes(model)},
    )
