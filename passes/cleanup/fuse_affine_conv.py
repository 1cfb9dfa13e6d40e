"""A per-channel (or scalar) affine ``x * s + b`` before a convolution, folded into its weights."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import count_nodes
from onnxslim.passes.cleanup.fuse_conv_affine import _per_channel
from onnxslim.passes.cleanup.infer_shapes import inferred_shapes
from onnxslim.passes._constants import fixed_tensor

logger = logging.getLogger(__name__)
_FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16}


@dataclasses.dataclass
class _Affine:
    """``output = source * scale + shift`` per input channel; ``nodes`` are the Mul and/or Add."""

    source: ir.Value
    output: ir.Value
    nodes: list[ir.Node]
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None
    shift_value: ir.Value | None = None


def _constant_operand(node: ir.Node, dtype) -> tuple[ir.Value, ir.Value] | None:
    """(the non-constant input, the constant) of a binary node, or None."""
    if len(node.inputs) != 2 or any(v is None for v in node.inputs):
        return None
    constant = [v for v in node.inputs if fixed_tensor(v) is not None]
    if len(constant) != 1 or constant[0].dtype != dtype:
        return None
    other = node.inputs[1] if node.inputs[0] is constant[0] else node.inputs[0]
    return other, constant[0]


def _match_affine(value: ir.Value, channels: int, rank: int) -> _Affine | None:
    """The affine producing ``value``: ``Add(Mul(x, s), b)``, ``Mul(x, s)`` or ``Add(x, b)``."""
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx") or node.op_type not in ("Add", "Mul") or value.dtype not in _FLOAT_TYPES:
        return None
    operands = _constant_operand(node, value.dtype)
    if operands is None:
        return None
    inner, constant = operands
    vector = _per_channel(constant, channels, rank)
    if vector is None:
        return None
    if node.op_type == "Mul":
        return _Affine(inner, value, [node], scale=vector)
    affine = _Affine(inner, value, [node], shift=vector, shift_value=constant)
    mul = inner.producer()
    if mul is not None and mul.op_type == "Mul" and mul.domain in ("", "ai.onnx") and len(inner.uses()) == 1 \
            and not inner.is_graph_output():
        operands = _constant_operand(mul, value.dtype)
        scale = _per_channel(operands[1], channels, rank) if operands is not None else None
        if scale is not None:
            affine.source, affine.scale, affine.nodes = operands[0], scale, [mul, node]
    return affine


def _zero_padding(conv: ir.Node) -> bool:
    auto_pad = conv.attributes.get_string("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return False
    return auto_pad == "VALID" or not any(conv.attributes.get_ints("pads", []) or [])


def _conv_weights(conv: ir.Node) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(W, B) as arrays when both are constants (B may be absent)."""
    if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or len(conv.inputs) < 2:
        return None
    weight = fixed_tensor(conv.inputs[1])
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    bias_tensor = fixed_tensor(bias) if bias is not None else None
    if weight is None or (bias is not None and bias_tensor is None):
        return None
    return weight.numpy(), (bias_tensor.numpy() if bias_tensor is not None else None)


def _per_weight(vector: np.ndarray, weight: np.ndarray, group: int) -> np.ndarray:
    """An input-channel vector laid out like W ([C_out, C_in / group, 1, ...]): output channel o
    of group g reads input channels g * C_in/group ... (g + 1) * C_in/group - 1."""
    c_out, per_group = weight.shape[:2]
    index = (np.arange(c_out) // (c_out // group))[:, None] * per_group + np.arange(per_group)[None, :]
    return vector[index].reshape((c_out, per_group) + (1,) * (weight.ndim - 2))


def _fold_into(conv: ir.Node, scale: np.ndarray | None, shift: np.ndarray | None) -> None:
    """Conv(x * s + b, W, B) -> Conv(x, W * s, B + sum(W * b)) (``shift`` only when the conv has no padding)."""
    weight, bias = _conv_weights(conv)
    group = conv.attributes.get_int("group", 1)
    dtype = weight.dtype
    new_weight = weight * _per_weight(scale, weight, group) if scale is not None else weight
    new_bias = bias if bias is not None else np.zeros(weight.shape[0], dtype=dtype)
    if shift is not None:
        new_bias = new_bias + (weight * _per_weight(shift, weight, group)).reshape(weight.shape[0], -1).sum(axis=1)
    name = conv.inputs[1].name or conv.name or "w"
    conv.replace_input_with(1, _initializer(conv.graph, f"{name}_affine", new_weight.astype(dtype)))
    if shift is not None or bias is not None:
        if len(conv.inputs) < 3:
            conv.resize_inputs(3)
        conv.replace_input_with(2, _initializer(conv.graph, f"{name}_affine_bias", new_bias.astype(dtype)))


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    while name in graph.initializers:
        name += "_"
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def _plan(affine: _Affine) -> str | None:
    """"full" (all of the affine folds), "scale" (the Mul folds and the Add moves before it: the
    readers pad, and padding a shifted tensor with zeros is not padding the tensor), or None."""
    readers = affine.output.consumers()
    if affine.output.is_graph_output() or not readers or any(_conv_weights(c) is None or c.inputs[0] is not affine.output
                                                              or any(v is affine.output for v in c.inputs[1:]) for c in readers):
        return None
    if affine.shift is None or not np.any(affine.shift) or all(_zero_padding(c) for c in readers):
        return "full"
    if affine.scale is not None and np.all(affine.scale != 0):
        return "scale"
    return None


def _rewrite(graph: ir.Graph, affine: _Affine, mode: str) -> None:
    readers = affine.output.consumers()
    if mode == "full":
        for conv in readers:
            _fold_into(conv, affine.scale, affine.shift)
            conv.replace_input_with(0, affine.source)
        for node in reversed(affine.nodes):
            graph.remove(node, safe=True)
        return
    # x * s + b == (x + b / s) * s: the Add stays (now on x) for the padded readers, the Mul folds.
    mul, add = affine.nodes
    shift = fixed_tensor(affine.shift_value).numpy()
    if shift.size == 1 and np.all(affine.scale == affine.scale[0]):
        moved = shift / affine.scale[0]  # scalars stay scalars, in the constant's own shape
    else:
        moved = (affine.shift / affine.scale).reshape((-1,) + (1,) * (len(affine.source.shape) - 2))
    constant = _initializer(graph, f"{affine.shift_value.name or 'shift'}_over_scale", np.asarray(moved, dtype=shift.dtype))
    for conv in readers:  # unpadded readers take the whole affine and read x itself
        _fold_into(conv, affine.scale, affine.shift if _zero_padding(conv) else None)
        if _zero_padding(conv):
            conv.replace_input_with(0, affine.source)
    add.replace_input_with(list(add.inputs).index(affine.shift_value), constant)
    add.replace_input_with(list(add.inputs).index(mul.outputs[0]), affine.source)
    graph.remove(mul, safe=True)


class FuseAffineConv(Pass):
    """Fold a per-input-channel (or scalar) affine ``x * s + b`` into the Conv(s) that read it.

    Before: ``Conv(Add(Mul(x, s), b), W, B)`` (PP-LCNet's LearnableAffineBlock before a Conv), or
    ``Conv(Mul(x, s), ...)`` / ``Conv(Add(x, b), ...)``. After: ``Conv(x, W * s, B + sum(W * b))``,
    s and b laid out along W's input-channel axis within each group.
    Applies when s and b are constants of the activation's float type that vary only along the
    channel axis, and every reader of the affine's output is a Conv with constant weights (the
    Mul output has no other reader either). A nonzero b folds only into unpadded Convs (zero
    padding of ``x * s + b`` is not ``b`` at the borders); into padded ones the Mul alone folds
    and the Add moves before it as ``x + b / s`` (when s has no zeros; unpadded readers of the
    same affine still take all of it). Run after ``fuse-conv-affine``: an affine between two
    Convs folds exactly, with any padding, into the Conv before it.
    """

    name = "fuse-affine-conv"

    def call(self, model: ir.Model) -> PassResult:
        nodes_before = count_nodes(model)
        folded = partial = 0
        with inferred_shapes(model):  # the channel count of x must be known (no broadcasting into C)
            for conv in [n for n in model.graph if n.op_type == "Conv"]:
                if _conv_weights(conv) is None:
                    continue
                affine = self._match(conv)
                mode = _plan(affine) if affine is not None else None
                if mode is None:
                    continue
                _rewrite(model.graph, affine, mode)
                folded += mode == "full"
                partial += mode == "scale"
        if folded or partial:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        return PassResult(model, modified=bool(folded or partial),
                          stats={"folded": folded, "scales_folded": partial, "nodes_removed": nodes_before - count_nodes(model)})

    @staticmethod
    def _match(conv: ir.Node) -> _Affine | None:
        weight, _ = _conv_weights(conv)
        channels = int(weight.shape[1]) * conv.attributes.get_int("group", 1)
        affine = _match_affine(conv.inputs[0], channels, weight.ndim)
        if affine is None:
            return None
        shape = affine.source.shape
        if shape is None or len(shape) != weight.ndim or shape[1] != channels:
            logger.debug("%s: input channels of %s unknown or broadcast by the affine", conv.name, affine.source.name)
            return None
        return affine
