"""Shape arithmetic over partly dynamic shapes, folded where the answer is known."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import count_nodes
from onnxslim.passes.cleanup import shape_values as sv
from onnxslim.passes.cleanup.infer_shapes import inferred_shapes


class FoldShapeChains(Pass):
    """Fold ``Shape -> Gather/Slice/Unsqueeze/Concat/Where...`` chains, also over dynamic dims.

    Each element of a small integer tensor is tracked as a number, as "dim ``i`` of tensor
    ``t``" (a dynamic dim), or as unknown. Then:

    - fully known values become initializers (``Gather(Shape(x), 1)`` of a static dim);
    - a Reshape target with one dynamic element becomes a constant with ``-1`` there:
      ``Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [17], [3]))`` -> ``Reshape(x, [-1, 17, 3])``
      (an existing ``-1`` is resolved first from the input's dims when the dynamic ones cancel);
    - an Expand/Reshape shape built by a long chain (torch's ``expand(B, -1, -1)`` emits
      ConstantOfShape/Equal/Where) is rebuilt as ``Concat(Gather(Shape(t), [i]), [1, 1])``
      when that takes fewer nodes.
    Dynamic dims stay dynamic: nothing is assumed about a dim's value.
    """

    name = "fold-shape-chains"

    def call(self, model: ir.Model) -> PassResult:
        before = count_nodes(model)
        totals = {"values_folded": 0, "reshape_targets": 0, "shapes_rebuilt": 0}
        for _ in range(_MAX_ROUNDS):
            # a resolved Reshape target gives the dims below it only to the next shape inference
            # (a channel shuffle folds one Reshape per round: ShuffleNet 98 -> 80 -> 62 -> 49 nodes)
            counts = _one_round(model)
            for key, count in zip(totals, counts):
                totals[key] += count
            if not any(counts):
                break
        modified = any(totals.values())
        return PassResult(model, modified=modified, stats={**totals, "nodes_removed": before - count_nodes(model)})


_MAX_ROUNDS = 16


def _one_round(model: ir.Model) -> tuple[int, int, int]:
    """(values folded, Reshape targets resolved, shapes rebuilt) by one shape inference's knowledge."""
    with inferred_shapes(model):  # dims and dtypes come from inference
        values = sv.evaluate(model.graph)
        # Whole-chain rewrites first: they make the intermediate values dead instead of folded.
        reshapes = _resolve_reshape_targets(model, values)
        rebuilt = _rebuild_shape_inputs(model, values)
        ir.passes.common.RemoveUnusedNodesPass()(model)
        folded = _replace_known(model, values)
    if folded or reshapes or rebuilt:
        ir.passes.common.RemoveUnusedNodesPass()(model)
    return folded, reshapes, rebuilt


def _replace_known(model: ir.Model, values: dict[ir.Value, sv.Partial]) -> int:
    outputs = set(model.graph.outputs)
    count = 0
    for value, partial in values.items():
        producer = value.producer()
        if not partial.known or value in outputs or producer is None or producer.op_type == "Constant":
            continue
        if value.dtype is None or not value.uses():
            continue
        array = np.array(partial.elements, dtype=value.dtype.numpy())
        new = _initializer(model, f"{value.name or 'value'}_folded", array.reshape(()) if partial.scalar else array)
        ir.convenience.replace_all_uses_with(value, new)
        count += 1
    return count


def _resolve_reshape_targets(model: ir.Model, values: dict[ir.Value, sv.Partial]) -> int:
    count = 0
    for node in _nodes(model, "Reshape"):
        partial = values.get(node.inputs[1])
        if partial is None or partial.scalar or partial.known:
            continue
        allowzero = node.attributes.get_int("allowzero", 0)
        elements = _resolve_minus_one(list(partial.elements), node.inputs[0].shape, allowzero)
        unknown = [e for e in elements if not isinstance(e, int)]
        known = [e for e in elements if isinstance(e, int)]
        if len(unknown) != 1 or -1 in known or (allowzero and 0 in known):
            continue
        array = np.array([-1 if not isinstance(e, int) else e for e in elements], dtype=np.int64)
        node.replace_input_with(1, _initializer(model, f"{node.inputs[1].name or 'shape'}_resolved", array))
        count += 1
    return count


def _resolve_minus_one(elements: list, data_shape: ir.Shape | None, allowzero: int) -> list:
    """Replaces a -1 by its value when the target's dynamic dims are exactly dims of the input."""
    if -1 not in elements or data_shape is None or allowzero or 0 in elements:
        return elements
    data = [sv.element_of_dim(d) for d in data_shape]
    if any(e is None for e in data) or any(e is None for e in elements):
        return elements
    leftover = [d for d in data if not isinstance(d, int)]
    for element in (e for e in elements if not isinstance(e, int)):
        match = next((d for d in leftover if sv.same_dim(d, element)), None)
        if match is None:
            return elements
        leftover.remove(match)
    known_target = math.prod(e for e in elements if isinstance(e, int) and e != -1)
    known_data = math.prod(d for d in data if isinstance(d, int))
    if leftover or known_target == 0 or known_data % known_target:
        return elements
    return [known_data // known_target if e == -1 else e for e in elements]


def _rebuild_shape_inputs(model: ir.Model, values: dict[ir.Value, sv.Partial]) -> int:
    count = 0
    for node in [*_nodes(model, "Expand"), *_nodes(model, "Reshape")]:
        target = node.inputs[1]
        partial = values.get(target)
        if partial is None or partial.scalar or target.dtype != ir.DataType.INT64:
            continue
        if not all(isinstance(e, (int, sv.Dim)) and e != -1 or (e == -1 and node.op_type == "Reshape")
                   for e in partial.elements):
            continue
        if sv.rebuild_cost(partial) >= sv.exclusive_chain_size(target, values):
            continue
        node.replace_input_with(1, sv.build(model.graph, node, partial, _initializer_factory(model)))
        count += 1
    return count


def _nodes(model: ir.Model, op_type: str) -> list[ir.Node]:
    return [n for n in model.graph if n.op_type == op_type and n.domain in ("", "ai.onnx") and len(n.inputs) > 1]


def _initializer_factory(model: ir.Model):
    return lambda base, array: _initializer(model, base, array)


def _initializer(model: ir.Model, base: str, array: np.ndarray) -> ir.Value:
    name, index = base, 0
    while name in model.graph.initializers:
        index += 1
        name = f"{base}_{index}"
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    model.graph.register_initializer(value)
    return value
