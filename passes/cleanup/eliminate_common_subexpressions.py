"""Common subexpression elimination (onnx-ir's pass)."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import count_nodes
from onnxslim.passes._contract import declared_io, restore_declared_io


@dataclasses.dataclass(frozen=True)
class EliminateCommonSubexpressionsConfig:
    size_limit: int = 10
    """Constant tensors up to this many elements are compared by value."""

    def __post_init__(self):
        if self.size_limit < 0:
            raise ValueError("size_limit must be >= 0")


class EliminateCommonSubexpressions(Pass):
    """Merge nodes that compute the same op on the same inputs with the same attributes.

    Before: two ``Shape(x)`` nodes feeding different Gathers. After: one Shape read by both.
    """

    name = "eliminate-common-subexpressions"
    Config = EliminateCommonSubexpressionsConfig

    def call(self, model: ir.Model) -> PassResult:
        before = count_nodes(model)
        # a graph output merged into an earlier duplicate takes that value, which may carry no type or
        # shape: rolled back for "output 'b' dtype changed FLOAT -> None", losing every other merge
        declared = declared_io(model.graph)
        modified = ir.passes.common.CommonSubexpressionEliminationPass(size_limit=self.config.size_limit)(model).modified
        modified |= ir.passes.common.RemoveUnusedNodesPass()(model).modified
        restore_declared_io(model.graph, declared)
        return PassResult(model, modified=modified, stats={"nodes_removed": before - count_nodes(model)})
