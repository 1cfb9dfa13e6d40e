"""onnx-ir models to protobuf without re-encoding their weights.

ONNX Runtime sessions and onnx shape inference need the graph, not the weight bytes: encoding
90 MB of all-MiniLM-L6-v2 weights into a protobuf only for the reader to decode (or ignore) them
again took longer than the model's forward passes. Within ``weights_detached`` the large
initializers are external-data placeholders (name, type and shape kept), so a serialized copy
carries none of their bytes.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import onnx_ir as ir

DETACHED_BYTES = 1024
"""Initializers smaller than this stay inline: shape inference reads their values (Reshape shapes,
Clip bounds, axes)."""

PLACEHOLDER_LOCATION = "__onnxslim_detached__"


@contextlib.contextmanager
def weights_detached(model: ir.Model, select: Callable[[ir.Value], bool] | None = None
                     ) -> Iterator[dict[str, ir.TensorProtocol]]:
    """Main-graph initializers of ``DETACHED_BYTES`` or more (and, if given, ``select``-ed) become
    placeholders for the duration of the block; yields ``{name: tensor}`` of those detached. The
    model is restored exactly on exit, whatever happens inside."""
    detached = {value: value.const_value for value in model.graph.initializers.values()
                if value.const_value is not None and value.const_value.nbytes >= DETACHED_BYTES
                and (select is None or select(value))}
    for value, tensor in detached.items():
        value.const_value = ir.ExternalTensor(PLACEHOLDER_LOCATION, 0, tensor.nbytes, tensor.dtype, shape=tensor.shape,
                                              name=value.name)
    try:
        yield {value.name: tensor for value, tensor in detached.items()}
    finally:
        for value, tensor in detached.items():
            value.const_value = tensor


def graph_proto(model: ir.Model):
    """The model as an onnx ModelProto whose large initializers hold no data (for shape inference)."""
    with weights_detached(model):
        return ir.serde.serialize_model(model)
