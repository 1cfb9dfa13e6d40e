"""Graph edits for QDQ quantization: QuantizeLinear/DequantizeLinear pairs, int8 weights, int32 biases."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
NUMPY = {"uint8": np.uint8, "int8": np.int8}
NAMES_KEY = "onnxslim.quantization.names"
"""graph.meta key of the names taken so far (filled on first use, dropped by the pass when done)."""
WEIGHTS_KEY = "onnxslim.quantization.weights"
"""graph.meta key of the weights quantized so far that other nodes read too: {(float weight value,
axis): (its DequantizeLinear output, scales)}, so that every reader shares one int8 copy (dropped
by the pass when done, as ``NAMES_KEY``)."""


def activation_params(low: float, high: float, dtype: str, *, symmetric: bool = False) -> tuple[np.float32, np.ndarray]:
    """(scale, zero point) of an affine grid covering ``[low, high]`` (widened to include 0)."""
    qmin, qmax = INT_RANGES[dtype]
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if symmetric:
        bound = max(-low, high)
        scale = bound / ((qmax - qmin) / 2) if bound > 0 else 1.0
        zero = (qmin + qmax + 1) // 2
    else:
        scale = (high - low) / (qmax - qmin) if high > low else 1.0
        zero = int(np.clip(round(qmin - low / scale), qmin, qmax))
    return np.float32(scale), np.array(zero, dtype=NUMPY[dtype])


def weight_params(weight: np.ndarray, axis: int | None) -> np.ndarray:
    """Symmetric int8 scales, one per slice along ``axis`` (or one for the tensor)."""
    magnitude = np.abs(weight.astype(np.float32))
    if axis is None:
        peak = np.array(magnitude.max() if magnitude.size else 0.0)
    else:
        peak = np.moveaxis(magnitude, axis, 0).reshape(weight.shape[axis], -1).max(axis=1)
    return np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)


def _constant(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    # ir.Tensor directly: ir.tensor's input-type dispatch cost 66 us a call, 9x the rest (YOLOv8n: 814 calls)
    value = ir.Value(name=name, const_value=ir.Tensor(np.asarray(array), name=name))
    graph.register_initializer(value)
    return value


def unique_name(graph: ir.Graph, base: str) -> str:
    taken = graph.meta.setdefault(NAMES_KEY, set())
    if not taken:  # node names too: a new node named like an existing one makes the model invalid
        taken.update(graph.initializers)
        taken.update(v.name for v in graph.inputs)
        for node in ir.traversal.RecursiveGraphIterator(graph):
            taken.update(v.name for v in node.outputs if v.name)
            if node.name:
                taken.add(node.name)
    name, index = base, 1
    while name in taken:
        name, index = f"{base}_{index}", index + 1
    taken.add(name)
    return name


def insert_qdq(graph: ir.Graph, value: ir.Value, scale: np.float32, zero: np.ndarray,
               readers: set[ir.Node] | None = None) -> ir.Value:
    """``value -> QuantizeLinear -> DequantizeLinear``; the ``readers`` of ``value`` (all when None) now read the DQ output."""
    base = value.name or "tensor"
    uses = [(user, index) for user, index in value.uses() if readers is None or user in readers]
    scale_v = _constant(graph, unique_name(graph, f"{base}_scale"), np.asarray(scale, np.float32))
    zero_v = _constant(graph, unique_name(graph, f"{base}_zero_point"), zero)
    q = ir.node("QuantizeLinear", [value, scale_v, zero_v], name=unique_name(graph, f"{base}_QuantizeLinear"))
    q.outputs[0].name = unique_name(graph, f"{base}_quantized")
    dq = ir.node("DequantizeLinear", [q.outputs[0], scale_v, zero_v], name=unique_name(graph, f"{base}_DequantizeLinear"))
    dq.outputs[0].name = unique_name(graph, f"{base}_dequantized")
    dq.outputs[0].dtype, dq.outputs[0].shape = ir.DataType.FLOAT, value.shape
    producer = value.producer()
    if producer is None:
        graph.insert_before(graph.node(0), [q, dq])
    else:
        graph.insert_after(producer, [q, dq])
    for user, index in uses:
        user.replace_input_with(index, dq.outputs[0])
    return dq.outputs[0]


def quantize_layer(graph: ir.Graph, node: ir.Node, input_scale: float, per_channel: bool) -> dict:
    """Int8 weight (input 1) and int32 bias (input 2) of a Conv/MatMul/Gemm; its report row.

    A channel whose bias is too large for int32 at ``input_scale * weight_scale`` (a channel with
    weights near 0 and a bias, as batch norm with gamma ~ 0 folds into) gets a coarser weight scale,
    so that its bias fits; a weight another reader quantized first at scales too fine for this bias
    is copied for this reader. A bias of another shape (Gemm's C of ``[M, N]``) stays float."""
    weight = ir.convenience.get_const_tensor(node.inputs[1])
    axis = weight_axis(node, len(weight.shape)) if per_channel else None
    reused = (node.inputs[1], axis) in graph.meta.get(WEIGHTS_KEY, {})
    channels = weight.shape[axis] if axis is not None else None
    bias = _bias_vector(node, channels)
    floor = None if bias is None else np.abs(bias) / (np.float64(input_scale) * BIAS_LIMIT)
    if floor is not None and axis is None:  # one scale for the tensor
        floor = floor.max(initial=0.0)
    shared = graph.meta.get(WEIGHTS_KEY, {}).get((node.inputs[1], axis))
    # a weight another reader quantized first at scales too fine for this bias: a float bias does not
    # help (ORT fuses the node anyway and overflows its own int32 bias), so this reader gets its own copy
    own = shared is not None and bias is not None and not _bias_fits(bias, input_scale, shared[1])
    reused = reused and not own
    scales, raised = quantize_weight(graph, node, 1, axis, floor=floor, own=own)
    row = {"node": node.name, "op": node.op_type, "weight": "per-channel" if axis is not None else "per-tensor",
           "weight_elements": 0 if reused else int(np.prod(weight.shape))}
    if bias is not None and _bias_fits(bias, input_scale, scales):
        quantize_bias(graph, node, 2, input_scale, scales, bias)
        row["bias"] = "int32"
    elif _has_constant_bias(node):  # the copy's scales fit any bias: only a bias of another shape lands here
        row["bias"] = "float: " + ("int32 would overflow at the weight's scale" if bias is not None
                                   else f"shape {list(ir.convenience.get_const_tensor(node.inputs[2]).shape)} is no per-channel vector")
    else:
        row["bias"] = None
    if raised:
        row["weight_scales_raised_for_bias"] = raised
    if own:
        row["weight_copied_for_bias"] = True  # the shared int8 weight's scales were too fine for this bias
    return {**row, **({"weight_shared": True} if reused else {})}


BIAS_LIMIT = 2**31 - 1 - 2**20
"""Largest int32 bias magnitude written, a margin below the type's: the kernel adds the bias to
int32 accumulators (ORT's quantizer also raises weight scales for its biases)."""


def _has_constant_bias(node: ir.Node) -> bool:
    return len(node.inputs) > 2 and node.inputs[2] is not None and ir.convenience.get_const_tensor(node.inputs[2]) is not None


def _bias_vector(node: ir.Node, channels: int | None) -> np.ndarray | None:
    """The constant bias (float64): as it is under a per-tensor weight scale (``channels`` None),
    else one value per output channel, or None when there is none or it varies along another axis
    (Gemm's C of shape [M, N]). A scalar or ``[1, N]`` C adds the same to every row, as the int32
    ``[N]`` vector QGemm takes."""
    if not _has_constant_bias(node):
        return None
    bias = ir.convenience.get_const_tensor(node.inputs[2]).numpy().astype(np.float64)
    if channels is None:
        return bias
    if node.op_type == "Gemm" and bias.size == 1:
        return np.full(channels, bias.reshape(-1)[0])
    if node.op_type == "Gemm" and bias.ndim == 2 and bias.shape[0] == 1:
        bias = bias[0]
    return bias if bias.shape == (channels,) else None


def _bias_fits(bias: np.ndarray, input_scale: float, scales: np.ndarray) -> bool:
    step = np.float64(input_scale) * scales.astype(np.float64)
    return bool(np.all(np.abs(bias) <= BIAS_LIMIT * np.broadcast_to(step, bias.shape) + 0.5 * step.max(initial=0.0)))


def weight_axis(node: ir.Node, rank: int) -> int | None:
    """The output-channel axis of a Conv/Gemm/MatMul weight (None: a batched MatMul weight, per-tensor)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        attr = node.attributes.get("transB")
        return 0 if attr is not None and attr.value else 1
    return 1 if rank == 2 else None


def quantize_weight(graph: ir.Graph, node: ir.Node, index: int, axis: int | None,
                    floor: np.ndarray | float | None = None, *, own: bool = False) -> tuple[np.ndarray, int]:
    """Replaces input ``index`` of ``node`` by ``DequantizeLinear(int8 weight)``; returns the scales
    and how many of them were raised to ``floor`` (per slice, or one value per tensor).

    A weight that other nodes read too (ALBERT's shared layers) is quantized once: its
    DequantizeLinear goes first in the graph, and later readers with the same axis take it, unless
    ``own`` (this reader gets an int8 copy of its own)."""
    source = node.inputs[index]
    done = graph.meta.setdefault(WEIGHTS_KEY, {})
    if (source, axis) in done and not own:
        dequantized, scales = done[source, axis]
        node.replace_input_with(index, dequantized)
        return scales, 0
    weight = ir.convenience.get_const_tensor(source).numpy().astype(np.float32)
    scales = weight_params(weight, axis)
    raised = 0
    if floor is not None:
        wanted = np.maximum(scales, np.asarray(floor, np.float64) * 1.0001).astype(np.float32)
        raised = int(np.count_nonzero(wanted > scales))
        scales = wanted
    shape = [1] * weight.ndim
    if axis is not None:
        shape[axis] = -1
    quantized = np.clip(np.round(weight / scales.reshape(shape)), -127, 127).astype(np.int8)
    shared = len(source.consumers()) > 1 and not own
    dequantized = _dequantize_into(graph, node, index, quantized, scales, np.zeros(scales.shape, np.int8), axis,
                                   first=shared)
    if shared:
        done[source, axis] = dequantized, scales
    return scales, raised


def quantize_operand(graph: ir.Graph, node: ir.Node, index: int, dtype: str,
                     grid: tuple[np.float32, np.ndarray] | None = None) -> None:
    """A constant operand of a quantized Add/Mul/Concat as ``DequantizeLinear(8-bit constant)``, in
    the activations' type (ORT fuses the op only when every input is a DQ): on ``grid`` (scale, zero
    point) when given, else on its own per-tensor grid."""
    value = ir.convenience.get_const_tensor(node.inputs[index]).numpy().astype(np.float32)
    scale, zero = grid if grid is not None else activation_params(float(value.min()), float(value.max()), dtype)
    qmin, qmax = INT_RANGES[dtype]
    quantized = np.clip(np.round(value / scale) + zero.astype(np.int64), qmin, qmax).astype(NUMPY[dtype])
    _dequantize_into(graph, node, index, quantized, np.asarray(scale, np.float32), zero, None)


def quantize_bias(graph: ir.Graph, node: ir.Node, index: int, input_scale: float, weight_scales: np.ndarray,
                  bias: np.ndarray) -> None:
    """``bias`` (input ``index``, as ``_bias_vector`` gives it) as int32 at scale ``input_scale *
    weight_scale`` (what ORT's integer kernels add)."""
    scales = (np.float64(input_scale) * weight_scales.astype(np.float64)).astype(np.float32)
    scales = np.broadcast_to(scales, bias.shape).copy() if weight_scales.size > 1 else scales.reshape(())
    quantized = np.clip(np.round(bias / scales), -(2**31), 2**31 - 1).astype(np.int32)
    axis = 0 if scales.ndim else None
    _dequantize_into(graph, node, index, quantized, scales, np.zeros(scales.shape, np.int32), axis)


def _dequantize_into(graph, node, index, quantized, scales, zeros, axis, *, first: bool = False) -> ir.Value:
    base = node.inputs[index].name or f"{node.name}_input{index}"
    data = _constant(graph, unique_name(graph, f"{base}_quantized"), quantized)
    scale_v = _constant(graph, unique_name(graph, f"{base}_scale"), scales)
    zero_v = _constant(graph, unique_name(graph, f"{base}_zero_point"), zeros)
    attributes = {"axis": axis} if axis is not None and scales.ndim else {}
    dq = ir.node("DequantizeLinear", [data, scale_v, zero_v], attributes, name=unique_name(graph, f"{base}_DequantizeLinear"))
    dq.outputs[0].name = unique_name(graph, f"{base}_dequantized")
    graph.insert_before(graph.node(0) if first else node, [dq])  # first: before every reader
    node.replace_input_with(index, dq.outputs[0])
    return dq.outputs[0]
