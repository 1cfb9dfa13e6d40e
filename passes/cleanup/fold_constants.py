"""Constant folding with onnxscript's folder."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
from onnxscript.optimizer import fold_constants_ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import count_nodes
from onnxslim.passes._constants import fixed_tensor, slice_arguments
from onnxslim.passes._rewrite import drop_provenance, drop_stale_uses


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


SHARED_ELEMENTS = 4096
"""A constant of more elements than this that other nodes read too is not folded into a node's
result: the result would be a second copy beside it (a tied embedding table read by Gather and,
transposed, by the output MatMul: 0.5 MB -> 1 MB). ONNX Runtime folds such a node at load anyway."""


def _keeps_weights_shared(node: ir.Node) -> bool | None:
    """False for a node whose folding would copy a large constant that stays in use; else onnxscript's rules."""
    for value in node.inputs:
        if value is None or value.const_value is None or value.const_value.size <= SHARED_ELEMENTS:
            continue
        if value.is_graph_output() or (len(value.consumers()) > 1 and not _cut_into_parts(value)):
            return False
    return None


def _cut_into_parts(value: ir.Value) -> bool:
    """Whether every reader of ``value`` is a Slice or Split with constant arguments whose results
    together hold no more elements than it: folding them all leaves it unread, so nothing is copied
    (an LSTM's gate weights reordered by Slices and a Concat, as torch exports silero VAD)."""
    whole = np.broadcast_to(np.zeros((), bool), value.const_value.shape.numpy())  # a view: no memory
    total = 0
    for node in value.consumers():
        if node.op_type not in ("Slice", "Split") or node.domain not in ("", "ai.onnx") or node.inputs[0] is not value:
            return False
        # Constant nodes count before the folder reaches them (torch writes one before each Slice)
        if any(v is not None and fixed_tensor(v) is None for v in node.inputs[1:]):
            return False
        if node.op_type == "Split":
            total += whole.size
            continue
        try:
            total += whole[_slices(node, whole.ndim)].size
        except (IndexError, ValueError, TypeError):
            return False
    return total <= whole.size


def _slices(node: ir.Node, rank: int) -> tuple:
    """The numpy index a Slice with fixed arguments takes."""
    index = [slice(None)] * rank
    for start, end, axis, step in zip(*slice_arguments(node), strict=True):
        index[int(axis)] = slice(int(start), int(end), int(step))
    return tuple(index)


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
            should_fold=_keeps_weights_shared,
        )
        modified = bool(result.modified)
        drop_stale_uses(model)
        if self.config.lift_constants:
            modified |= ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model).modified
        modified |= ir.passes.common.RemoveUnusedNodesPass()(model).modified
        drop_provenance(model)
        return PassResult(model, modified=modified, stats={"nodes_removed": before - count_nodes(model)})
