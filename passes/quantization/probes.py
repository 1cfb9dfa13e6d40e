"""Small in-graph reductions that calibration fetches in place of whole tensors.

Fetching a tensor from ONNX Runtime costs more than copying it out: ORT runs Conv chains in a
blocked channel layout (NCHWc), so every fetched Conv output gets a layout copy, and a tensor that
ORT would fuse away (a Conv's pre-activation output) is computed unfused. A probe is a node added
after the tensor whose output is small: ``Size`` (the element count), ``GlobalMaxPool`` (the maximum
per sample and channel) and a strided ``AveragePool`` with a 1x1 kernel (every ``stride``-th value
along each spatial axis: a sample for the histogram). ORT runs both pools on the blocked layout.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
import onnx_ir as ir

SAMPLE_STRIDE = 4
"""Spatial stride of a sample probe: 1/16 of a 2-D map (YOLOv8n, 320x320: 31 of 124 MB a batch of 8
would copy at stride 2, 8 MB at 4). The histogram keeps at most ``statistics.SAMPLE`` values of a batch anyway."""
MIN_STRIDED_EXTENT = 16
"""Spatial axes shorter than this are not strided (a 10x10 map keeps all its 100 positions)."""
MAX_POOLED_AXES = 3
"""ONNX Runtime's CPU AveragePool takes at most 3 spatial axes ("Unsupported pooling size"); a
SiLU input of higher rank is fetched."""
MIN_SAMPLE = 8192
"""Values per sample a sample probe keeps when the shape is known: a batch of 8 then gives the
histogram its ``statistics.SAMPLE`` values, as a fetched tensor would (YOLOv8n's 20x20x128 map:
stride 2, 12,800 values; at stride 4 it would keep 3,200)."""


@dataclasses.dataclass(frozen=True)
class Probe:
    tensor: str
    kind: str
    """``size``, ``max`` or ``sample``."""
    node: onnx.NodeProto
    factor: float = 1.0
    """Elements of ``tensor`` per element of a ``sample`` probe's output."""

    @property
    def output(self) -> str:
        return self.node.output[0]


def size_probe(tensor: str) -> Probe:
    return Probe(tensor, "size", onnx.helper.make_node("Size", [tensor], [f"{tensor}__onnxslim_size"]))


def max_probe(tensor: str) -> Probe:
    """Needs ``tensor`` of rank >= 3 (``spatial_rank``)."""
    return Probe(tensor, "max", onnx.helper.make_node("GlobalMaxPool", [tensor], [f"{tensor}__onnxslim_max"]))


def sample_probe(value: ir.Value, spatial: int) -> Probe:
    """Every ``s``-th position of ``value`` along its ``spatial`` axes, all samples and channels:
    ``s = SAMPLE_STRIDE``, or less where the shape says that would leave fewer than ``MIN_SAMPLE``
    values per sample (axes shorter than ``MIN_STRIDED_EXTENT`` are never strided)."""
    extents = list(value.shape)[1:] if value.shape is not None and len(value.shape) == spatial + 2 else [None] * (spatial + 1)
    channels, extents = extents[0], extents[1:]
    stride = SAMPLE_STRIDE
    while stride > 1 and all(isinstance(n, int) for n in (channels, *extents)):
        kept = channels * math.prod(math.ceil(n / stride) if n >= MIN_STRIDED_EXTENT else n for n in extents)
        if kept >= MIN_SAMPLE:
            break
        stride //= 2
    strides = [1 if isinstance(n, int) and n < MIN_STRIDED_EXTENT else stride for n in extents]
    factor = math.prod(n / math.ceil(n / s) if isinstance(n, int) else s for n, s in zip(extents, strides))
    node = onnx.helper.make_node("AveragePool", [value.name], [f"{value.name}__onnxslim_sample"],
                                 kernel_shape=[1] * spatial, strides=strides)
    return Probe(value.name, "sample", node, factor)


def spatial_rank(value: ir.Value) -> int | None:
    """Spatial axes of ``value`` as an ``N, C, ...`` map (None unless its shape or its Conv producer says)."""
    if value.shape is not None:
        return len(value.shape) - 2 if len(value.shape) >= 3 else None
    producer = value.producer()
    if producer is None or producer.op_type not in ("Conv", "ConvTranspose") or len(producer.inputs) < 2:
        return None
    weight = producer.inputs[1]
    rank = len(weight.shape) if weight is not None and weight.shape is not None else None
    return rank - 2 if rank is not None and rank >= 3 else None


def is_float(value: ir.Value) -> bool:
    return value.dtype in (None, ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE)


def reduce_into(stats, probe: Probe, value, share: float) -> None:
    """Adds one run's probe output to ``stats`` (a ``TensorStats``)."""
    if probe.kind == "size":
        stats.elements += int(value)
    elif probe.kind == "max":
        stats.maximum = max(stats.maximum, float(np.max(value)))
    else:
        sample = np.asarray(value, dtype=np.float32)
        stats.update(sample, share=share)
        stats.elements += round(sample.size * (probe.factor - 1))  # update counted the sample's elements
