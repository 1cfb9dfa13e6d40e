"""Activation smoothing before static quantization: move outlier channels' scale into the weights.

``X @ W == (X / s) @ (s[:, None] * W)`` for any positive per-channel ``s``. An activation with
a few huge channels (MiniLM's GELU output: one channel at 24.7 where the median channel stays
under 1.3) wastes its 8-bit grid on them; dividing those channels by ``s`` and multiplying the
matching weight rows by ``s`` balances the two, and per-channel int8 weights absorb the larger
rows. ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` (the SmoothQuant balance). The division
costs nothing at run time only where it folds into a constant: here, the per-tensor constant of
a ``Mul`` that produces ``X`` (GELU's trailing ``* 0.5`` in exported transformers) becomes a
per-channel vector. ``X`` must be read only by MatMuls with constant 2-D weights, which all take
the scaled rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

OUTLIER_RATIO = 8.0
"""Smooth only activations whose largest channel maximum is this many times the median one."""


@dataclasses.dataclass
class Site:
    mul: ir.Node
    constant_index: int
    matmuls: list[ir.Node]

    @property
    def value(self) -> ir.Value:
        return self.mul.outputs[0]


def find_sites(graph: ir.Graph, quantized: set[ir.Node]) -> list[Site]:
    """``Mul(x, constant)`` outputs read only by quantized MatMuls with constant ``[K, N]`` weights."""
    sites = []
    for node in graph:
        if node.op_type != "Mul" or node.outputs[0].is_graph_output():
            continue
        constants = [i for i, v in enumerate(node.inputs) if v is not None and ir.convenience.get_const_tensor(v) is not None]
        readers = node.outputs[0].consumers()
        if len(constants) != 1 or not readers or not all(_smoothable_reader(r, node.outputs[0], quantized) for r in readers):
            continue
        if ir.convenience.get_const_tensor(node.inputs[constants[0]]).size != 1:
            continue
        sites.append(Site(node, constants[0], list(readers)))
    return sites


def _smoothable_reader(node: ir.Node, value: ir.Value, quantized: set[ir.Node]) -> bool:
    if node.op_type != "MatMul" or node not in quantized or node.inputs[0] is not value or node.inputs[1] is value:
        return False
    weight = ir.convenience.get_const_tensor(node.inputs[1])
    return weight is not None and len(weight.shape) == 2


def divisors(site: Site, activation_max: np.ndarray, alpha: float) -> np.ndarray | None:
    """``s`` per channel for ``max |x|`` per channel ``activation_max``; None without outliers."""
    if outlier_ratio(activation_max) < OUTLIER_RATIO:
        return None
    weight_max = np.max([np.abs(w).max(axis=1) for w in _weights(site)], axis=0)
    scale = np.where((activation_max > 0) & (weight_max > 0),
                     activation_max ** alpha / np.maximum(weight_max, 1e-12) ** (1 - alpha), 1.0)
    return np.clip(scale, 1e-4, 1e4).astype(np.float32)


def outlier_ratio(activation_max: np.ndarray) -> float:
    median = float(np.median(activation_max))
    return float(activation_max.max()) / median if median > 0 else 0.0


def rewrite(graph: ir.Graph, site: Site, scale: np.ndarray, activation_max: np.ndarray) -> dict:
    """Divides the site's activation by ``scale`` and multiplies its MatMuls' weight rows by it; the report row."""
    constant = ir.convenience.get_const_tensor(site.mul.inputs[site.constant_index]).numpy().astype(np.float32)
    # a [1, 1, 1] constant broadcasts the activation to its rank: the per-channel one must too
    divided = (constant.reshape(-1)[0] / scale).reshape((1,) * (constant.ndim - 1) + scale.shape)
    _set_input(graph, site.mul, site.constant_index, divided.astype(np.float32), f"{site.value.name}_smoothing")
    for matmul, weight in zip(site.matmuls, _weights(site)):
        _set_input(graph, matmul, 1, weight * scale[:, None], f"{matmul.inputs[1].name}_smoothed")
    # its statistics change: a new name, so none cached for the old one are reused
    site.value.name = _unused_value_name(graph, f"{site.value.name}_smoothed")
    return {"smoothed": site.value.name, "channels": int(scale.size),
            "outlier_ratio": round(outlier_ratio(activation_max), 2), "max_scale": round(float(scale.max()), 4),
            "matmuls": [m.name for m in site.matmuls]}


def _weights(site: Site) -> list[np.ndarray]:
    # no copy of float32 weights: this runs during calibration, between two batches
    return [np.asarray(ir.convenience.get_const_tensor(m.inputs[1]).numpy(), dtype=np.float32) for m in site.matmuls]


def _unused_value_name(graph: ir.Graph, base: str) -> str:
    taken = {v.name for v in graph.inputs} | set(graph.initializers)
    taken |= {v.name for node in ir.traversal.RecursiveGraphIterator(graph) for v in node.outputs}
    name, count = base, 1
    while name in taken:
        name, count = f"{base}_{count}", count + 1
    return name


def _set_input(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, name: str) -> None:
    base, count = name, 1
    while name in graph.initializers:
        name, count = f"{base}_{count}", count + 1
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.FLOAT),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    node.replace_input_with(index, value)
