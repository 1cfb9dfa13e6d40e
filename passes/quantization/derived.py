"""Statistics computed from other tensors' statistics instead of fetched from ONNX Runtime:
``Sigmoid(v)``, ``v * Sigmoid(v)`` (SiLU), ``HardSigmoid(v)`` and ``HardSwish(v)`` from ``v``'s;
shape-only ops' outputs from their input's; a Concat's output as the union of its inputs'; any
other elementwise chain of one ranged tensor and scalar constants (``chains.py``).

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
from collections import Counter
from typing import Callable, NamedTuple

import numpy as np
import onnx_ir as ir

from onnxslim.passes.quantization.chains import trace
from onnxslim.passes.quantization.ranges import hard_swish, sigmoid, silu
from onnxslim.passes.quantization.statistics import TensorStats

SILU_ARGMIN = -1.2784645
HARD_SWISH_ARGMIN = -1.5


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


COPIED = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
"""Ops whose output holds exactly the input's values."""
SUBSET = {"Split", "Slice", "Resize"}
"""Ops whose output holds some of the input's values (nearest / linear Resize stays within them):
the input's range is a superset, and the one ORT's QDQ gives these ops anyway (shared scale).
Their outputs are mostly re-joined (YOLO's C2f splits and concatenates the halves again), which
makes the union exact. MaxPool is fetched: its output's minimum sits far above its input's."""


class Derivation(NamedTuple):
    sources: tuple[str, ...]
    function: Callable | None = None
    """Elementwise ``f`` of the one source; None: the union of the sources' values (``union``)."""
    size: float | None = 1.0
    """Elements of the output per element of the source (an upsampling Resize: 4); None when the
    shapes do not say: then calibration counts them (``Size`` outputs, ``calibrate.py``)."""


def derivable(graph: ir.Graph, names: set[str]) -> dict[str, Derivation]:
    """``{derived tensor: Derivation}`` for the tensors among ``names`` whose statistics follow from
    other tensors among ``names``, in graph order (a derivation may read an earlier one):
    Sigmoid / SiLU / HardSigmoid / HardSwish outputs, shape-only ops' outputs (their input's
    statistics), and Concat outputs (the union of their inputs': YOLOv8's C2f and neck Concats
    join tensors that are all ranged already), then elementwise chains (``chains.trace``). On
    YOLOv8n that leaves 72 of 103 tensors to fetch, on PP-OCRv4 rec 49 of 78."""
    found = {}
    for node in graph:
        if not node.outputs or not node.inputs or node.inputs[0] is None:
            continue
        source, output = node.inputs[0], node.outputs[0]
        if node.op_type == "Concat":
            if output.name in names and all(v is not None and v.name in names for v in node.inputs):
                found[output.name] = Derivation(tuple(v.name for v in node.inputs))
        elif _keeps_values(node):
            if source.name in names:
                found.update({v.name: Derivation((source.name,), None, _size_ratio(source, v))
                              for v in node.outputs if v.name in names})
        elif node.op_type in ("Sigmoid", "HardSigmoid", "HardSwish") and source.name in names:
            found.update(_activation_outputs(node, names))
        if output.name in names and output.name not in found:
            chain = trace(output, names)
            if chain is not None:
                found[output.name] = Derivation((chain[0],), chain[1])
    return found


def _activation_outputs(node: ir.Node, names: set[str]) -> dict[str, Derivation]:
    """The activation's output, and for a Sigmoid the SiLU ``Mul(v, Sigmoid(v))`` reading it."""
    source, output = node.inputs[0], node.outputs[0]
    found = {}
    function = _elementwise(node)
    if function is not None and output.name in names:
        found[output.name] = Derivation((source.name,), function)
    if node.op_type == "Sigmoid":
        for consumer in output.consumers():
            if (consumer.op_type == "Mul" and set(consumer.inputs) == {source, output}
                    and consumer.outputs[0].name in names):
                found[consumer.outputs[0].name] = Derivation((source.name,), silu)
    return found


def _keeps_values(node: ir.Node) -> bool:
    if node.op_type == "Resize":
        return node.attributes.get_string("mode", "nearest") in ("nearest", "linear")  # cubic overshoots
    return node.op_type in COPIED | SUBSET


def _size_ratio(source: ir.Value, target: ir.Value) -> float | None:
    """Elements of ``target`` per element of ``source``, from their static shapes (None when they do
    not say); dimensions present in both, symbolic ones included, cancel."""
    dims = [_dim_keys(v) for v in (source, target)]
    if None in dims:
        return None
    only_source, only_target = dims[0] - dims[1], dims[1] - dims[0]
    if any(not isinstance(d, int) or d == 0 for d in (*only_source.elements(), *only_target.elements())):
        return None
    return float(np.prod(list(only_target.elements()), dtype=np.float64) / np.prod(list(only_source.elements()), dtype=np.float64))


def _dim_keys(value: ir.Value) -> Counter | None:
    if value.shape is None:
        return None
    keys = [d if isinstance(d, int) else d.value for d in value.shape]
    return None if None in keys else Counter(keys)


def apply(derivation: Derivation, stats: dict[str, TensorStats], *, histogram: bool = True,
          elements: int = 0) -> TensorStats:
    """The derived statistics; ``elements``: the output's element count where calibration counted it."""
    parts = [stats[name] for name in derivation.sources]
    if derivation.function is not None:
        return derive(parts[0], derivation.function, histogram=histogram)
    if len(parts) > 1:
        return union(parts, histogram=histogram)
    part = parts[0]
    if derivation.size is not None:
        elements = round(part.elements * derivation.size)
    return TensorStats(part.minimum, part.maximum, part.radius,
                       part.counts.copy() if histogram else np.zeros_like(part.counts), elements)


def union(parts: list[TensorStats], *, histogram: bool = True) -> TensorStats:
    """The statistics of the values of all ``parts`` together (a Concat of them).

    Each part's histogram is re-binned onto the widest part's bins and weighted by the elements it
    stands for (a histogram holds a capped sample, so raw counts would weigh a 16x16 map like a
    160x160 one). The lightest part keeps its counts (rounding a weight below 1 would erase its
    single-count tail bins); the others' grow, which only the histogram's shape is read for.
    """
    parts = [p for p in parts if not p.empty]
    result = TensorStats()
    if not parts:
        return result
    result.minimum, result.maximum = min(p.minimum for p in parts), max(p.maximum for p in parts)
    result.elements = sum(p.elements for p in parts)
    sampled = [p.counts.sum() for p in parts]
    if not histogram or not all(sampled):
        return result
    result.radius = max(p.radius for p in parts)
    bins = len(result.counts)
    known = all(p.elements for p in parts)
    weights = np.array([p.elements / n if known else 1.0 for p, n in zip(parts, sampled)])
    weights /= weights.min()
    merged = np.zeros(bins)
    for part, weight in zip(parts, weights):
        index = np.clip(((part.centers + result.radius) * (bins / (2 * result.radius))).astype(np.intp), 0, bins - 1)
        merged += np.bincount(index, weights=part.counts * weight, minlength=bins)
    result.counts = np.rint(merged).astype(np.int64)
    return result


def _elementwise(node: ir.Node) -> Callable | None:
    if node.op_type == "Sigmoid":
        return sigmoid
    if node.op_type == "HardSwish":
        return hard_swish
    alpha, beta = node.attributes.get_float("alpha", 0.2), node.attributes.get_float("beta", 0.5)
    return HardSigmoid(alpha, beta) if alpha > 0 else None


def derive(stats: TensorStats, function: Callable, *, histogram: bool = True) -> TensorStats:
    """The statistics of ``function(v)`` from ``v``'s, for ``function`` in (sigmoid, silu,
    hard_swish, a HardSigmoid, a ``chains.Chain``);
    ``histogram=False``: min/max only (the minmax method)."""
    low, high = stats.minimum, stats.maximum
    if not np.isfinite(low):
        return TensorStats(elements=stats.elements)
    if hasattr(function, "extrema"):  # a traced chain (chains.py)
        new_low, new_high = function.extrema(low, high)
    elif function in ARGMIN:
        new_low = float(function(np.float64(min(max(ARGMIN[function], low), high))))
        new_high = float(max(function(np.float64(low)), function(np.float64(high))))
    else:
        new_low, new_high = float(function(np.float64(low))), float(function(np.float64(high)))
    result = TensorStats(elements=stats.elements)
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
