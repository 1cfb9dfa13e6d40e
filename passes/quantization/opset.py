"""Explicit opset upgrade for per-channel weights: per-axis DequantizeLinear needs opset 13.

Paddle exports (PP-OCR) are opset 11/12; with one scale per weight tensor their int8 weights
lose most of the small output channels (PP-OCRv4 rec: output cosine 0.69 per-tensor, 0.95
per-channel). The upgrade goes through onnx's version converter (Split/Squeeze/Unsqueeze/Reduce
axes become inputs, etc.), tensor names are kept; the pass reports it. When the converter
cannot handle the model, the caller falls back to per-tensor weights and says why.
"""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir

from onnxslim.errors import first_line

logger = logging.getLogger(__name__)

PER_CHANNEL_OPSET = 13


def upgrade_opset(model: ir.Model, target: int = PER_CHANNEL_OPSET) -> str | None:
    """Converts ``model`` (in place) to ``target``; None when done, else why it could not be."""
    current = model.opset_imports.get("", 1)
    try:
        proto = onnx.version_converter.convert_version(ir.serde.serialize_model(model), target)
        converted = ir.serde.deserialize_model(proto)
    except Exception as exc:  # the converter's adapters do not cover every op/opset pair
        return f"onnx's version converter failed ({first_line(exc)[:120]})"
    model.graph = converted.graph
    model.ir_version = max(model.ir_version, converted.ir_version)
    logger.warning("quantize-static: opset %d -> %d for per-channel int8 weights (explicit conversion)", current, target)
    return None


def per_channel_opset(model: ir.Model, per_channel: bool, allowed: bool) -> list[dict]:
    """Upgrades ``model`` when per-channel weights need it and ``allowed``; the report rows."""
    old = model.opset_imports.get("", 1)
    if not per_channel or old >= PER_CHANNEL_OPSET:
        return []
    if not allowed:
        return [{"opset": old, "weights": "per-tensor (per-channel needs opset 13; upgrade_opset is off)"}]
    failed = upgrade_opset(model)
    if failed:
        return [{"opset": old, "weights": f"per-tensor: {failed}"}]
    return [{"opset_converted": f"{old} -> {PER_CHANNEL_OPSET}", "why": "per-channel int8 weights"}]
