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
        hints: dict[ir.Value, tuple] = {}  # Reshape output -> (shape, type) before the pass
        try:
            for _ in range(_MAX_ROUNDS):
                # a resolved Reshape target gives the dims below it only to the next shape inference
                # (a channel shuffle folds one Reshape per round: ShuffleNet 98 -> 80 -> 62 -> 49 nodes)
                counts, hinted = _one_round(model, hints)
                for key, count in zip(totals, counts):
                    totals[key] += count
                if not any(counts) and not hinted:
                    break
        finally:
            for value, (shape, type_) in hints.items():  # for the rounds' inference, not for the file
                if not value.is_graph_output():
                    value.shape, value.type = shape, type_
        modified = any(totals.values())
        return PassResult(model, modified=modified, stats={**totals, "nodes_removed": before - count_nodes(model)})


_MAX_ROUNDS = 16


def _one_round(model: ir.Model, hints: dict[ir.Value, tuple]) -> tuple[tuple[int, int, int], int]:
    """((values folded, Reshape targets resolved, shapes rebuilt), Reshape outputs newly hinted) by
    one shape inference's knowledge. ``hints`` collects the Reshape outputs given a named dim that
    ONNX shape inference leaves anonymous (their shape and type before the pass): the next
    rounds' inference starts from them."""
    with inferred_shapes(model):  # dims and dtypes come from inference
        values = sv.evaluate(model.graph)
        # Whole-chain rewrites first: they make the intermediate values dead instead of folded.
        reshapes = _resolve_reshape_targets(model, values)
        rebuilt = _rebuild_shape_inputs(model, values)
        ir.passes.common.RemoveUnusedNodesPass()(model)
        folded = _replace_known(model, values)
        named = _named_reshape_outputs(model, sv.evaluate(model.graph))
    for value, (shape, dtype) in named.items():
        hints.setdefault(value, (value.shape, value.type))
        value.shape, value.type = shape, ir.TensorType(dtype)
    if folded or reshapes or rebuilt:
        ir.passes.common.RemoveUnusedNodesPass()(model)
    return (folded, reshapes, rebuilt), len(named)


def _named_reshape_outputs(model: ir.Model, values: dict[ir.Value, sv.Partial]) -> dict[ir.Value, tuple]:
    """{Reshape output: (shape, dtype)} where the output has an anonymous dim that is a named dim of
    the input: ONNX shape inference names the dim a ``-1`` stands for ``unk__N`` (``view(-1, 3, 8, 8, 8)``
    of a ``[batch, 24, 8, 8]`` map), and a later ``view(batch, -1, 8)`` could not resolve its -1 (a
    YOLO-style decode head kept two Shape -> Gather -> Concat chains that PyPI's onnxslim folds)."""
    named = {}
    for node in _nodes(model, "Reshape"):
        out, data = node.outputs[0], node.inputs[0]
        partial = sv.value_of(node.inputs[1], values)
        if out.is_graph_output() or out.shape is None or data.dtype is None or partial is None or partial.scalar \
                or node.attributes.get_int("allowzero", 0):
            continue
        elements = _resolve_minus_one(list(partial.elements), data.shape, 0)
        if -1 in elements and data.shape is not None:
            elements = _minus_one_as_symbol(elements, data.shape)
        shape = [e if isinstance(e, int) and e > 0 else e.symbol if isinstance(e, sv.Dim) and e.symbol else None
                 for e in elements]
        if None in shape or len(shape) != len(out.shape):
            continue
        if any(isinstance(d, str) and not (isinstance(o, ir.SymbolicDim) and o.value == d) for d, o in zip(shape, out.shape)):
            named[out] = (ir.Shape([ir.SymbolicDim(d) if isinstance(d, str) else d for d in shape]), data.dtype)
    return named


def _minus_one_as_symbol(elements: list, data_shape: ir.Shape) -> list:
    """The -1 of a Reshape target as the input's one named dim the target's other elements leave,
    when the known sizes match (``[-1, 3, 8, 8, 8]`` of ``[batch, 24, 8, 8]``: batch)."""
    split = _unmatched_dims(elements, data_shape)
    if split is None:
        return elements
    leftover, known_target, known_data = split
    if len(leftover) != 1 or not leftover[0].symbol or known_target != known_data:
        return elements
    return [leftover[0] if e == -1 else e for e in elements]


def _unmatched_dims(elements: list, data_shape: ir.Shape) -> tuple[list, int, int] | None:
    """(the input's dynamic dims no dynamic element of the target stands for, the product of the
    target's static elements but -1, the product of the input's static dims); None when a target
    element matches no input dim, or a dim or element is unknown."""
    data = [sv.element_of_dim(d) for d in data_shape]
    if any(e is None for e in data) or any(e is None for e in elements) or 0 in elements:
        return None
    leftover = [d for d in data if not isinstance(d, int)]
    for element in (e for e in elements if not isinstance(e, int)):
        match = next((d for d in leftover if sv.same_dim(d, element)), None)
        if match is None:
            return None
        leftover.remove(match)
    known_target = math.prod(e for e in elements if isinstance(e, int) and e != -1)
    return leftover, known_target, math.prod(d for d in data if isinstance(d, int))


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
    if -1 not in elements or data_shape is None or allowzero:
        return elements
    split = _unmatched_dims(elements, data_shape)
    if split is None:
        return elements
    leftover, known_target, known_data = split
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
