"""Prunable layers: Conv/Gemm/MatMul whose weight is a constant float initializer.

Every layer's weight is viewed as rows (one per output channel) of reduction elements, so the
pruning methods work on one 2-D matrix whatever the op.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.errors import ConfigError
from onnxslim.passes._functions import function_layers_reason

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16)


@dataclasses.dataclass
class Layer:
    node: ir.Node
    weight: ir.Value
    kind: str
    """"conv", "gemm" (W is [out, in] when transB else [in, out]) or "matmul" (W is [in, out])."""

    @property
    def name(self) -> str:
        return self.node.name or (self.node.outputs[0].name or "")

    @property
    def transposed(self) -> bool:
        """True when the weight's first axis is the reduction axis (rows need a transpose)."""
        if self.kind == "gemm":
            return not _attr_int(self.node, "transB", 0)
        return self.kind == "matmul"

    @property
    def group(self) -> int:
        return _attr_int(self.node, "group", 1) if self.kind == "conv" else 1

    def array(self) -> np.ndarray:
        return self.weight.const_value.numpy()

    def rows(self, array: np.ndarray | None = None) -> np.ndarray:
        """The weight as [out, reduction]; for Conv the reduction order is (in, kh, kw)."""
        w = self.array() if array is None else array
        if self.kind == "conv":
            return w.reshape(w.shape[0], -1)
        return w.T if self.transposed else w

    def from_rows(self, rows: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        return rows.T.reshape(shape) if self.transposed else rows.reshape(shape)


def _attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else default


def weight_skip_reason(value: ir.Value | None) -> str | None:
    """None when ``value`` is a constant float initializer that only this node reads."""
    if value is None:
        return "no weight input"
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant":
        return "weight comes from a Constant node (run fold-constants first)"
    if not value.is_initializer() or value.const_value is None:
        return "weight is not a constant initializer"
    if value.is_graph_input():
        return "weight is also a graph input (overridable)"
    if value.dtype not in FLOAT_TYPES:
        return f"weight dtype {value.dtype} is not float"
    if len(value.uses()) != 1:
        return "weight is shared by several nodes"
    return None


def as_layer(node: ir.Node) -> tuple[Layer | None, str | None]:
    """(layer, None) for a prunable node, (None, reason) for a Conv/Gemm/MatMul that is not, (None, None) otherwise."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("Conv", "Gemm", "MatMul"):
        return None, None
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    reason = weight_skip_reason(weight)
    if reason is None and node.op_type == "Gemm" and _attr_int(node, "transA", 0):
        reason = "Gemm with transA"
    if reason is None and node.op_type == "MatMul" and len(weight.shape) != 2:
        reason = "MatMul weight is not 2-D"
    if reason is None and node.op_type == "Conv" and len(weight.shape) < 3:
        reason = "Conv weight rank < 3"
    if reason:
        return None, reason
    return Layer(node, weight, node.op_type.lower()), None


def find_layers(model: ir.Model) -> tuple[list[Layer], list[dict]]:
    """Prunable layers of the main graph in topological order, and a report row per rejected one."""
    layers, skipped = [], []
    for node in model.graph:
        layer, reason = as_layer(node)
        if layer is not None:
            layers.append(layer)
        elif (reason := reason or function_layers_reason(model, node)) is not None:
            skipped.append({"layer": node.name, "op": node.op_type, "skipped": reason})
    return layers, skipped


def parse_overrides(entries: Iterable[str], *, where: str = "overrides") -> dict[str, float]:
    """``["name=0.5", ...]`` -> {name: 0.5}; a name may be a regular expression (full match)."""
    result = {}
    for entry in entries:
        name, sep, amount = entry.rpartition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not name or not 0.0 <= value < 1.0:
            raise ValueError(f"{where}: expected NAME=AMOUNT with 0 <= AMOUNT < 1, got {entry!r}")
        result[name] = value
    return result


def matches(name: str, patterns: Iterable[str]) -> str | None:
    """The first pattern equal to ``name`` or fully matching it as a regular expression."""
    for pattern in patterns:
        if pattern == name:
            return pattern
        try:
            if re.fullmatch(pattern, name):
                return pattern
        except re.error:
            continue
    return None


def plan_amounts(layers: Sequence[Layer], *, amount: float, skip: Sequence[str], skip_first_last: bool,
                 overrides: dict[str, float]) -> tuple[dict[str, float], list[dict]]:
    """{layer name: amount} for the layers to prune, and report rows for the skipped ones.

    A skip or override pattern that names no prunable layer is a ConfigError: a typo would
    otherwise prune the very layer the user meant to keep (NNCF's ignored scopes check the same)."""
    names = [layer.name for layer in layers]
    for where, patterns in (("skip", skip), ("overrides", overrides)):
        for pattern in patterns:
            if pattern not in names:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ConfigError(f"pruning {where}: {pattern!r} is not a layer name nor a valid regular "
                                      f"expression ({exc})") from None
            if not any(matches(name, [pattern]) for name in names):
                shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
                raise ConfigError(f"pruning {where}: {pattern!r} matches no prunable layer "
                                  f"(Conv/Gemm/MatMul with a constant weight: {shown})")
    amounts, rows = {}, []
    edge = {layers[0].name, layers[-1].name} if skip_first_last and layers else set()
    for layer in layers:
        if matches(layer.name, skip):
            rows.append({"layer": layer.name, "op": layer.node.op_type, "skipped": "in skip list"})
        elif layer.name in edge and not matches(layer.name, overrides):
            rows.append({"layer": layer.name, "op": layer.node.op_type, "skipped": "first or last layer"})
        else:
            pattern = matches(layer.name, overrides)
            amounts[layer.name] = overrides[pattern] if pattern else amount
    return amounts, rows


def replace_weight(value: ir.Value, array: np.ndarray) -> None:
    """Gives ``value`` a new tensor (never mutating the old one: rollback copies share tensors)."""
    old = value.const_value
    array = np.ascontiguousarray(array, dtype=old.numpy().dtype)
    value.const_value = ir.tensor(array, name=value.name)
    value.shape = ir.Shape(array.shape)
