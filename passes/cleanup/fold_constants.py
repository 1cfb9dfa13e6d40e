"""Constant folding with onnxscript's folder."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxscript.optimizer import fold_constants_ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import count_nodes
from onnxslim.passes._rewrite import drop_provenance


@dataclasses.dataclass(frozen=True)
class FoldConstantsConfig:
    input_size_limit: int = 1 << 20
    """Nodes with a constant input of more elements than this are not evaluated."""
    output_size_limit: int = 1 << 22
    """Results with more elements than this are not materialized (keeps files small)."""
    lift_constants: bool = True
    """Turn Constant nodes into initializers (Paddle exports carry weights as Constant nodes)."""

    def __post_init__(self):
        if self.input_size_limit < 0 or self.output_size_limit < 0:
            raise ValueError("size limits must be >= 0")


class FoldConstants(Pass):
    """Evaluate nodes whose inputs are all known (incl. Shape of static dims) and store the results.

    Before: ``Shape(x) -> Gather(0) -> Unsqueeze -> Concat -> Reshape`` with a static dim, or
    ``Constant -> Cast -> Mul(weight)``. After: one initializer feeding the consumer. Symbolic
    dims are never resolved to numbers, so dynamic inputs stay dynamic.
    """

    name = "fold-constants"
    Config = FoldConstantsConfig

    def call(self, model: ir.Model) -> PassResult:
        before = count_nodes(model)
        result = fold_constants_ir(
            model,
            input_size_limit=self.config.input_size_limit,
            output_size_limit=self.config.output_size_limit,
        )
        modified = bool(result.modified)
        if self.config.lift_constants:
            modified |= ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model).modified
        modified |= ir.passes.common.RemoveUnusedNodesPass()(model).modified
        drop_provenance(model)
        return PassResult(model, modified=modified, stats={"nodes_removed": before - count_nodes(model)})
