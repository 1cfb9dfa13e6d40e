"""float32 constants of their own for the inputs onnxruntime's float16 converter keeps float32."""

from __future__ import annotations

import collections

import onnx


def own_float_constants(graph: onnx.GraphProto, always_float: dict[str, list[int]]) -> None:
    """Give the inputs the converter keeps float32 (Resize's scales) a float32 initializer of their
    own (one per source) when they read a Constant node or an initializer that other inputs read.

    The converter makes those float16 and feeds the float32 input through a Cast, so Resize's
    scales stopped being a constant: with ``sizes`` given, ORT refused the model at opset >= 13
    ("Either `sizes` or `scales` must be provided, but not both"; torch's interpolate(size=)
    export, whose empty roi and scales the cleanup merges into one tensor), and below 13 the
    scales were computed at run time from the float16 roi. An empty tensor stays empty."""
    for branch in _branches(graph):
        own_float_constants(branch, always_float)
    initializers = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")}
    slots = [(node, index) for node in graph.node for index in always_float.get(node.op_type, ())
             if index < len(node.input) and node.input[index]]
    kept_reads = collections.Counter(node.input[index] for node, index in slots)
    readers = collections.Counter(_reads(graph))  # branches' reads of this graph's values too
    taken = set(readers) | {t.name for t in graph.initializer} | {v.name for v in graph.input} | \
        {name for node in graph.node for name in node.output}
    own: dict[str, str] = {}
    for node, index in slots:
        name = node.input[index]
        tensor = _constant_value(constants[name]) if name in constants else \
            initializers.get(name) if readers[name] > kept_reads[name] else None
        if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        if name not in own:
            own[name] = _unique(f"{name}_float32", taken)
            graph.initializer.append(onnx.TensorProto())
            graph.initializer[-1].CopyFrom(tensor)
            graph.initializer[-1].name = own[name]
        node.input[index] = own[name]
        readers[name] -= 1
    for name, constant in constants.items():  # Constants left without readers
        if readers[name] == 0:
            graph.node.remove(constant)


def _constant_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    for attribute in node.attribute:
        if attribute.name == "value":
            return attribute.t
        if attribute.name == "value_float":
            return onnx.helper.make_tensor("", onnx.TensorProto.FLOAT, [], [attribute.f])
        if attribute.name == "value_floats":
            return onnx.helper.make_tensor("", onnx.TensorProto.FLOAT, [len(attribute.floats)], list(attribute.floats))
    return None


def _branches(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    return [branch for node in graph.node for attribute in node.attribute
            for branch in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs))]


def _reads(graph: onnx.GraphProto) -> list[str]:
    """Every name read in ``graph`` and its branches (nodes' inputs, graph outputs)."""
    names = [name for node in graph.node for name in node.input] + [value.name for value in graph.output]
    return names + [name for branch in _branches(graph) for name in _reads(branch)]


def _unique(name: str, taken: set[str]) -> str:
    base, index = name, 1
    while name in taken:
        name, index = f"{base}_{index}", index + 1
    taken.add(name)
    return name
