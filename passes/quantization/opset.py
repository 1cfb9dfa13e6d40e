"""Explicit opset upgrade for per-channel weights: per-axis DequantizeLinear needs opset 13.

Paddle exports (PP-OCR) are opset 11/12; with one scale per weight tensor their int8 weights
lose most of the small output channels (PP-OCRv4 rec: output cosine 0.69 per-tensor, 0.95
per-channel). The upgrade goes through onnx's version converter (Split/Squeeze/Unsqueeze/Reduce
axes become inputs, etc.), tensor names are kept; the pass reports it. The graph inputs and
outputs keep their declared types and shapes (the converter writes what it infers into them: a
``p2o.DynamicDimension.1`` the graph fixes became 10, and the pass was rolled back for changing
the model's outputs). Upsample and Resize-10 keep their arithmetic: the converter's Resize-11 took
opset 11's defaults (half_pixel), while those ops compute asymmetric coordinates and, for nearest,
floor when upsampling (ceil when downsampling); a nearest resize whose direction is not known from
constant scales is not converted. When the converter cannot handle the model, the caller falls
back to per-tensor weights and says why.

A model with hard-swish written as ``x * HardSigmoid(x)`` (PP-LCNet: PP-OCRv4) goes to opset 14
instead and the pattern becomes one HardSwish: in the quantized model ORT duplicated the
DequantizeLinear of ``x`` for its two float readers (HardSigmoid and Mul); HardSwish reads it
once. Same values (HardSwish is defined as that product), PP-OCRv4 det 5-10% faster (RESULTS.md).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir

from onnxslim.errors import first_line
from onnxslim.passes._contract import declared_io, restore_declared_io
from onnxslim.passes.cleanup.fuse_hard_activations import FuseHardActivations
from onnxslim.passes.quantization.plan import is_hardswish_gate
from onnxslim.proto import external_data_loaded

logger = logging.getLogger(__name__)

PER_CHANNEL_OPSET = 13
HARDSWISH_OPSET = 14
QDQ_OPSET = 10
"""QuantizeLinear / DequantizeLinear exist from opset 10: below it, static quantization needs the upgrade."""


def ir_version_for(opset: int) -> int:
    """The lowest IR version onnx's release table pairs with ``opset`` (13 -> 7): a converted model
    keeps its old IR version otherwise (IR 4 with opset 13), which ORT loads and onnx's checker refuses."""
    versions = [ir_version for _, ir_version, ai_onnx, *_ in onnx.helper.VERSION_TABLE if ai_onnx >= opset]
    return min(versions) if versions else onnx.IR_VERSION


def upgrade_opset(model: ir.Model, target: int = PER_CHANNEL_OPSET) -> str | None:
    """Converts ``model`` (in place) to ``target``; None when done, else why it could not be."""
    current = model.opset_imports.get("", 1)
    legacy = _legacy_resizes(model.graph) if current < 11 <= target else {}
    if unknown := sorted(name for name, rounding in legacy.items() if rounding is None):
        return f"nearest Upsample/Resize with scales that are not constant ({', '.join(map(repr, unknown))})"
    try:
        with external_data_loaded(model):  # the converted copy must not point into the source's folder
            proto = onnx.version_converter.convert_version(ir.serde.serialize_model(model), target)
        converted = ir.serde.deserialize_model(proto)
    except Exception as exc:  # the converter's adapters do not cover every op/opset pair
        return f"onnx's version converter failed ({first_line(exc)[:120]})"
    if (lost := _keep_declared_io(model.graph, converted.graph)) is not None:
        return lost
    _keep_legacy_coordinates(converted.graph, legacy)
    model.graph = converted.graph
    model.ir_version = max(model.ir_version, converted.ir_version, ir_version_for(target))
    logger.info("quantize-static: opset %d -> %d for per-channel int8 weights (explicit conversion)", current, target)
    return None


def _legacy_resizes(graph: ir.Graph) -> dict[str, str | None]:
    """{output name: the nearest_mode it needs at opset 11 ("" for linear; None when unknown)} of
    each Upsample and Resize-10 in ``graph`` (a model below opset 11)."""
    found = {}
    for node in graph:
        if node.op_type not in ("Upsample", "Resize") or node.domain not in ("", "ai.onnx"):
            continue
        mode = node.attributes.get("mode")
        if mode is not None and mode.value != "nearest":
            found[node.outputs[0].name] = ""
            continue
        scales = node.attributes.get("scales")  # Upsample-7 has it as an attribute
        if scales is not None:
            values = np.asarray(scales.value, dtype=np.float32)
        else:
            tensor = ir.convenience.get_const_tensor(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
            values = tensor.numpy() if tensor is not None else None
        up = values is not None and values.size > 0 and bool((values >= 1).all())
        down = values is not None and values.size > 0 and bool((values <= 1).all())
        found[node.outputs[0].name] = "floor" if up else "ceil" if down else None
    return found


def _keep_legacy_coordinates(graph: ir.Graph, legacy: dict[str, str]) -> None:
    """Sets the converted Resize nodes' coordinate attributes to what the source ops computed."""
    for node in graph:
        if node.op_type == "Resize" and node.outputs[0].name in legacy:
            node.attributes["coordinate_transformation_mode"] = ir.AttrString("coordinate_transformation_mode", "asymmetric")
            if rounding := legacy[node.outputs[0].name]:
                node.attributes["nearest_mode"] = ir.AttrString("nearest_mode", rounding)


def _keep_declared_io(source: ir.Graph, converted: ir.Graph) -> str | None:
    """Gives ``converted``'s inputs and outputs ``source``'s declared types, shapes, doc strings and
    metadata, and the graph its name, doc string and metadata (the converter infers shapes into the
    outputs and drops metadata); why not, when the inputs or outputs are not the same names."""
    pairs = [*zip(source.inputs, converted.inputs), *zip(source.outputs, converted.outputs)]
    if (len(source.inputs), len(source.outputs)) != (len(converted.inputs), len(converted.outputs)) or \
            any(old.name != new.name for old, new in pairs):
        return "onnx's version converter changed the graph's inputs or outputs"
    restore_declared_io(converted, declared_io(source))
    for old, new in pairs:
        new.doc_string = old.doc_string
        new.metadata_props.clear()
        new.metadata_props.update(old.metadata_props)
    converted.name, converted.doc_string = source.name, source.doc_string
    converted.metadata_props.clear()
    converted.metadata_props.update(source.metadata_props)
    return None


def per_channel_opset(model: ir.Model, per_channel: bool, allowed: bool) -> list[dict]:
    """Upgrades ``model`` when per-channel weights or QDQ itself need it and ``allowed``; the report
    rows. A row with ``declined`` means the model cannot hold QDQ at all (opset < 10, not upgraded).

    An opset-13 model whose hard-swish is written ``x * HardSigmoid(x)`` (paddle2onnx's PicoDet) is
    upgraded to 14 too, when ``allowed``, for the one HardSwish op: ORT then dequantizes x once
    instead of once per reader (PicoDet all int8: 1.06x -> 1.14x float's speed, same F1)."""
    old = model.opset_imports.get("", 1)
    if old >= (PER_CHANNEL_OPSET if per_channel else QDQ_OPSET):
        return _hardswish_opset(model, old) if allowed and old < HARDSWISH_OPSET else []
    if not allowed:
        why = "upgrade_opset is off"
        return [_per_tensor_or_declined(old, why if old < QDQ_OPSET else f"per-channel needs opset 13; {why}")]
    hardswish = any(is_hardswish_gate(node) for node in model.graph)
    target = HARDSWISH_OPSET if hardswish else PER_CHANNEL_OPSET
    failed = upgrade_opset(model, target)
    if failed:
        return [_per_tensor_or_declined(old, failed)]
    if not hardswish:
        return [{"opset_converted": f"{old} -> {target}", "why": "per-channel int8 weights"}]
    fused = FuseHardActivations()(model).stats.get("fused", 0)
    return [{"opset_converted": f"{old} -> {target}", "why": f"per-channel int8 weights; {fused} x * HardSigmoid(x) -> HardSwish"}]


def _hardswish_opset(model: ir.Model, old: int) -> list[dict]:
    """The rows of upgrading a model that already holds per-channel QDQ, for its hard-swish gates."""
    if not any(is_hardswish_gate(node) for node in model.graph):
        return []
    failed = upgrade_opset(model, HARDSWISH_OPSET)
    if failed:  # the model is as it came: the gates stay two ops, and quantize as such
        return [{"opset": old, "hardswish": f"kept as x * HardSigmoid(x): {failed}"}]
    fused = FuseHardActivations()(model).stats.get("fused", 0)
    return [{"opset_converted": f"{old} -> {HARDSWISH_OPSET}", "why": f"{fused} x * HardSigmoid(x) -> HardSwish"}]


def _per_tensor_or_declined(opset: int, why: str) -> dict:
    if opset < QDQ_OPSET:
        return {"opset": opset, "declined": f"QuantizeLinear needs opset {QDQ_OPSET} ({why})"}
    return {"opset": opset, "weights": f"per-tensor ({why})"}
