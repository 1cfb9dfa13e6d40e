"""A Gemm with a constant weight, written as MatMul (+ Add) for passes that only rewrite MatMul.

``Y = alpha * A @ op(B) + beta * C`` with ``A`` an activation and ``B`` a constant becomes
``Y = MatMul(A, alpha * op(B)) [+ Add(beta * C)]``: the same arithmetic, with the weight stored
as the ``[K, N]`` matrix MatMul reads. PyTorch exports every 2-D ``nn.Linear`` as
``Gemm(transB=1)``, and the cleanup's ``fuse-matmul-add`` makes Gemms too, so a weight-only pass
that skipped them would leave most classifier heads float.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.passes.quantization.plan import is_constant
from onnxslim.passes.quantization.qdq import unique_name


def gemm_obstacle(node: ir.Node) -> str | None:
    """Why ``node`` (a Gemm) cannot become a MatMul with a constant weight, or None."""
    attrs = {k: a.value for k, a in node.attributes.items()}
    if attrs.get("transA", 0):
        return "Gemm with transA=1"
    if not is_constant(node.inputs[1]) or is_constant(node.inputs[0]):
        return "-"  # no weight operand: not a layer this pass rewrites
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and attrs.get("beta", 1.0) not in (0.0, 1.0) and not is_constant(bias):
        return "Gemm with beta != 1 on a computed C"
    return None


def gemm_to_matmul(graph: ir.Graph, node: ir.Node) -> ir.Node:
    """Replaces ``node`` (``gemm_obstacle`` is None) in place; returns the MatMul, which takes its name."""
    attrs = {k: a.value for k, a in node.attributes.items()}
    if not attrs.get("transB", 0) and attrs.get("alpha", 1.0) == 1.0:  # B as it is: shared with its other readers
        weight_value = node.inputs[1]
    else:
        weight = ir.convenience.get_const_tensor(node.inputs[1]).numpy().astype(np.float32)
        weight = (weight.T if attrs.get("transB", 0) else weight) * np.float32(attrs.get("alpha", 1.0))
        weight_value = _initializer(graph, f"{node.inputs[1].name}_matmul", weight)
    base = node.name or "Gemm"
    matmul = ir.node("MatMul", [node.inputs[0], weight_value], name=node.name)
    nodes, result = [matmul], matmul.outputs[0]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and attrs.get("beta", 1.0) == 0.0:  # beta * C adds nothing
        bias = None
    if bias is not None:
        beta = np.float32(attrs.get("beta", 1.0))
        if beta != 1.0:
            bias = _initializer(graph, f"{bias.name}_scaled", ir.convenience.get_const_tensor(bias).numpy() * beta)
        add = ir.node("Add", [result, bias], name=unique_name(graph, f"{base}_bias"))
        matmul.outputs[0].name = unique_name(graph, f"{base}_product")
        nodes.append(add)
        result = add.outputs[0]
    output = node.outputs[0]
    graph.insert_after(node, nodes)
    output.replace_all_uses_with(result, replace_graph_outputs=True)
    name, kind, shape = output.name, output.type, output.shape
    graph.remove(node, safe=True)
    result.name, result.type, result.shape = name, kind, shape
    return matmul


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    name = unique_name(graph, name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.FLOAT),
                     const_value=ir.tensor(np.ascontiguousarray(array, np.float32), name=name))
    graph.register_initializer(value)
    return value
