"""Int8 embedding tables: a Gather from a large constant table reads int8 rows and rescales them.

Before: ``y = Gather(table float[V, D], ids)``. After: ``y = Cast(Gather(table_q int8[V, D], ids),
float) * Gather(scales float[V, 1], ids)``: one symmetric scale per row (per token), so a rare
token with large values does not coarsen the others. Plain ONNX ops: any runtime and opset
runs it, and only the gathered rows are ever converted (a DequantizeLinear in front of the
Gather would rescale the whole table on every call). MiniLM's word embeddings are half of its
file: 30522 x 384 floats, 47 MB -> 11.8 MB. Gathers from one table share one int8 copy; a table
that another op also reads (a tied output projection) stays float, since its float copy stays in
the file anyway, and so does a table that is also a graph input (the application may feed it).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.passes.quantization.plan import is_constant
from onnxslim.passes.quantization.qdq import NAMES_KEY, unique_name

MIN_ELEMENTS = 1 << 16
"""Smaller tables stay float (not worth three nodes)."""


def quantize_embeddings(graph: ir.Graph, *, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[dict]:
    """Rewrites every eligible Gather in place; one report row per Gather rewritten, and one per
    large table left float because something else reads it."""
    graph.meta.pop(NAMES_KEY, None)
    rows, done = [], {}
    selected = {node for node in graph if _selected(node, include, exclude)}
    for node in list(graph):
        if node not in selected:
            continue
        table = node.inputs[0]
        if table not in done and (other := _other_reader(table, selected)) is not None:
            rows.append({"node": node.name, "op": "Gather", "kept_float": f"the table is also read by {other}"})
            done[table] = None
        if done.setdefault(table, ()) is None:
            continue
        if not done[table]:
            done[table] = _quantized_table(graph, table)
        rows.append(_rewrite(graph, node, *done[table]))
    graph.meta.pop(NAMES_KEY, None)
    return rows


def _selected(node: ir.Node, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """A Gather along axis 0 from a large constant float32 ``[V, D]`` table that the settings allow."""
    if node.op_type != "Gather" or node.op_type in exclude or (node.name and node.name in exclude):
        return False
    if include and "Gather" not in include and node.name not in include:
        return False
    axis = node.attributes.get("axis")
    if (axis.value if axis is not None else 0) != 0 or node.outputs[0].is_graph_output() or not is_constant(node.inputs[0]):
        return False
    tensor = ir.convenience.get_const_tensor(node.inputs[0])
    return tensor.dtype == ir.DataType.FLOAT and len(tensor.shape) == 2 and tensor.size >= MIN_ELEMENTS


def _other_reader(table: ir.Value, selected: set[ir.Node]) -> str | None:
    """A reader of ``table`` this rewrite leaves reading the float table (another op, or a Gather
    the settings leave float), which keeps it in the file; None when there is none."""
    for reader in table.consumers():
        if reader not in selected:
            return f"{reader.op_type} {reader.name!r}" if reader.name else reader.op_type
    return None


def _quantized_table(graph: ir.Graph, table: ir.Value) -> tuple[ir.Value, ir.Value, int]:
    """(int8 rows, per-row scales, elements) for ``table``, added to the graph."""
    base = table.name or "table"
    array = ir.convenience.get_const_tensor(table).numpy()
    # in place on one float32 temporary: MiniLM's table is 47 MB, and each np.abs / np.round copy was one more
    peak = np.maximum(array.max(axis=1, keepdims=True), -array.min(axis=1, keepdims=True))
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    scaled = np.divide(array, scales, dtype=np.float32)
    np.rint(scaled, out=scaled)
    quantized = np.clip(scaled, -127, 127, out=scaled).astype(np.int8)
    return _initializer(graph, f"{base}_int8", quantized), _initializer(graph, f"{base}_row_scale", scales), int(array.size)


def _rewrite(graph: ir.Graph, node: ir.Node, q_table: ir.Value, s_table: ir.Value, elements: int) -> dict:
    base = node.inputs[0].name or "table"
    ids = node.inputs[1]
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
    return {"node": node.name, "op": "Gather", "weight": "per-row int8 (embedding)", "weight_elements": elements,
            "bias": None}


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    name = unique_name(graph, name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value
