"""Dead code removal: nodes, initializers, functions and opset imports nobody reads."""

from __future__ import annotations

import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import graph_stats


class RemoveUnused(Pass):
    """Drop nodes and initializers that no graph output depends on, duplicate initializers, unused functions and opsets.

    Before: an initializer read by nothing, or a branch whose result is never used.
    After: neither. Graph inputs are kept even when unused (they are part of the contract).
    """

    name = "remove-unused"

    def call(self, model: ir.Model) -> PassResult:
        before = graph_stats(model)
        modified = False
        for step in (
            ir.passes.common.DeduplicateInitializersPass(),
            ir.passes.common.RemoveUnusedNodesPass(),
            ir.passes.common.RemoveUnusedFunctionsPass(),
            ir.passes.common.RemoveUnusedOpsetsPass(),
        ):
            modified |= step(model).modified
        modified |= _drop_unread_branch_initializers(model)
        after = graph_stats(model)
        return PassResult(
            model,
            modified=modified,
            stats={"nodes_removed": before.nodes - after.nodes, "bytes_saved": before.param_bytes - after.param_bytes},
        )


def _drop_unread_branch_initializers(model: ir.Model) -> bool:
    """Initializers of If/Loop bodies that nothing reads (onnx-ir's pass leaves those): silero VAD
    kept both LSTM biases of each branch after folding them into one B."""
    modified = False
    for graph in model.graphs():
        if graph is model.graph:
            continue
        for name, value in list(graph.initializers.items()):
            if not value.uses() and not value.is_graph_output():
                graph.initializers.pop(name)
                modified = True
    return modified
