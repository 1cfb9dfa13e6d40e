"""Size measures of a model, shared by the manager, `inspect` and reports."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Iterator

import numpy as np
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
    """Initializers and the values of Constant nodes (Paddle exports carry weights that way), in
    every graph: the main graph, If/Loop/Scan bodies and the model's functions. A Constant's value
    in any of its forms (``value``, ``value_floats``, ``value_int``, ...) counts: fold-constants
    lifts them into initializers, which must not read as weights appearing or vanishing."""
    graphs = [*model.graphs()]
    for function in model.functions.values():
        graphs.extend([function.graph, *function.graph.subgraphs()])
    for graph in graphs:
        for name, value in graph.initializers.items():
            if value.const_value is not None:
                yield name, value.const_value
        for node in graph:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                tensor = constant_tensor(node)
                if tensor is not None:
                    yield node.outputs[0].name or node.name or "", tensor


_LISTS = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}


def constant_tensor(node: ir.Node) -> ir.TensorProtocol | None:
    """The value of a Constant node as a tensor, whichever attribute holds it (None for a reference
    to a function attribute)."""
    for name, attr in node.attributes.items():
        if attr.is_ref():
            continue
        if name == "value" and attr.type == ir.AttributeType.TENSOR:
            return attr.value
        if name in _LISTS:
            return ir.tensor(np.array(attr.value, dtype=_LISTS[name]), name=name)
        if name in ("value_string", "value_strings"):
            strings = [attr.value] if name == "value_string" else list(attr.value)
            array = np.array([s.encode() if isinstance(s, str) else s for s in strings], dtype=object)
            return ir.StringTensor(array.reshape(()) if name == "value_string" else array)
    return None


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


def unreached_weights(model: ir.Model) -> str:
    """Why a compression pass may have found nothing, when the reason is where the weights are: ": ..."
    when most weight elements sit in If/Loop bodies, which the passes do not enter; else ""."""
    inside = sum(v.const_value.size for graph in model.graphs() if graph is not model.graph
                 for v in graph.initializers.values() if v.const_value is not None)
    outside = sum(v.const_value.size for v in model.graph.initializers.values() if v.const_value is not None)
    if inside <= outside:
        return ""
    return f": {inside / (inside + outside):.0%} of the weights are inside If/Loop bodies, which it does not enter"


def refusal(model: ir.Model) -> str | None:
    """Why the model's weights are no longer float to work on (it is already quantized), or None."""
    found = sorted({n.op_type for n in model.graph.all_nodes() if n.op_type in QUANTIZED_OPS})
    if found:
        return f"model is already quantized (has {', '.join(found)})"
    return None
