"""Calls of ONNX local functions: the passes rewrite the main graph only, so a call whose body holds
weighted layers is reported, not silently passed over (weights reach those layers as call arguments)."""

from __future__ import annotations

import onnx_ir as ir

WEIGHTED = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def function_layers_reason(model: ir.Model, node: ir.Node) -> str | None:
    """Why the weighted layers of the local function ``node`` calls are left alone; None when it calls none."""
    function = model.functions.get((node.domain, node.op_type, getattr(node, "overload", "")))
    if function is None:
        return None
    ops = sorted({inner.op_type for inner in ir.traversal.RecursiveGraphIterator(function)} & WEIGHTED)
    if not ops:
        return None
    return f"calls local function {node.domain}::{node.op_type}, whose {'/'.join(ops)} layers stay as they are (main graph only)"
