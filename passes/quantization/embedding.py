"""Int8 embedding tables: a Gather from a large constant table reads int8 rows and rescales them.

Before: ``y = Gather(table float[V, D], ids)``. After: ``y = Cast(Gather(table_q int8[V, D], ids),
float) * Gather(scales float[V, 1], ids)``: one symmetric scale per row (per token), so a rare
token with large values does not coarsen the others. Plain ONNX ops: any runtime and opset
runs it, and only the gathered rows are ever converted (a DequantizeLinear in front of the
Gather would rescale the whole table on every call). MiniLM's word embeddings are half of its
file: 30522 x 384 floats, 47 MB -> 11.8 MB.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.passes.quantization.qdq import NAMES_KEY, unique_name

MIN_ELEMENTS = 1 << 16
"""Smaller tables stay float (not worth three nodes)."""


def quantize_embeddings(graph: ir.Graph, *, exclude: tuple[str, ...] = (), min_elements: int = MIN_ELEMENTS) -> list[dict]:
    """Rewrites every eligible Gather in place; one report row per table."""
    graph.meta.pop(NAMES_KEY, None)
    rows = []
    for node in list(graph):
        table = _table(node, exclude, min_elements)
        if table is not None:
            rows.append(_rewrite(graph, node, table))
    graph.meta.pop(NAMES_KEY, None)
    return rows


def _table(node: ir.Node, exclude: tuple[str, ...], min_elements: int) -> np.ndarray | None:
    if node.op_type != "Gather" or node.op_type in exclude or (node.name and node.name in exclude):
        return None
    axis = node.attributes.get("axis")
    if (axis.value if axis is not None else 0) != 0 or node.outputs[0].is_graph_output():
        return None
    tensor = ir.convenience.get_const_tensor(node.inputs[0])
    if tensor is None or tensor.dtype != ir.DataType.FLOAT or len(tensor.shape) != 2 or tensor.size < min_elements:
        return None
    return tensor.numpy()


def _rewrite(graph: ir.Graph, node: ir.Node, table: np.ndarray) -> dict:
    base = node.inputs[0].name or "table"
    # in place on one float32 temporary: MiniLM's table is 47 MB, and each np.abs / np.round copy was one more
    peak = np.maximum(table.max(axis=1, keepdims=True), -table.min(axis=1, keepdims=True))
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    scaled = np.divide(table, scales, dtype=np.float32)
    np.rint(scaled, out=scaled)
    quantized = np.clip(scaled, -127, 127, out=scaled).astype(np.int8)
    ids = node.inputs[1]
    q_table = _initializer(graph, f"{base}_int8", quantized)
    s_table = _initializer(graph, f"{base}_row_scale", scales)
    rows = ir.node("Gather", [q_table, ids], name=unique_name(graph, f"{node.name or base}_int8"))
    widened = ir.node("Cast", [rows.outputs[0]], attributes={"to": ir.DataType.FLOAT},
                      name=unique_name(graph, f"{node.name or base}_cast"))
    row_scales = ir.node("Gather", [s_table, ids], name=unique_name(graph, f"{node.name or base}_scales"))
    rescaled = ir.node("Mul", [widened.outputs[0], row_scales.outputs[0]], name=unique_name(graph, f"{node.name or base}_rescale"))
    for value, suffix in ((rows.outputs[0], "rows_int8"), (widened.outputs[0], "rows"), (row_scales.outputs[0], "row_scales")):
        value.name = unique_name(graph, f"{base}_{suffix}")
    graph.insert_after(node, [rows, widened, row_scales, rescaled])
    output = node.outputs[0]
    output.replace_all_uses_with(rescaled.outputs[0])
    name = output.name
    graph.remove(node, safe=True)
    rescaled.outputs[0].name = name  # downstream tensor names (and calibration caches) stay valid
    rescaled.outputs[0].dtype, rescaled.outputs[0].shape = ir.DataType.FLOAT, output.shape
    return {"node": node.name, "op": "Gather", "weight": "per-row int8 (embedding)", "weight_elements": int(table.size),
            "bias": None}


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    name = unique_name(graph, name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value
