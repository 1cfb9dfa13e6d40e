"""Partial evaluation of small integer tensors (shapes and their arithmetic) for fold-shape-chains."""

from __future__ import annotations

import dataclasses
from typing import Callable, Union

import numpy as np
import onnx_ir as ir
from onnxslim.passes._constants import fixed_tensor

MAX_ELEMENTS = 64


@dataclasses.dataclass(frozen=True)
class Dim:
    """Dim ``axis`` of tensor ``source``: unknown, but >= 0 and the same wherever it is read."""

    source: ir.Value
    axis: int
    symbol: str | None = None


Element = Union[int, Dim, None]


@dataclasses.dataclass(frozen=True)
class Partial:
    elements: tuple[Element, ...]
    scalar: bool = False

    @property
    def known(self) -> bool:
        return all(isinstance(e, int) for e in self.elements)


def same_dim(a: Element, b: Element) -> bool:
    if not isinstance(a, Dim) or not isinstance(b, Dim):
        return False
    return (a.source is b.source and a.axis == b.axis) or (a.symbol is not None and a.symbol == b.symbol)


def element_of_dim(dim) -> Element:
    if isinstance(dim, int):
        return dim if dim >= 0 else None
    return Dim(None, -1, dim.value) if dim.value else None  # type: ignore[arg-type]


def evaluate(graph: ir.Graph) -> dict[ir.Value, Partial]:
    values: dict[ir.Value, Partial] = {}
    for node in graph:
        rule = _RULES.get(node.op_type)
        if rule is None or node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
            continue
        result = rule(node, lambda v: value_of(v, values))
        if result is not None and len(result.elements) <= MAX_ELEMENTS:
            values[node.outputs[0]] = result
    return values


def value_of(value: ir.Value | None, values: dict[ir.Value, Partial]) -> Partial | None:
    """What ``evaluate`` knows of ``value``, or of a small integer constant."""
    if value is None:
        return None
    if value in values:
        return values[value]
    array = _const(value)
    if array is None or array.ndim > 1 or array.size > MAX_ELEMENTS:
        return None
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        return None
    return Partial(tuple(int(v) for v in array.ravel()), scalar=array.ndim == 0)


def _const(value: ir.Value | None) -> np.ndarray | None:
    tensor = fixed_tensor(value) if value is not None else None
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
    source = node.inputs[0]
    if source.shape is None:
        return None
    dims = []
    for axis, d in enumerate(source.shape):
        if isinstance(d, int) and d >= 0:
            dims.append(d)
        else:
            dims.append(Dim(source, axis, getattr(d, "value", None) or None))
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", len(dims))
    return Partial(tuple(dims[start:end]))


def _gather(node: ir.Node, get) -> Partial | None:
    data, indices = get(node.inputs[0]), _const(node.inputs[1])
    if data is None or data.scalar or indices is None or node.attributes.get_int("axis", 0) != 0:
        return None
    n = len(data.elements)
    if indices.ndim > 1 or not all(-n <= i < n for i in indices.ravel()):
        return None
    return Partial(tuple(data.elements[int(i)] for i in indices.ravel()), scalar=indices.ndim == 0)


def _slice(node: ir.Node, get) -> Partial | None:
    data = get(node.inputs[0])
    starts, ends = _ints(node, "starts", 1), _ints(node, "ends", 2)
    axes, steps = _ints(node, "axes", 3) or [0], _ints(node, "steps", 4) or [1]
    if data is None or data.scalar or starts is None or ends is None or axes not in ([0], [-1]) or steps[0] == 0:
        return None
    return Partial(tuple(data.elements[slice(starts[0], ends[0], steps[0])]))


def _concat(node: ir.Node, get) -> Partial | None:
    parts = [get(v) for v in node.inputs]
    if any(p is None or p.scalar for p in parts):
        return None
    return Partial(tuple(e for p in parts for e in p.elements))


def _unsqueeze(node: ir.Node, get) -> Partial | None:
    data, axes = get(node.inputs[0]), _ints(node, "axes", 1)
    return Partial(data.elements) if data is not None and data.scalar and axes in ([0], [-1]) else None


def _squeeze(node: ir.Node, get) -> Partial | None:
    data = get(node.inputs[0])
    return Partial(data.elements, scalar=True) if data is not None and len(data.elements) == 1 and not data.scalar else None


def _passthrough(node: ir.Node, get) -> Partial | None:
    # Integer casts (and Paddle's int -> float -> int round trips) keep small values exact.
    return get(node.inputs[0])


def _reshape_1d(node: ir.Node, get) -> Partial | None:
    data, target = get(node.inputs[0]), _const(node.inputs[1])
    if data is None or data.scalar or target is None or target.tolist() not in ([-1], [len(data.elements)]):
        return None
    return Partial(data.elements)


def _constant_of_shape(node: ir.Node, get) -> Partial | None:
    shape = get(node.inputs[0])
    if shape is None or not shape.known or len(shape.elements) != 1 or shape.elements[0] > MAX_ELEMENTS:
        return None
    attr = node.attributes.get("value")
    fill = 0 if attr is None else attr.as_tensor().numpy().ravel()[0]
    if float(fill) != int(fill):
        return None
    return Partial((int(fill),) * shape.elements[0])


def _elementwise(op: Callable[[Element, Element], Element], count: int = 2) -> Callable:
    def rule(node: ir.Node, get) -> Partial | None:
        parts = [get(v) for v in node.inputs[:count]]
        if any(p is None for p in parts):
            return None
        n = max(len(p.elements) for p in parts)
        if any(len(p.elements) not in (1, n) for p in parts):
            return None
        columns = [p.elements * n if len(p.elements) == 1 else p.elements for p in parts]
        return Partial(tuple(op(*row) for row in zip(*columns)), scalar=all(p.scalar for p in parts))

    return rule


def _ints_only(fn: Callable[[int, int], int | None]) -> Callable[[Element, Element], Element]:
    return lambda a, b: fn(a, b) if isinstance(a, int) and isinstance(b, int) else None


def _equal(a: Element, b: Element) -> Element:
    if isinstance(a, int) and isinstance(b, int):
        return int(a == b)
    if same_dim(a, b):
        return 1
    if (isinstance(a, Dim) and isinstance(b, int) and b < 0) or (isinstance(b, Dim) and isinstance(a, int) and a < 0):
        return 0  # a dim is never negative
    return None


def _where(cond: Element, x: Element, y: Element) -> Element:
    return None if not isinstance(cond, int) else (x if cond else y)


_RULES = {
    "Shape": _shape, "Gather": _gather, "Slice": _slice, "Concat": _concat, "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze, "Cast": _passthrough, "Identity": _passthrough, "Reshape": _reshape_1d,
    "ConstantOfShape": _constant_of_shape,
    "Add": _elementwise(_ints_only(lambda a, b: a + b)), "Sub": _elementwise(_ints_only(lambda a, b: a - b)),
    "Mul": _elementwise(_ints_only(lambda a, b: a * b)),
    "Div": _elementwise(_ints_only(lambda a, b: None if b == 0 else int(a / b))),  # ONNX integer Div truncates
    "Equal": _elementwise(_equal), "Where": _elementwise(_where, count=3),
}


def exclusive_chain_size(value: ir.Value, values: dict[ir.Value, Partial]) -> int:
    """Nodes computing ``value`` that nothing else reads: what rebuilding it would remove."""
    seen: set[ir.Node] = set()
    stack = [value]
    while stack:
        current = stack.pop()
        node = current.producer()
        if node is None or node in seen or current not in values:
            continue
        if current is not value and any(use.node not in seen for use in current.uses()):
            continue
        seen.add(node)
        stack.extend(v for v in node.inputs if v is not None)
    return len(seen)


def rebuild_cost(partial: Partial) -> int:
    runs = _runs(partial.elements)
    sources = {id(run[0].source) for run in runs if isinstance(run[0], Dim)}
    gathers = sum(isinstance(run[0], Dim) for run in runs)
    return len(sources) + gathers + (1 if len(runs) > 1 else 0)


def _runs(elements) -> list[list]:
    """Consecutive constants grouped, and consecutive dims of the same tensor (one Gather each)."""
    runs: list[list] = []
    for e in elements:
        last = runs[-1][0] if runs else None
        if isinstance(e, int) and isinstance(last, int):
            runs[-1].append(e)
        elif isinstance(e, Dim) and isinstance(last, Dim) and last.source is e.source:
            runs[-1].append(e)
        else:
            runs.append([e])
    return runs


def build(graph: ir.Graph, before: ir.Node, partial: Partial, initializer) -> ir.Value:
    """``Concat(Gather(Shape(t), [i]), [c, ...])`` computing ``partial``, inserted before ``before``."""
    shapes: dict[int, ir.Value] = {}
    parts = []
    for run in _runs(partial.elements):
        if isinstance(run[0], int):
            parts.append(initializer("shape_part", np.array(run, dtype=np.int64)))
            continue
        source = run[0].source
        if id(source) not in shapes:
            shapes[id(source)] = _insert(graph, before, "Shape", [source])
        index = initializer("dim_index", np.array([d.axis for d in run], dtype=np.int64))
        parts.append(_insert(graph, before, "Gather", [shapes[id(source)], index], axis=0))
    return parts[0] if len(parts) == 1 else _insert(graph, before, "Concat", parts, axis=0)


def _insert(graph: ir.Graph, before: ir.Node, op_type: str, inputs: list[ir.Value], **attributes) -> ir.Value:
    node = ir.node(op_type, inputs, attributes=attributes or None)
    node.outputs[0].dtype = ir.DataType.INT64
    graph.insert_before(before, node)
    return node.outputs[0]
