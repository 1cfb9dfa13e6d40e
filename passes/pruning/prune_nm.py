"""N:M semi-structured sparsity (2:4 by default) along the reduction dimension."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import PassResult
from onnxslim.passes.pruning._apply import mask_and_refit
from onnxslim.passes.pruning._common import PruneConfig, PrunePass
from onnxslim.passes.pruning._layers import find_layers, matches


@dataclasses.dataclass(frozen=True)
class PruneNMConfig(PruneConfig):
    n: int = 2
    """Weights kept in each block of ``m``."""
    m: int = 4
    """Block length along the reduction (input-channel) dimension."""

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.n < self.m:
            raise ValueError(f"need 0 < n < m, got {self.n}:{self.m}")


class PruneNM(PrunePass):
    """Keep the ``n`` largest of every ``m`` consecutive weights along the reduction dimension (N:M sparsity).

    Before: dense Conv/Gemm/MatMul weights. After: in each output row, every block of ``m``
    consecutive input channels (for a Conv, at each kernel position) holds at most ``n`` non-zeros:
    the pattern sparse tensor cores accelerate (2:4). ``amount`` is not used: the sparsity is
    ``1 - n/m``. An override ``NAME=0`` leaves that layer dense; any other override amount means
    "prune this layer N:M" (it also lifts the first/last-layer protection). Layers whose input
    channels are not a multiple of ``m`` are skipped with the reason.
    """

    name = "prune-nm"
    Config = PruneNMConfig

    def call(self, model: ir.Model) -> PassResult:
        self._layers = {layer.name: layer for layer in find_layers(model)[0]}
        target = 1 - self.config.n / self.config.m
        return mask_and_refit(model, self.config, self.context, self._masks, target=target)

    def _masks(self, scores: dict[str, np.ndarray], amounts: dict[str, float]):
        masks, reasons = {}, {}
        overrides = self.config.amounts
        for name, score in scores.items():
            pattern = matches(name, overrides)
            if pattern is not None and overrides[pattern] == 0:
                reasons[name] = f"override {pattern}=0: left dense"
                continue
            layer = self._layers[name]
            w = layer.array()
            channels = w.shape[1] if layer.kind == "conv" else score.shape[1]
            if channels % self.config.m:
                reasons[name] = f"{channels} input channels, not a multiple of {self.config.m}"
                continue
            masks[name] = nm_mask(score, channels, self.config.n, self.config.m)
        return masks, reasons


def nm_mask(scores: np.ndarray, channels: int, n: int, m: int) -> np.ndarray:
    """Keep-mask of [out, channels * spatial] scores (channel-major, as Conv rows): top ``n`` of each ``m`` channels."""
    out = scores.shape[0]
    spatial = scores.shape[1] // channels
    blocks = scores.reshape(out, channels, spatial).transpose(0, 2, 1).reshape(out, spatial, channels // m, m)
    order = np.argsort(-blocks, axis=-1, kind="stable")
    keep = np.zeros(blocks.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return keep.reshape(out, spatial, channels).transpose(0, 2, 1).reshape(scores.shape)
