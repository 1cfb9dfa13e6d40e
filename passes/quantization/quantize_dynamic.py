"""Dynamic int8 quantization of MatMul/Gemm: int8 weights, activations quantized at run time."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.passes._functions import function_layers_reason
from onnxslim.core.stats import graph_stats
from onnxslim.passes.quantization.common import missing_weight_reason, refused, tensor_dtypes, unmatched_selections
from onnxslim.passes.quantization.embedding import quantize_embeddings
from onnxslim.passes.quantization.plan import is_constant
from onnxslim.passes.quantization.qdq import unique_name, weight_params

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantizeDynamicConfig:
    per_channel: bool = True
    """One int8 scale per output column of the weight (else one per tensor)."""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_elements: int = 0
    """Weights with fewer elements stay float (tiny layers gain nothing)."""
    embeddings: bool = True
    """Large constant Gather tables (token embeddings) become int8 rows with per-row scales (``embedding.py``)."""

    def __post_init__(self):
        if self.min_elements < 0:
            raise ValueError("min_elements must be >= 0")


DYNAMIC_OPSET = 11
"""DynamicQuantizeLinear's first opset. An older model is left float and says so (static
quantization converts the opset; a dynamic run is not worth a converted graph)."""


class QuantizeDynamic(Pass):
    """Replace float MatMul/Gemm with a constant 2-D weight by integer MatMul on run-time-quantized inputs.

    Before: ``y = MatMul(x, W) (+ B)``. After: ``xq, xs, xz = DynamicQuantizeLinear(x)``;
    ``y = Cast(MatMulInteger(xq, Wq int8, xz)) * (xs * w_scale) (+ B)``, which ONNX Runtime's CPU EP
    fuses into one DynamicQuantizeMatMul kernel. Conv is left float: ORT's ConvInteger runs
    slower than float Conv on CPU. Gemm applies when transA=0 and alpha=beta=1.
    """

    name = "quantize-dynamic"
    Config = QuantizeDynamicConfig
    lossy = True

    def call(self, model: ir.Model) -> PassResult:
        if (unchanged := refused(model, self.name)) is not None:
            return unchanged
        if model.opset_imports.get("", 1) < DYNAMIC_OPSET:
            why = f"opset {model.opset_imports.get('', 1)}: DynamicQuantizeLinear needs opset {DYNAMIC_OPSET}"
            return PassResult(model, modified=False, stats={"skipped": 1}, details=[
                {"skipped": why}, {"warning": f"model left float: {why}"}])
        dtypes, before = tensor_dtypes(model), graph_stats(model).param_bytes
        unmatched = unmatched_selections(model, self.config.include, self.config.exclude)
        rows, shared = [], {}
        for node in list(model.graph):
            why = self._reason(node, dtypes)
            if why is None:
                rows.append(_rewrite(model.graph, node, self.config.per_channel, shared))
            elif node.op_type in ("MatMul", "Gemm", "Conv"):
                rows.append({"node": node.name, "op": node.op_type, "kept_float": why})
            elif (inside := function_layers_reason(model, node)) is not None:
                rows.append({"node": node.name, "op": node.op_type, "kept_float": inside})
        if self.config.embeddings:
            rows += quantize_embeddings(model.graph, include=self.config.include, exclude=self.config.exclude)
        done = [r for r in rows if "kept_float" not in r]
        if done:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        saved = before - graph_stats(model).param_bytes
        return PassResult(model, modified=bool(done), details=unmatched + rows,
                          stats={"nodes_quantized": len(done), "bytes_saved": saved, "kept_float": len(rows) - len(done)})

    def _reason(self, node: ir.Node, dtypes) -> str | None:
        config = self.config
        if node.op_type == "Conv":
            return "Conv: ORT's ConvInteger is slower than float Conv on CPU; use --quantize static"
        if node.op_type not in ("MatMul", "Gemm"):
            return "-"
        if node.op_type in config.exclude or node.name in config.exclude:
            return "excluded by --quantize-exclude"
        if config.include and node.op_type not in config.include and node.name not in config.include:
            return "not in --quantize-include"
        if dtypes.get(node.inputs[0].name) != ir.DataType.FLOAT:
            return "input is not float32"
        weight = ir.convenience.get_const_tensor(node.inputs[1]) if is_constant(node.inputs[1]) else None
        if weight is None:
            why = missing_weight_reason(node)
            return "both operands are activations (no weight)" if why == "-" else why
        if len(weight.shape) != 2:
            return "weight is not a 2-D tensor"
        if np.prod(weight.shape) < config.min_elements:
            return f"weight has fewer than {config.min_elements} elements"
        attrs = {k: a.value for k, a in node.attributes.items()}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return "Gemm with transA/alpha/beta"
        return None


def _rewrite(graph: ir.Graph, node: ir.Node, per_channel: bool, shared: dict) -> dict:
    """``shared``: {(float weight, transposed): (int8 weight, scales)} of the weights done so far, so
    that MatMuls reading one weight (ALBERT's shared layers) share one int8 copy."""
    transposed = bool(node.attributes.get("transB") is not None and node.attributes["transB"].value)
    base = node.name or "matmul"
    key = (node.inputs[1], transposed)
    reused = key in shared
    if not reused:
        weight = ir.convenience.get_const_tensor(node.inputs[1]).numpy().astype(np.float32)
        weight = weight.T if transposed else weight
        scales = weight_params(weight, 1 if per_channel else None)
        quantized = np.clip(np.round(weight / scales), -127, 127).astype(np.int8)

    def constant(suffix: str, array: np.ndarray) -> ir.Value:
        name = unique_name(graph, f"{base}_{suffix}")
        value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
        graph.register_initializer(value)
        return value

    def add(op: str, inputs, outputs: int = 1, **attributes) -> ir.Node:
        new = ir.node(op, inputs, attributes or None, num_outputs=outputs, name=unique_name(graph, f"{base}_{op}"))
        graph.insert_before(node, [new])
        return new

    if not reused:
        shared[key] = constant("weight_quantized", quantized), constant("weight_scale", scales)
    weight_q, weight_scale = shared[key]
    dq = add("DynamicQuantizeLinear", [node.inputs[0]], outputs=3)
    product = add("MatMulInteger", [dq.outputs[0], weight_q, dq.outputs[2]])
    as_float = add("Cast", [product.outputs[0]], to=ir.DataType.FLOAT)
    scale = add("Mul", [dq.outputs[1], weight_scale])
    result = add("Mul", [as_float.outputs[0], scale.outputs[0]])
    output = result.outputs[0]
    if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
        output = add("Add", [output, node.inputs[2]]).outputs[0]
    old = node.outputs[0]
    name = old.name
    if old.dtype is not None:
        output.dtype, output.shape = old.dtype, old.shape
    old.replace_all_uses_with(output, replace_graph_outputs=True)
    graph.remove(node, safe=True)
    old.name, output.name = None, name  # the graph output keeps its name
    return {"node": base, "op": node.op_type, "weight": "per-channel" if per_channel else "per-tensor",
            "weight_elements": 0 if reused else int(weight_q.const_value.size), **({"weight_shared": True} if reused else {})}
