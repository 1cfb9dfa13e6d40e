"""Statistics of ``Sigmoid(v)`` and ``v * Sigmoid(v)`` (SiLU) computed from those of ``v``, not fetched.

Every YOLOv8 layer is ``Conv -> Sigmoid, Mul``: three quantized tensors, one of which determines
the other two elementwise. Fetching all three from ONNX Runtime is most of calibration's cost
(each extra output is copied out of ORT's blocked layout). Their min/max are exact functions of
``v``'s (sigmoid is monotonic; SiLU's minimum is at x = -1.2785), and their histograms are ``v``'s
bins moved through ``f`` (each spread over evenly spaced points): ranges within ~2% of the span of
those from fetched tensors for minmax, percentile, mse and entropy (tests).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_ir as ir

from onnxslim.passes.quantization.ranges import silu
from onnxslim.passes.quantization.statistics import TensorStats

SILU_ARGMIN = -1.2784645


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -60, 60)))


def derivable(graph: ir.Graph, names: set[str]) -> dict[str, tuple[str, Callable]]:
    """``{derived tensor: (source tensor, function)}`` for Sigmoid / SiLU outputs among ``names``."""
    found = {}
    for node in graph:
        if node.op_type != "Sigmoid" or node.inputs[0] is None or node.inputs[0].name not in names:
            continue
        source = node.inputs[0]
        if node.outputs[0].name in names:
            found[node.outputs[0].name] = (source.name, sigmoid)
        for consumer in node.outputs[0].consumers():
            if (consumer.op_type == "Mul" and set(consumer.inputs) == {source, node.outputs[0]}
                    and consumer.outputs[0].name in names):
                found[consumer.outputs[0].name] = (source.name, silu)
    return found


def derive(stats: TensorStats, function: Callable, *, histogram: bool = True) -> TensorStats:
    """The statistics of ``function(v)`` from ``v``'s, for ``function`` in (sigmoid, silu);
    ``histogram=False``: min/max only (the minmax method)."""
    low, high = stats.minimum, stats.maximum
    if function is silu:
        new_low = float(silu(np.float64(min(max(SILU_ARGMIN, low), high))))
        new_high = float(max(silu(np.float64(low)), silu(np.float64(high))))
    else:
        new_low, new_high = float(function(np.float64(low))), float(function(np.float64(high)))
    result = TensorStats()
    if not np.isfinite(low) or stats.counts.sum() == 0:
        return result
    result.minimum, result.maximum = new_low, new_high
    if not histogram:
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
