"""Unstructured L1-magnitude pruning of Conv/Gemm/MatMul weights."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import PassResult
from onnxslim.passes.pruning._apply import lowest_mask, mask_and_refit
from onnxslim.passes.pruning._common import PruneConfig, PrunePass
from onnxslim.passes.pruning._layers import matches


@dataclasses.dataclass(frozen=True)
class PruneMagnitudeConfig(PruneConfig):
    scope: Literal["layer", "global"] = "layer"
    """``layer``: each layer loses ``amount`` of its weights; ``global``: one threshold over all pruned layers
    (layers with an override keep their own amount)."""


class PruneMagnitude(PrunePass):
    """Zero the smallest-magnitude weights of Conv/Gemm/MatMul layers (unstructured sparsity).

    Before: dense constant weights. After: the same tensors with ``amount`` of their entries set to
    0 (by |w|, or by |w| * ||x|| with calibration data), optionally refit by least squares on the
    surviving weights. Shapes are unchanged; the gain is in compressed (zip) size, reported per layer.
    Applies to float initializer weights read by one node; the first and last layers are skipped by default.
    """

    name = "prune-magnitude"
    Config = PruneMagnitudeConfig

    def call(self, model: ir.Model) -> PassResult:
        return mask_and_refit(model, self.config, self.context, self._masks)

    def _masks(self, scores: dict[str, np.ndarray], amounts: dict[str, float]):
        own = set(scores) if self.config.scope == "layer" else {n for n in scores if matches(n, self.config.amounts)}
        masks = {name: lowest_mask(scores[name], int(amounts[name] * scores[name].size)) for name in own}
        shared = [name for name in scores if name not in masks]
        if shared:
            flat = np.concatenate([scores[name].ravel() for name in shared])
            keep = lowest_mask(flat, int(self.config.amount * flat.size))
            offset = 0
            for name in shared:
                size = scores[name].size
                masks[name] = keep[offset:offset + size].reshape(scores[name].shape)
                offset += size
        return masks, {}
