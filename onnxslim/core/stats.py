"""Size measures of a model, shared by the manager, `inspect` and reports."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Iterator

import onnx_ir as ir


@dataclasses.dataclass(frozen=True)
class GraphStats:
    nodes: int
    params: int
    param_bytes: int


def iter_nodes(graph: ir.Graph) -> Iterator[ir.Node]:
    """Every node, subgraphs (If/Loop/Scan bodies) included."""
    yield from ir.traversal.RecursiveGraphIterator(graph)


def iter_weights(model: ir.Model) -> Iterator[tuple[str, ir.TensorProtocol]]:
    """Initializers and the tensors of Constant nodes (Paddle exports carry weights that way)."""
    for name, value in model.graph.initializers.items():
        if value.const_value is not None:
            yield name, value.const_value
    for node in iter_nodes(model.graph):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            attr = node.attributes.get("value")
            if attr is not None and attr.type == ir.AttributeType.TENSOR:
                yield node.outputs[0].name or node.name or "", attr.value


def count_nodes(model: ir.Model) -> int:
    return sum(1 for _ in iter_nodes(model.graph))


def graph_stats(model: ir.Model) -> GraphStats:
    params = nbytes = 0
    for _, tensor in iter_weights(model):
        params += tensor.size
        nbytes += tensor.nbytes
    return GraphStats(nodes=sum(1 for _ in iter_nodes(model.graph)), params=params, param_bytes=nbytes)


def op_type_counts(model: ir.Model) -> Counter:
    return Counter(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}" for node in iter_nodes(model.graph))


QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "MatMulInteger", "ConvInteger", "MatMulNBits", "DynamicQuantizeMatMul", "QGemm"}


def refusal(model: ir.Model) -> str | None:
    """Why the model's weights are no longer float to work on (it is already quantized), or None."""
    found = sorted({n.op_type for n in model.graph.all_nodes() if n.op_type in QUANTIZED_OPS})
    if found:
        return f"model is already quantized (has {', '.join(found)})"
    return None
