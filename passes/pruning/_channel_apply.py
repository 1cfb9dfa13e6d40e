"""Removing the selected channel components: slice weights and parameters, fix attributes and shapes."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.passes.pruning._channel_graph import ChannelGraph, Edit, Slice
from onnxslim.passes.pruning._layers import replace_weight


def kept_positions(g: ChannelGraph, removed: set[int]) -> dict[str, np.ndarray]:
    """{value name: kept positions along its channel axis} for every tracked value that loses channels."""
    kept = {}
    for name, track in g.tracks.items():
        keep = np.array([p for p, u in enumerate(track.units) if g.find(u) not in removed], dtype=np.int64)
        if len(keep) < len(track.units):
            kept[name] = keep
    return kept


def apply_removal(g: ChannelGraph, kept: dict[str, np.ndarray]) -> None:
    for item in g.slices:
        if item.source in kept:
            _slice(item, kept[item.source], len(g.tracks[item.source].units))
    for edit in g.edits:
        if any(s in kept for s in edit.sources):
            _edit(g, edit, kept)
    for name, keep in kept.items():
        value = g.values.get(name)
        if value is not None and value.shape is not None:
            dims = list(value.shape)
            dims[len(dims) + g.tracks[name].axis] = len(keep)
            value.shape = ir.Shape(dims)


def _slice(item: Slice, keep: np.ndarray, total: int) -> None:
    array = item.value.const_value.numpy()
    if item.groups == 1:
        replace_weight(item.value, np.take(array, keep, axis=item.axis))
        return
    per_group_in, per_group_out = total // item.groups, array.shape[0] // item.groups
    parts = []
    for j in range(item.groups):
        local = keep[(keep >= j * per_group_in) & (keep < (j + 1) * per_group_in)] - j * per_group_in
        parts.append(array[j * per_group_out:(j + 1) * per_group_out][:, local])
    replace_weight(item.value, np.concatenate(parts, axis=0))


def _edit(g: ChannelGraph, edit: Edit, kept: dict[str, np.ndarray]) -> None:
    node = edit.node
    counts = [len(kept[s]) if s in kept else len(g.tracks[s].units) for s in edit.sources]
    if edit.kind == "group":
        node.attributes["group"] = ir.AttrInt64("group", counts[0])
    elif edit.kind == "split":
        _set_split(g, node, counts)
    elif edit.kind == "reshape":
        dims = [int(d) for d in node.inputs[1].const_value.numpy().ravel()]
        node.replace_input_with(1, _constant(g, f"{node.inputs[1].name}_pruned", [dims[0], counts[0]]))


def _set_split(g: ChannelGraph, node: ir.Node, sizes: list[int]) -> None:
    if _split_is_attribute(g, node):
        node.attributes["split"] = ir.AttrInt64s("split", sizes)
        return
    node.attributes.pop("num_outputs", None)
    if len(node.inputs) < 2:
        node.resize_inputs(2)
    node.replace_input_with(1, _constant(g, f"{node.name or node.outputs[0].name}_split_pruned", sizes))


def _split_is_attribute(g: ChannelGraph, node: ir.Node) -> bool:
    """Split's sizes are an attribute below opset 13 and an input from 13 on, by the model's own
    default-domain opset; without one (no standard opset to go by) the node keeps the form it has."""
    opset = g.model.opset_imports.get("")
    return "split" in node.attributes if opset is None else opset < 13


def _constant(g: ChannelGraph, name: str, values: list[int]) -> ir.Value:
    taken = set(g.model.graph.initializers) | set(g.values)
    base, index = name, 1
    while name in taken:
        name, index = f"{base}_{index}", index + 1
    value = ir.Value(name=name, const_value=ir.tensor(np.array(values, dtype=np.int64), name=name),
                     shape=ir.Shape([len(values)]), type=ir.TensorType(ir.DataType.INT64))
    g.model.graph.register_initializer(value)
    return value
