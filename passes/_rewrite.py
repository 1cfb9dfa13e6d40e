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
        drop_provenance(model)
    return PassResult(
        model,
        modified=bool(rewrites),
        stats={"rewrites": rewrites, "nodes_removed": nodes_before - count_nodes(model)},
    )


PROVENANCE_PREFIX = "pkg.onnxscript."


def drop_provenance(model: ir.Model) -> None:
    """Removes the metadata onnxscript's rewriter and folder attach to what they made
    (``pkg.onnxscript.rewriter.rule_name``, ``pkg.onnxscript.optimizer.folded_from``): PP-OCRv4 rec
    came out with 90 such entries, bytes in every saved model that no runtime reads."""
    graphs = [model.graph, *(n.attributes[a].as_graph() for n in ir.traversal.RecursiveGraphIterator(model.graph)
                             for a in n.attributes if n.attributes[a].type == ir.AttributeType.GRAPH)]
    for graph in graphs:
        holders = [*graph.inputs, *graph.outputs, *graph.initializers.values()]
        for node in graph:
            holders += [node, *node.outputs]
        for holder in holders:
            for key in [k for k in holder.metadata_props if k.startswith(PROVENANCE_PREFIX)]:
                del holder.metadata_props[key]
