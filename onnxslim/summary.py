"""What `onnxslim inspect` shows: the model's contract, opsets, ops and weights."""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from onnxslim.core.stats import graph_stats, iter_weights, op_type_counts


def describe_value(value: ir.Value) -> dict[str, Any]:
    shape = None
    if value.shape is not None:
        shape = [d if isinstance(d, int) else d.value for d in value.shape]
    return {"name": value.name, "dtype": value.dtype.name if value.dtype is not None else None, "shape": shape}


def summarize(model: ir.Model, *, top: int = 10) -> dict[str, Any]:
    stats = graph_stats(model)
    by_dtype: dict[str, dict[str, int]] = {}
    weights = []
    for name, tensor in iter_weights(model):
        row = by_dtype.setdefault(tensor.dtype.name, {"params": 0, "bytes": 0})
        row["params"] += tensor.size
        row["bytes"] += tensor.nbytes
        weights.append({"name": name, "dtype": tensor.dtype.name, "shape": list(tensor.shape.numpy()), "bytes": tensor.nbytes})
    weights.sort(key=lambda w: w["bytes"], reverse=True)
    return {
        "inputs": [describe_value(v) for v in model.graph.inputs],
        "outputs": [describe_value(v) for v in model.graph.outputs],
        "opsets": {domain or "ai.onnx": version for domain, version in sorted(model.opset_imports.items())},
        "ir_version": model.ir_version,
        "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p),
        "nodes": stats.nodes,
        "op_types": dict(op_type_counts(model).most_common()),
        "params": stats.params,
        "param_bytes": stats.param_bytes,
        "params_by_dtype": by_dtype,
        "largest_initializers": weights[:top],
    }
