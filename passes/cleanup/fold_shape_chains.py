"""Shape arithmetic over partly dynamic shapes, folded where the answer is known."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import graph_stats
from onnxslim.passes.cleanup.infer_shapes import inferred_shapes

_MAX_ELEMENTS = 64
_INT_TYPES = {ir.DataType.INT64, ir.DataType.INT32}


@dataclasses.dataclass(frozen=True)
class Partial:
    """A small integer tensor (rank 0 or 1) whose elements are ints or None (not known statically)."""

    elements: tuple[int | None, ...]
    scalar: bool = False

    @property
    def known(self) -> bool:
        return all(e is not None for e in self.elements)


class FoldShapeChains(Pass):
    """Fold ``Shape -> Gather/Slice -> Unsqueeze -> Concat`` chains whose values are known, even with dynamic dims.

    Before: ``Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [17], [3]))`` with a dynamic
    batch dim. After: ``Reshape(x, [-1, 17, 3])``: a Reshape target with exactly one unknown
    element gets ``-1`` there, which Reshape resolves to the same value. Any fully known
    shape value (e.g. ``Gather(Shape(x), 1)`` of a static dim) becomes an initializer.
    Dynamic dims stay dynamic: nothing is assumed about an unknown element.
    """

    name = "fold-shape-chains"

    def call(self, model: ir.Model) -> PassResult:
        before = graph_stats(model).nodes
        with inferred_shapes(model):  # dtypes of the values being replaced come from inference
            partials = _evaluate(model.graph)
            folded = _replace_known(model, partials)
            reshapes = _materialize_reshape_targets(model, partials)
        if folded or reshapes:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        stats = {"values_folded": folded, "reshape_targets": reshapes, "nodes_removed": before - graph_stats(model).nodes}
        return PassResult(model, modified=bool(folded or reshapes), stats=stats)


def _evaluate(graph: ir.Graph) -> dict[ir.Value, Partial]:
    partials: dict[ir.Value, Partial] = {}
    for node in graph:
        if node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
            continue
        rule = _RULES.get(node.op_type)
        if rule is None:
            continue
        result = rule(node, lambda v: _partial(v, partials))
        if result is not None and len(result.elements) <= _MAX_ELEMENTS:
            partials[node.outputs[0]] = result
    return partials


def _partial(value: ir.Value | None, partials: dict[ir.Value, Partial]) -> Partial | None:
    if value is None:
        return None
    if value in partials:
        return partials[value]
    array = _const(value)
    if array is None or array.ndim > 1 or array.size > _MAX_ELEMENTS or not np.issubdtype(array.dtype, np.integer):
        return None
    return Partial(tuple(int(v) for v in array.ravel()), scalar=array.ndim == 0)


def _const(value: ir.Value | None) -> np.ndarray | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else tensor.numpy()


def _ints(node: ir.Node, attr: str, index: int) -> list[int] | None:
    """An int list given as attribute (old opsets) or constant input (new opsets)."""
    if attr in node.attributes:
        return list(node.attributes[attr].as_ints())
    if len(node.inputs) > index and node.inputs[index] is not None:
        array = _const(node.inputs[index])
        return None if array is None else [int(v) for v in array.ravel()]
    return None


def _shape(node: ir.Node, get) -> Partial | None:
    shape = node.inputs[0].shape
    if shape is None:
        return None
    dims = [d if isinstance(d, int) and d >= 0 else None for d in shape]
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", len(dims))
    return Partial(tuple(dims[start:end]))


def _gather(node: ir.Node, get) -> Partial | None:
    data, indices = get(node.inputs[0]), _const(node.inputs[1])
    if data is None or data.scalar or indices is None or node.attributes.get_int("axis", 0) != 0:
        return None
    n = len(data.elements)
    if not all(-n <= i < n for i in indices.ravel()):
        return None
    picked = tuple(data.elements[int(i)] for i in indices.ravel())
    return Partial(picked, scalar=indices.ndim == 0)


def _slice(node: ir.Node, get) -> Partial | None:
    data = get(node.inputs[0])
    starts, ends = _ints(node, "starts", 1), _ints(node, "ends", 2)
    axes, steps = _ints(node, "axes", 3) or [0], _ints(node, "steps", 4) or [1]
    if data is None or data.scalar or starts is None or ends is None or axes not in ([0], [-1]) or len(steps) != 1:
        return None
    if steps[0] == 0:
        return None
    return Partial(tuple(data.elements[slice(starts[0], ends[0], steps[0])]))


def _concat(node: ir.Node, get) -> Partial | None:
    parts = [get(v) for v in node.inputs]
    if any(p is None or p.scalar for p in parts):
        return None
    return Partial(tuple(e for p in parts for e in p.elements))


def _unsqueeze(node: ir.Node, get) -> Partial | None:
    data, axes = get(node.inputs[0]), _ints(node, "axes", 1)
    if data is None or not data.scalar or axes not in ([0], [-1]):
        return None
    return Partial(data.elements)


def _squeeze(node: ir.Node, get) -> Partial | None:
    data = get(node.inputs[0])
    if data is None or data.scalar or len(data.elements) != 1:
        return None
    return Partial(data.elements, scalar=True)


def _passthrough(node: ir.Node, get) -> Partial | None:
    # Cast between integer types (and Paddle's int -> float -> int round trips) keeps small values exact.
    return get(node.inputs[0])


def _arithmetic(op: Callable[[int, int], int]) -> Callable:
    def rule(node: ir.Node, get) -> Partial | None:
        a, b = get(node.inputs[0]), get(node.inputs[1])
        if a is None or b is None:
            return None
        if len(a.elements) != len(b.elements) and 1 not in (len(a.elements), len(b.elements)):
            return None
        n = max(len(a.elements), len(b.elements))
        pairs = zip(a.elements * (n if len(a.elements) == 1 else 1), b.elements * (n if len(b.elements) == 1 else 1))
        values = tuple(None if x is None or y is None else op(x, y) for x, y in pairs)
        return Partial(values, scalar=a.scalar and b.scalar)

    return rule


def _div(x: int, y: int) -> int | None:
    return None if y == 0 else int(x / y)  # ONNX integer Div truncates toward zero


_RULES = {
    "Shape": _shape, "Gather": _gather, "Slice": _slice, "Concat": _concat, "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze, "Cast": _passthrough, "Identity": _passthrough,
    "Add": _arithmetic(lambda x, y: x + y), "Sub": _arithmetic(lambda x, y: x - y),
    "Mul": _arithmetic(lambda x, y: x * y), "Div": _arithmetic(_div),
}


def _replace_known(model: ir.Model, partials: dict[ir.Value, Partial]) -> int:
    outputs = set(model.graph.outputs)
    count = 0
    for value, partial in partials.items():
        producer = value.producer()
        if not partial.known or value in outputs or producer is None or producer.op_type == "Constant":
            continue
        if value.dtype is None or not value.uses():
            continue
        array = np.array(partial.elements, dtype=value.dtype.numpy())
        _replace_with_initializer(model, value, array.reshape(()) if partial.scalar else array)
        count += 1
    return count


def _materialize_reshape_targets(model: ir.Model, partials: dict[ir.Value, Partial]) -> int:
    count = 0
    for node in list(model.graph):
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        target = node.inputs[1]
        partial = partials.get(target)
        if partial is None or partial.scalar or sum(e is None for e in partial.elements) != 1:
            continue
        known = [e for e in partial.elements if e is not None]
        if -1 in known or (node.attributes.get_int("allowzero", 0) and 0 in known):
            continue
        array = np.array([-1 if e is None else e for e in partial.elements], dtype=np.int64)
        node.replace_input_with(1, _new_initializer(model, f"{target.name or 'shape'}_resolved", array))
        count += 1
    return count


def _replace_with_initializer(model: ir.Model, value: ir.Value, array: np.ndarray) -> None:
    constant = _new_initializer(model, f"{value.name or 'value'}_folded", array)
    ir.convenience.replace_all_uses_with(value, constant)


def _new_initializer(model: ir.Model, base: str, array: np.ndarray) -> ir.Value:
    name, index = base, 0
    while name in model.graph.initializers:
        index += 1
        name = f"{base}_{index}"
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    model.graph.register_initializer(value)
    return value



