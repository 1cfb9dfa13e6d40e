"""Replaces each use of a split weight by two thin ops reading the factors U (K x r) and V (r x N)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.passes._names import Names
from onnxslim.passes.lowrank.sites import Group, Use

_CONV_ATTRS = ("strides", "pads", "dilations", "auto_pad")


def split_group(graph: ir.Graph, group: Group, u: np.ndarray, v: np.ndarray, names: Names) -> None:
    """Rewires every use of ``group`` to read ``u`` and ``v`` (canonical K x r and r x N)."""
    u_value, v_value = _factor_values(graph, group, u, v, names)
    for use in group.uses:
        first, second = _nodes(use, u_value, v_value, names, rank=u.shape[1])
        ir.convenience.replace_nodes_and_values(
            graph, use.node, [use.node], [first, second], list(use.node.outputs), list(second.outputs)
        )


def _factor_values(graph: ir.Graph, group: Group, u: np.ndarray, v: np.ndarray, names: Names) -> tuple[ir.Value, ir.Value]:
    """Initializers in the layout the consumers read: U, V as they are (N), transposed (T), or as 1x1 kernels."""
    base = group.name
    if group.layout == "T":
        u, v = u.T, v.T
    elif group.layout == "conv":
        spatial = (1,) * (group.array.ndim - 2)
        u, v = u.T.reshape(u.shape[1], u.shape[0], *spatial), v.T.reshape(v.shape[1], v.shape[0], *spatial)
    values = []
    for array, suffix in ((u, ".lowrank_u"), (v, ".lowrank_v")):
        tensor = ir.tensor(np.ascontiguousarray(array), name=names.fresh(base + suffix))
        value = ir.Value(name=tensor.name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
        graph.register_initializer(value)
        values.append(value)
    return values[0], values[1]


def _nodes(use: Use, u: ir.Value, v: ir.Value, names: Names, *, rank: int) -> tuple[ir.Node, ir.Node]:
    node, x = use.node, use.activation
    label = node.name or "split"
    middle = ir.Value(name=names.fresh(f"{label}.lowrank"), type=ir.TensorType(u.dtype))
    first_name, second_name = names.fresh(f"{label}_lowrank_a"), names.fresh(f"{label}_lowrank_b")
    if use.kind == "matmul_right":  # X @ W -> (X @ U) @ V
        first = ir.node("MatMul", [x, u], outputs=[middle], name=first_name)
        second = ir.node("MatMul", [middle, v], name=second_name)
    elif use.kind == "matmul_left":  # W @ X = V^T @ (U^T @ X); the initializers already hold U^T, V^T
        first = ir.node("MatMul", [u, x], outputs=[middle], name=first_name)
        second = ir.node("MatMul", [v, middle], name=second_name)
    elif use.kind == "gemm":
        trans_b = node.attributes.get_int("transB", 0)
        first = ir.node("Gemm", [x, u], {"transA": node.attributes.get_int("transA", 0), "transB": trans_b},
                        outputs=[middle], name=first_name)
        attrs = {"alpha": node.attributes.get_float("alpha", 1.0), "beta": node.attributes.get_float("beta", 1.0),
                 "transB": trans_b}
        second = ir.node("Gemm", [middle, v, *list(node.inputs)[2:]], attrs, name=second_name)
    else:  # 1x1 Conv: the first keeps strides/pads, the second is a plain 1x1 with the bias
        attrs = {k: node.attributes[k].value for k in _CONV_ATTRS if k in node.attributes}
        first = ir.node("Conv", [x, u], attrs, outputs=[middle], name=first_name)
        second = ir.node("Conv", [middle, v, *list(node.inputs)[2:]], name=second_name)
    return first, second
