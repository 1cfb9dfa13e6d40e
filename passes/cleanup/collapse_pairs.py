"""Pairs of axis ops that cancel or merge, and reductions that reduce nothing.

- ``Unsqueeze(Squeeze(x, a), a)`` -> ``x``: torch's LSTM exports squeeze the direction axis off
  the hidden state and unsqueeze it back before the Concat that builds the state output.
- ``Slice(Slice(x, ...), ...)`` on other axes -> one Slice: STFT exports cut the frequency and
  the time axis in turn.
- ``ReduceMean/Max/Min/Sum/Prod`` over axes of size 1 -> ``Squeeze`` (keepdims=0) or the input
  itself: the mean over one element is that element.

Each rewrite leaves a node that ``remove-noops`` handles on its next round (an Identity it
removes, a Squeeze that may cancel the next Unsqueeze).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.passes._constants import fixed_tensor, slice_arguments
from onnxslim.passes._names import Names

_REDUCTIONS = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd")


def collapse_pairs(model: ir.Model) -> bool:
    """Rewrites every such pair or reduction in all graphs; whether any changed."""
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
    names = Names(model.graph)
    modified = False
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if node.domain not in ("", "ai.onnx") or node.graph is None or len(node.outputs) != 1:
            continue
        if node.op_type == "Unsqueeze":
            modified |= _cancel_squeeze(node)
        elif node.op_type == "Slice" and opset >= 10:
            modified |= _merge_slices(node, names)
        elif node.op_type in _REDUCTIONS:
            modified |= _drop_unit_reduction(node, opset, names)
    if modified:
        ir.passes.common.RemoveUnusedNodesPass()(model)
    return modified


def _cancel_squeeze(node: ir.Node) -> bool:
    inner = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
    if inner is None or inner.op_type != "Squeeze" or inner.domain not in ("", "ai.onnx") or not inner.inputs:
        return False
    source = inner.inputs[0]
    rank = _rank(source)
    squeezed, unsqueezed = _axes(inner, rank), _axes(node, rank)
    if not squeezed or squeezed != unsqueezed:  # no axes: Squeeze drops every 1, known only from the shape
        return False
    _substitute(node, "Identity", [source])
    return True


def _merge_slices(node: ir.Node, names: Names) -> bool:
    inner = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
    if inner is None or inner.op_type != "Slice" or inner.domain not in ("", "ai.onnx") or inner.graph is not node.graph:
        return False
    outer_args, inner_args = slice_arguments(node), slice_arguments(inner)
    if outer_args is None or inner_args is None:
        return False
    rank = _rank(inner.inputs[0])
    inner_axes, outer_axes = _normalized(inner_args[2], rank), _normalized(outer_args[2], rank)
    if inner_axes is None or outer_axes is None or set(inner_axes) & set(outer_axes):
        return False
    merged = [np.concatenate([a, b]).astype(np.int64) for a, b in zip(inner_args, outer_args)]
    name = node.outputs[0].name or "slice"
    arguments = []
    for label, array in zip(("starts", "ends", "axes", "steps"), merged):
        value = ir.Value(name=names.fresh(f"{name}_{label}"), const_value=ir.tensor(array))
        node.graph.register_initializer(value)
        arguments.append(value)
    _substitute(node, "Slice", [inner.inputs[0], *arguments])
    return True


def _drop_unit_reduction(node: ir.Node, opset: int, names: Names) -> bool:
    source = node.inputs[0] if node.inputs else None
    if source is None or source.shape is None:
        return False
    axes = _axes(node, len(source.shape))
    if not axes or axes[-1] >= len(source.shape) or any(source.shape[axis] != 1 for axis in axes):
        return False
    if node.attributes.get_int("keepdims", 1):
        _substitute(node, "Identity", [source])
    elif opset >= 13:
        value = ir.Value(name=names.fresh(f"{node.outputs[0].name or 'reduce'}_axes"),
                         const_value=ir.tensor(np.array(axes, np.int64)))
        node.graph.register_initializer(value)
        _substitute(node, "Squeeze", [source, value])
    else:
        _substitute(node, "Squeeze", [source], {"axes": ir.AttrInt64s("axes", axes)})
    return True


def _rank(value: ir.Value) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


def _axes(node: ir.Node, rank: int | None) -> list[int] | None:
    """The node's constant axes, sorted and non-negative (None: none given, not constant, or a
    negative axis with an unknown rank). Squeeze/Unsqueeze axes count in the rank of the larger
    side, which ``rank`` is for both of a cancelling pair."""
    if "axes" in node.attributes:
        found = list(node.attributes["axes"].as_ints())
    elif len(node.inputs) > 1 and node.inputs[1] is not None:
        tensor = fixed_tensor(node.inputs[1])
        if tensor is None:
            return None
        found = [int(a) for a in tensor.numpy().ravel()]
    else:
        return None
    normalized = _normalized(np.array(found, np.int64), rank)
    return None if normalized is None else sorted(normalized)


def _normalized(axes: np.ndarray, rank: int | None) -> list[int] | None:
    if (axes < 0).any():
        if rank is None:
            return None
        axes = np.where(axes < 0, axes + rank, axes)
    return [int(a) for a in axes]


def _substitute(node: ir.Node, op_type: str, inputs: list, attributes: dict | None = None) -> None:
    """Puts ``op_type(inputs)`` in ``node``'s place; its output takes the old one's name and readers."""
    old = node.outputs[0]
    new = ir.Node("", op_type, inputs, attributes=list((attributes or {}).values()), num_outputs=1, name=node.name)
    node.graph.insert_before(node, new)
    new.outputs[0].type = old.type  # the same element type: a Cast after it can be seen to be a no-op
    if old.is_graph_output():  # the contract's shape
        new.outputs[0].shape = old.shape
    ir.convenience.replace_all_uses_with(old, new.outputs[0], replace_graph_outputs=True)
    node.graph.remove(node, safe=True)
    new.outputs[0].name = old.name
