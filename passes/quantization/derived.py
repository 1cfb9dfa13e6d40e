"""Statistics of ``Sigmoid(v)``, ``v * Sigmoid(v)`` (SiLU), ``HardSigmoid(v)`` and ``HardSwish(v)``
computed from those of ``v``, not fetched.

Every YOLOv8 layer is ``Conv -> Sigmoid, Mul``: three quantized tensors, one of which determines
the other two elementwise. Fetching all three from ONNX Runtime is most of calibration's cost
(each extra output is copied out of ORT's blocked layout); PP-LCNet (PP-OCRv4) is the same with
``Conv -> HardSwish`` and squeeze-excitation ``HardSigmoid`` gates. Their min/max are exact
functions of ``v``'s (sigmoid and hard sigmoid are monotonic; SiLU's minimum is at x = -1.2785,
hard swish's at -1.5), and their histograms are ``v``'s
bins moved through ``f`` (each spread over evenly spaced points): ranges within ~2% of the span of
those from fetched tensors for minmax, percentile, mse and entropy (tests).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import onnx_ir as ir

from onnxslim.passes.quantization.ranges import silu
from onnxslim.passes.quantization.statistics import TensorStats

SILU_ARGMIN = -1.2784645
HARD_SWISH_ARGMIN = -1.5


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -60, 60)))


def hard_swish(x: np.ndarray) -> np.ndarray:
    return x * np.clip(x / 6 + 0.5, 0, 1)


@dataclasses.dataclass(frozen=True)
class HardSigmoid:
    """ONNX HardSigmoid with its attributes (non-decreasing for alpha > 0)."""

    alpha: float = 0.2
    beta: float = 0.5
    __name__ = "hard_sigmoid"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.clip(self.alpha * x + self.beta, 0, 1)


ARGMIN = {silu: SILU_ARGMIN, hard_swish: HARD_SWISH_ARGMIN}
"""Functions with one interior minimum (decreasing, then increasing); the others are non-decreasing."""


def derivable(graph: ir.Graph, names: set[str]) -> dict[str, tuple[str, Callable]]:
    """``{derived tensor: (source tensor, function)}`` for Sigmoid / SiLU / HardSigmoid / HardSwish
    outputs among ``names`` whose input is among ``names`` too."""
    found = {}
    for node in graph:
        if node.op_type not in ("Sigmoid", "HardSigmoid", "HardSwish") or node.inputs[0] is None:
            continue
        source = node.inputs[0]
        if source.name not in names:
            continue
        function = _elementwise(node)
        if function is not None and node.outputs[0].name in names:
            found[node.outputs[0].name] = (source.name, function)
        if node.op_type != "Sigmoid":
            continue
        for consumer in node.outputs[0].consumers():
            if (consumer.op_type == "Mul" and set(consumer.inputs) == {source, node.outputs[0]}
                    and consumer.outputs[0].name in names):
                found[consumer.outputs[0].name] = (source.name, silu)
    return found


def _elementwise(node: ir.Node) -> Callable | None:
    if node.op_type == "Sigmoid":
        return sigmoid
    if node.op_type == "HardSwish":
        return hard_swish
    alpha, beta = node.attributes.get_float("alpha", 0.2), node.attributes.get_float("beta", 0.5)
    return HardSigmoid(alpha, beta) if alpha > 0 else None


def derive(stats: TensorStats, function: Callable, *, histogram: bool = True) -> TensorStats:
    """The statistics of ``function(v)`` from ``v``'s, for ``function`` in (sigmoid, silu,
    hard_swish, a HardSigmoid);
    ``histogram=False``: min/max only (the minmax method)."""
    low, high = stats.minimum, stats.maximum
    if function in ARGMIN:
        new_low = float(function(np.float64(min(max(ARGMIN[function], low), high))))
        new_high = float(max(function(np.float64(low)), function(np.float64(high))))
    else:
        new_low, new_high = float(function(np.float64(low))), float(function(np.float64(high)))
    result = TensorStats()
    if not np.isfinite(low):
        return result
    result.minimum, result.maximum = new_low, new_high
    if not histogram or stats.counts.sum() == 0:  # a min/max-only source (minmax method)
        return result
    result.radius = max(abs(new_low), abs(new_high), 1e-8)
    bins = len(result.counts)
    # Each source bin is spread over `points` evenly spaced positions: mapped as one point, a source
    # bin wider than an output bin leaves empty output bins in between (a comb that misleads the
    # entropy search: SiLU threshold 6.3 instead of 11.9 on a YOLO-like tensor).
    width = 2 * stats.radius / len(stats.counts)
    points = int(min(64, max(1, np.ceil(2 * width / (2 * result.radius / bins)))))
    offsets = (np.arange(points) + 0.5) / points - 0.5
    positions = (stats.centers[:, None] + offsets[None, :] * width).astype(np.float64)
    index = np.clip(((function(positions) + result.radius) * (bins / (2 * result.radius))).astype(np.intp), 0, bins - 1)
    # every point carries its bin's whole count: integer counts, `points` times the samples (the
    # range searches only use the histogram's shape)
    result.counts = np.bincount(index.ravel(), weights=np.repeat(stats.counts, points), minlength=bins).astype(np.int64)
    return result
