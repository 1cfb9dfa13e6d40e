"""How each op moves channel tracks (see ``_channel_graph``): one handler per kind of op."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.passes.pruning._channel_graph import BINARY, NORM, SPATIAL, UNARY, ChannelGraph, Edit, Slice, Track
from onnxslim.passes.pruning._layers import Layer, weight_skip_reason


def _int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else default


def _positive_axis(track: Track) -> int | None:
    return None if track.rank is None else track.rank + track.axis


def visit_layer(g: ChannelGraph, layer: Layer) -> None:
    """A Conv/Gemm/MatMul: consumer of its input's channels, producer of its output's."""
    node, w = layer.node, layer.array()
    source = g.track(node.inputs[0])
    out = node.outputs[0]
    groups = layer.group
    if layer.kind == "conv" and groups > 1 and groups == w.shape[0] and w.shape[1] == 1:
        _depthwise(g, layer, source)
        return
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if g.track(bias) is not None and not g.prunable(layer):
        # C (Gemm) or B (Conv) computed from pruned channels feeds a layer whose outputs are all kept
        g.block_value(bias.name, f"bias input of {node.op_type} {node.name}, whose channels are kept")
    if source is not None:
        expected = 1 - w.ndim if layer.kind == "conv" else -1
        if source.axis != expected:
            g.block(source.units, f"{node.op_type} {node.name} reads the channels on another axis")
        else:
            g.consumers.append((layer, node.inputs[0].name))
            g.slices.append(Slice(layer.weight, 1 if layer.kind == "conv" or not layer.transposed else 0,
                                  node.inputs[0].name, groups))
            if groups > 1:
                g.constraints.append((node.inputs[0].name, groups))
    if not g.prunable(layer):
        return
    channels = layer.rows().shape[0]
    rank = w.ndim if layer.kind == "conv" else (2 if layer.kind == "gemm" else None)
    g.tracks[out.name] = Track(g.new_units(channels), -1 if layer.kind != "conv" else 1 - w.ndim, rank)
    g.producers[out.name] = layer
    g.slices.append(Slice(layer.weight, 1 if layer.transposed else 0, out.name))
    if groups > 1:
        g.constraints.append((out.name, groups))
    if bias is None:
        return
    shape = g.shape(bias)
    if g.track(bias) is not None:
        _computed_bias(g, node, bias, out.name)
    elif layer.kind == "conv":
        _vector(g, bias, out.name, channels)
    elif bias.const_value is None:
        g.block_value(out.name, f"{node.op_type} {node.name}: C input {bias.name} is computed, its channels are kept")
    elif int(np.prod(shape)) != 1:
        _vector(g, bias, out.name, channels, axis=len(shape) - 1)


def _computed_bias(g: ChannelGraph, node: ir.Node, bias: ir.Value, out: str) -> None:
    """A bias that carries pruned channels itself (a residual ``Gemm(b, W, C=a)``): like the residual
    ``Add(Gemm(b, W), a)`` it is, C's channels and the output's are coupled position by position."""
    source, target = g.tracks[bias.name], g.tracks[out]
    if source.axis != target.axis or len(source.units) != len(target.units):
        reason = f"{node.op_type} {node.name}: bias input {bias.name} broadcasts across the channels"
        g.block(source.units + target.units, reason)
        return
    for a, b in zip(source.units, target.units):
        g.union(a, b)


def _param(g: ChannelGraph, value: ir.Value, source: str, channels: int, block: list[str]) -> bool:
    """Slices a per-channel constant aligned with ``source``'s last ``len(shape)`` axes; blocks when it cannot."""
    shape = g.shape(value)
    track = g.tracks.get(source)
    reason = weight_skip_reason(value)
    if shape is None or track is None:
        reason = reason or "unknown shape"
    elif len(shape) + track.axis < 0 or shape[len(shape) + track.axis] == 1:
        return True  # broadcasts along the channel axis: nothing to slice
    elif shape[len(shape) + track.axis] != channels:
        reason = reason or f"shape {shape} does not match {channels} channels"
    if reason:
        dynamic = value.const_value is None and not value.is_initializer()
        why = f"combined with {value.name}, whose channels are kept" if dynamic else f"parameter {value.name}: {reason}"
        for name in block:
            g.block_value(name, why)
        return False
    g.slices.append(Slice(value, len(shape) + track.axis, source))
    return True


def _vector(g: ChannelGraph, value: ir.Value, source: str, channels: int, axis: int = 0) -> bool:
    """Slices a per-channel parameter (bias, BN statistics) along ``axis``; blocks ``source`` when it cannot."""
    shape = g.shape(value)
    reason = weight_skip_reason(value)
    if reason is None and (shape is None or len(shape) <= axis or shape[axis] != channels):
        reason = f"shape {shape} does not match {channels} channels"
    if reason:
        g.block_value(source, f"parameter {value.name}: {reason}")
        return False
    g.slices.append(Slice(value, axis, source))
    return True


def _depthwise(g: ChannelGraph, layer: Layer, source: Track | None) -> None:
    node = layer.node
    if source is None or source.axis != 1 - layer.array().ndim:
        if source is not None:
            g.block(source.units, f"depthwise {node.name} reads the channels on another axis")
        return
    if not g.prunable(layer):
        # its channels are the ones it reads: keeping them (skip list) means keeping its input's
        g.block(source.units, f"read by depthwise {node.name}, which is not pruned (skip list or last layer)")
        return
    out = node.outputs[0].name
    g.tracks[out] = source
    g.followers.append((layer, out))
    g.slices.append(Slice(layer.weight, 0, out))
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        _vector(g, node.inputs[2], out, len(source.units))
    g.edits.append(Edit(node, "group", [out]))


def unary(g: ChannelGraph, node: ir.Node) -> None:
    source = g.track(node.inputs[0])
    extra = [v for v in node.inputs[1:] if v is not None and v.name in g.tracks]
    if source is None or extra or (node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1].uses()):
        g.block_node(node, f"{node.op_type} {node.name}: unsupported use")
        return
    g.tracks[node.outputs[0].name] = source


def binary(g: ChannelGraph, node: ir.Node) -> None:
    tracked = [g.tracks[v.name] for v in node.inputs if v is not None and v.name in g.tracks]
    first = tracked[0]
    out = node.outputs[0].name
    for other in tracked[1:]:
        if other.axis != first.axis or len(other.units) != len(first.units):
            g.block_node(node, f"{node.op_type} {node.name} combines channels of different layouts")
            return
        for a, b in zip(first.units, other.units):
            g.union(a, b)
    g.tracks[out] = first
    for value in node.inputs:
        if value is not None and value.name not in g.tracks:
            _param(g, value, out, len(first.units), [out])


def norm(g: ChannelGraph, node: ir.Node) -> None:
    source = g.track(node.inputs[0])
    out = node.outputs[0].name
    if source is None or source.rank is None or _positive_axis(source) != 1 or any(o.uses() for o in node.outputs[1:]):
        g.block_node(node, f"{node.op_type} {node.name}: channels not on axis 1")
        return
    g.tracks[out] = source
    for value in node.inputs[1:]:
        if value is not None and not _vector(g, value, out, len(source.units)):
            return


def spatial(g: ChannelGraph, node: ir.Node) -> None:
    source = g.track(node.inputs[0])
    extra = [v for v in node.inputs[1:] if v is not None and v.name in g.tracks]
    sizes = node.inputs[3] if node.op_type == "Resize" and len(node.inputs) > 3 else None
    if (source is None or source.rank is None or _positive_axis(source) != 1 or extra or sizes is not None
            or any(o.uses() for o in node.outputs[1:])):
        g.block_node(node, f"{node.op_type} {node.name}: unsupported use")
        return
    g.tracks[node.outputs[0].name] = source


HANDLERS = {**{op: unary for op in UNARY}, **{op: binary for op in BINARY}, **{op: norm for op in NORM},
            **{op: spatial for op in SPATIAL}}


def handler(op_type: str):
    def register(fn):
        HANDLERS[op_type] = fn
        return fn
    return register


@handler("Concat")
def concat(g: ChannelGraph, node: ir.Node) -> None:
    tracked = [g.tracks[v.name] for v in node.inputs if v is not None and v.name in g.tracks]
    rank = next((t.rank for t in tracked if t.rank is not None), None)
    axis = _int(node, "axis", 0)
    axis = axis - rank if rank is not None and axis >= 0 else axis
    if axis >= 0 or any(t.axis != axis for t in tracked):
        g.block_node(node, f"Concat {node.name}: not along the channel axis")
        return
    units = []
    for value in node.inputs:
        if value.name in g.tracks:
            units += g.tracks[value.name].units
            continue
        shape = g.shape(value)
        size = shape[len(shape) + axis] if shape is not None and len(shape) >= -axis else None
        if not isinstance(size, int) or size <= 0:
            g.block_node(node, f"Concat {node.name}: input {value.name} has an unknown channel count")
            return
        fixed = g.new_units(size)
        g.block(fixed, "fixed channels")
        units += fixed
    g.tracks[node.outputs[0].name] = Track(units, axis, rank)


@handler("Split")
def split(g: ChannelGraph, node: ir.Node) -> None:
    source = g.track(node.inputs[0])
    rank = source.rank
    axis = _int(node, "axis", 0)
    axis = axis - rank if rank is not None and axis >= 0 else axis
    if axis != source.axis:
        if axis >= 0:
            g.block_node(node, f"Split {node.name}: unknown axis")
            return
        for out in node.outputs:
            g.tracks[out.name] = source
        return
    sizes = _split_sizes(g, node, len(source.units))
    if sizes is None:
        g.block_node(node, f"Split {node.name}: split sizes not constant")
        return
    start = 0
    for out, size in zip(node.outputs, sizes):
        g.tracks[out.name] = Track(source.units[start:start + size], source.axis, rank)
        start += size
    g.edits.append(Edit(node, "split", [o.name for o in node.outputs]))


def _split_sizes(g: ChannelGraph, node: ir.Node, total: int) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        value = node.inputs[1].const_value
        return None if value is None else [int(s) for s in value.numpy().ravel()]
    if "split" in node.attributes:
        return [int(s) for s in node.attributes["split"].value]
    count = len(node.outputs)
    return [total // count] * count if total % count == 0 else None


@handler("Flatten")
def flatten(g: ChannelGraph, node: ir.Node) -> None:
    source = g.track(node.inputs[0])
    if _int(node, "axis", 1) != 1 or source.rank is None or _positive_axis(source) != 1:
        g.block_node(node, f"Flatten {node.name}: not a flatten of [N, C, ...] at axis 1")
        return
    _flatten_into(g, node, source)


@handler("Reshape")
def reshape(g: ChannelGraph, node: ir.Node) -> None:
    source = g.track(node.inputs[0])
    target = node.inputs[1].const_value if node.inputs[1] is not None else None
    dims = None if target is None else [int(d) for d in target.numpy().ravel()]
    ok = dims is not None and len(dims) == 2 and source.rank is not None and _positive_axis(source) == 1 and dims[0] != -1
    if not ok or dims[0] not in (0, 1) and _batch(g, node) != dims[0]:
        g.block_node(node, f"Reshape {node.name}: not a flatten of [N, C, ...] into [N, -1]")
        return
    if _flatten_into(g, node, source) and dims[1] != -1:
        g.edits.append(Edit(node, "reshape", [node.outputs[0].name]))


def _batch(g: ChannelGraph, node: ir.Node):
    shape = g.shape(node.inputs[0])
    return shape[0] if shape else None


def _flatten_into(g: ChannelGraph, node: ir.Node, source: Track) -> bool:
    shape = g.shape(node.inputs[0])
    spatial_dims = shape[2:] if shape is not None else None
    if spatial_dims is None or any(not isinstance(d, int) or d <= 0 for d in spatial_dims):
        g.block_node(node, f"{node.op_type} {node.name}: spatial size unknown")
        return False
    repeat = int(np.prod(spatial_dims)) if spatial_dims else 1
    g.tracks[node.outputs[0].name] = Track([u for u in source.units for _ in range(repeat)], -1, 2)
    return True
