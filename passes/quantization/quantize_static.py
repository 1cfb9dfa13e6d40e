"""Static int8 quantization in QDQ form, ranges from streamed calibration."""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.passes.quantization import plan as planning
from onnxslim.passes.quantization.calibrate import collect_statistics
from onnxslim.passes.quantization.common import refusal, tensor_dtypes
from onnxslim.passes.quantization.qdq import activation_params, insert_qdq, quantize_bias, quantize_weight
from onnxslim.passes.quantization.ranges import tensor_range

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantizeStaticConfig:
    method: Literal["minmax", "percentile", "entropy", "mse"] = "percentile"
    """How activation ranges are chosen from the calibration histograms."""
    percentile: float = 99.99
    per_channel: bool = True
    """Per-output-channel int8 weight scales (needs opset >= 13; per-tensor otherwise)."""
    activations: Literal["uint8", "int8"] = "uint8"
    symmetric_activations: bool = False
    include: tuple[str, ...] = ()
    """Only these node names / op types are quantized (all eligible ones when empty)."""
    exclude: tuple[str, ...] = ()
    """Node names / op types kept float."""

    def __post_init__(self):
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")


class QuantizeStatic(Pass):
    """Quantize Conv/MatMul/Gemm and their neighbours to int8 with QuantizeLinear/DequantizeLinear pairs.

    Before: ``x -> Conv(W, B) -> Relu -> MaxPool``. After: ``x -> Q -> DQ -> Conv(DQ(W int8
    per-channel), DQ(B int32)) -> Q -> DQ -> MaxPool -> Q -> DQ`` (Relu absorbed by the uint8
    Q whose zero point is 0), which ONNX Runtime's CPU EP runs as QLinearConv + int8 MaxPool.
    Activation ranges come from the calibration data (``--calibration-data``); which ops stay
    float and why is listed in the details (see ``plan.py`` for the rules).
    """

    name = "quantize-static"
    Config = QuantizeStaticConfig
    lossy = True
    needs_calibration = True

    def call(self, model: ir.Model) -> PassResult:
        reason = refusal(model)
        if reason:
            logger.warning("quantize-static: %s; model left unchanged", reason)
            return PassResult(model, modified=False, stats={"skipped": 1}, details=[{"skipped": reason}])
        graph, config = model.graph, self.config
        plan = planning.make_plan(graph, tensor_dtypes(model), include=config.include, exclude=config.exclude,
                                  absorb=not config.symmetric_activations)
        if not plan.quantized:
            return PassResult(model, modified=False, details=_float_rows(plan))
        stats = self._statistics(model, _range_sources(plan))
        for activation, producer in plan.absorbed.items():
            activation.outputs[0].replace_all_uses_with(producer.outputs[0])
            graph.remove(activation, safe=True)
        params = self._params(plan, stats)
        weights = self._rewrite(graph, plan, params, per_channel=config.per_channel and _opset(model) >= 13)
        ir.passes.common.RemoveUnusedNodesPass()(model)
        details = weights + _float_rows(plan)
        return PassResult(model, modified=True, details=details, stats={
            "nodes_quantized": len(plan.quantized), "activations_absorbed": len(plan.absorbed),
            "tensors_quantized": len(params), "weights_quantized": len(weights), "kept_float": len(plan.kept_float)})

    def _statistics(self, model: ir.Model, tensors: list[str]):
        cache = getattr(self.context, "calibration_cache", None)
        source = describe(self.context.calibration)
        found = cache.lookup(source, tensors) if cache is not None else None
        if found is not None:
            logger.info("calibration statistics reused from the cache (%s)", source)
            return found
        stats, samples = collect_statistics(model, self.context.calibration, tensors)
        if cache is not None:
            cache.store(source, samples, stats)
        return stats

    def _params(self, plan: planning.Plan, stats) -> dict[ir.Value, tuple]:
        """Scale and zero point per quantized tensor, in graph order (shared ops copy their input's).

        Runs after absorbed activations are removed: their producer's output takes their range.
        """
        config, params = self.config, {}
        clip_high = {producer.outputs[0]: _clip_max(act) for act, producer in plan.absorbed.items()}
        source = {producer.outputs[0]: act.outputs[0].name for act, producer in plan.absorbed.items()}

        def own(value: ir.Value):
            low, high = tensor_range(stats[source.get(value, value.name)], config.method, percentile=config.percentile)
            if value in source:
                low, high = 0.0, min(high, clip_high[value])
            return activation_params(low, high, config.activations, symmetric=config.symmetric_activations)

        for node in plan.quantized:
            for value in planning.activation_inputs(node):
                if value not in params:
                    params[value] = own(value)
            for value in (v for v in node.outputs if not v.is_graph_output()):
                shared = node.op_type in planning.SHARED
                params[value] = params[node.inputs[0]] if shared else own(value)
        return params

    def _rewrite(self, graph: ir.Graph, plan: planning.Plan, params, *, per_channel: bool) -> list[dict]:
        rows = []
        for node in plan.quantized:
            if node.op_type in planning.COMPUTE and planning.is_constant(node.inputs[1]):
                rows.append(_quantize_weights(graph, node, params[node.inputs[0]][0], per_channel))
        for value, (scale, zero) in params.items():
            insert_qdq(graph, value, scale, zero)
        return rows


def _quantize_weights(graph: ir.Graph, node: ir.Node, input_scale: float, per_channel: bool) -> dict:
    weight = ir.convenience.get_const_tensor(node.inputs[1])
    axis = _weight_axis(node, len(weight.shape)) if per_channel else None
    scales = quantize_weight(graph, node, 1, axis)
    bias = len(node.inputs) > 2 and node.inputs[2] is not None and planning.is_constant(node.inputs[2])
    if bias and ir.convenience.get_const_tensor(node.inputs[2]).shape == (weight.shape[axis if axis is not None else 0],):
        quantize_bias(graph, node, 2, input_scale, scales)
    elif bias and scales.size == 1:
        quantize_bias(graph, node, 2, input_scale, scales)
    return {"node": node.name, "op": node.op_type, "weight": "per-channel" if axis is not None else "per-tensor",
            "weight_elements": int(np.prod(weight.shape)), "bias": "int32" if bias else None}


def _weight_axis(node: ir.Node, rank: int) -> int | None:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        attr = node.attributes.get("transB")
        return 0 if attr is not None and attr.value else 1
    return 1 if rank == 2 else None


def _clip_max(node: ir.Node) -> float:
    if node.op_type == "Clip" and len(node.inputs) > 2 and node.inputs[2] is not None:
        return float(ir.convenience.get_const_tensor(node.inputs[2]).numpy())
    return float("inf")


def _range_sources(plan: planning.Plan) -> list[str]:
    absorbed = {producer.outputs[0]: act.outputs[0].name for act, producer in plan.absorbed.items()}
    names = []
    for node in plan.quantized:
        names.extend(v.name for v in planning.activation_inputs(node))
        if node.op_type not in planning.SHARED:
            names.extend(absorbed.get(v, v.name) for v in node.outputs if not v.is_graph_output())
    return list(dict.fromkeys(names))


def _float_rows(plan: planning.Plan) -> list[dict]:
    """One row per reason, listing the nodes kept float for it."""
    grouped: dict[str, list[str]] = {}
    for name, reason in plan.kept_float:
        grouped.setdefault(reason, []).append(name)
    return [{"kept_float": reason, "count": len(names), "nodes": names} for reason, names in grouped.items()]


def _opset(model: ir.Model) -> int:
    return model.opset_imports.get("", 1)


def describe(reader) -> str:
    return reader.describe() if hasattr(reader, "describe") else type(reader).__name__
