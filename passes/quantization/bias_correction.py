"""Bias correction: remove the per-channel mean shift that weight rounding adds to Conv/Gemm outputs.

Rounding a weight to int8 changes each output channel's mean by ``sum((W_q - W) * E[x])`` over
its inputs (Nagel et al., "Data-Free Quantization", 2019, section 4.2). ``E[x]``, the mean of
each input channel, comes from one run of the quantized model over a few calibration samples
(the inputs the layer really sees); the int32 bias is lowered by the shift at its own scale.
Zero padding at the borders is ignored (every position counts as carrying the mean).
Only the weights' effect is corrected: activation clipping is the range search's job.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnxslim.passes.quantization.calibrate import run_candidate
from onnxslim.runtime.session import make_session

logger = logging.getLogger(__name__)


def correct_biases(original: ir.Model, quantized: ir.Model, feeds: list[dict]) -> list[dict]:
    """Adjusts the int32 biases of ``quantized`` in place; returns one report row per layer corrected."""
    floats = {node.outputs[0].name: node for node in original.graph if node.outputs}  # output names are kept
    layers = [n for n in quantized.graph
              if _int32_bias(n) is not None and n.outputs[0].name in floats and _weight_dq(n) is not None]
    if not layers:
        return []
    means = _input_means(quantized, layers, feeds)
    rows = []
    for node in layers:
        weight = ir.convenience.get_const_tensor(floats[node.outputs[0].name].inputs[1]).numpy().astype(np.float64)
        error = _dequantized_weight(node) - weight
        shift = _shift(node, error, means[node.inputs[0].name])
        if shift is None:
            continue
        data = _int32_bias(node)
        scale = ir.convenience.get_const_tensor(node.inputs[2].producer().inputs[1]).numpy().astype(np.float64)
        values = data.const_value.numpy().astype(np.float64)
        corrected = np.clip(np.round(values - shift / scale), -(2**31), 2**31 - 1).astype(np.int32)
        data.const_value = ir.tensor(corrected, name=data.name)
        rows.append({"bias_corrected": node.name or node.outputs[0].name, "op": node.op_type, "channels": int(shift.size),
                     "mean_abs_shift": round(float(np.abs(shift).mean()), 6),
                     "mean_abs_bias": round(float(np.abs(values * scale).mean()), 6)})
    logger.info("bias correction on %d layers", len(rows))
    return rows


def _shift(node: ir.Node, error: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """Per output channel, the mean change of the output caused by ``error`` (W_q - W)."""
    if node.op_type == "Conv":
        groups = node.attributes["group"].value if "group" in node.attributes else 1
        per_group = error.shape[1]
        if mean.size != per_group * groups:
            return None
        outputs = error.shape[0] // groups
        grouped = mean.reshape(groups, per_group)[np.arange(error.shape[0]) // outputs]  # [O, Cin/g]
        return np.einsum("oi,oi->o", error.reshape(error.shape[0], per_group, -1).sum(axis=2), grouped)
    transposed = "transB" in node.attributes and node.attributes["transB"].value
    matrix = error if transposed else error.T  # [N, K]
    return matrix @ mean if matrix.shape[1] == mean.size else None


def _int32_bias(node: ir.Node) -> ir.Value | None:
    """The int32 constant behind ``node``'s bias DequantizeLinear, when it has one."""
    if node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 3 or node.inputs[2] is None:
        return None
    dq = node.inputs[2].producer()
    if dq is None or dq.op_type != "DequantizeLinear" or dq.inputs[0].const_value is None:
        return None
    return dq.inputs[0] if dq.inputs[0].const_value.dtype == ir.DataType.INT32 else None


def _weight_dq(node: ir.Node) -> ir.Node | None:
    dq = node.inputs[1].producer()
    return dq if dq is not None and dq.op_type == "DequantizeLinear" and dq.inputs[0].const_value is not None else None


def _dequantized_weight(node: ir.Node) -> np.ndarray:
    dq = _weight_dq(node)
    data = dq.inputs[0].const_value.numpy().astype(np.float64)
    scale = ir.convenience.get_const_tensor(dq.inputs[1]).numpy().astype(np.float64)
    if scale.ndim:
        shape = [1] * data.ndim
        shape[dq.attributes["axis"].value if "axis" in dq.attributes else 1] = -1
        scale = scale.reshape(shape)
    return data * scale


def _input_means(model: ir.Model, layers: list[ir.Node], feeds: list[dict]) -> dict[str, np.ndarray]:
    """Per channel (axis 1 for Conv, last for Gemm), the mean of each layer's activation input."""
    axes = {node.inputs[0].name: (1 if node.op_type == "Conv" else -1) for node in layers}
    graph_inputs = {v.name for v in model.graph.inputs}
    names = [n for n in axes if n not in graph_inputs]
    session = make_session(model, extra_outputs=names)
    totals, counts = dict.fromkeys(axes, 0.0), dict.fromkeys(axes, 0)
    for batch in feeds:
        values = dict(zip(names, run_candidate(session, names, batch)))  # calibration ran these on the float model
        values.update({n: batch[n] for n in axes if n in graph_inputs})
        for name, value in values.items():
            flat = np.moveaxis(np.asarray(value, np.float64), axes[name], 0).reshape(value.shape[axes[name]], -1)
            totals[name] = totals[name] + flat.sum(axis=1)
            counts[name] += flat.shape[1]
    return {n: totals[n] / max(counts[n], 1) for n in axes}
