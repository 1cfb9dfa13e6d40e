"""Helpers shared by the quantization passes: element types of every tensor, models we refuse."""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir

from onnxslim.core.pass_base import PassResult
from onnxslim.core.stats import refusal
from onnxslim.passes.quantization.plan import is_constant
from onnxslim.proto import graph_proto

logger = logging.getLogger(__name__)



def missing_weight_reason(node: ir.Node) -> str:
    """The kept-float reason of a MatMul/Gemm whose second operand is no constant ("-": not a weight layer)."""
    weight, left = node.inputs[1], node.inputs[0]
    if weight.is_graph_input() and ir.convenience.get_const_tensor(weight) is not None:
        return "weight is also a graph input (the application may feed it)"
    if _computed_from_constants(weight):
        return "weight is computed from constants (e.g. Transpose(W)) and was not folded into one"
    if left is not None and (is_constant(left) or _computed_from_constants(left)):
        return "the constant operand is on the left (only a right-hand weight is quantized)"
    return "-"


def _computed_from_constants(value: ir.Value) -> bool:
    """Whether ``value`` is computed by ops whose inputs are all constants (an unfolded weight)."""
    producer = value.producer()
    if producer is None or not producer.inputs:
        return False
    return all(v is not None and (is_constant(v) or _computed_from_constants(v)) for v in producer.inputs)


def unmatched_selections(model: ir.Model, include: tuple[str, ...], exclude: tuple[str, ...]) -> list[dict]:
    """A details warning per ``include`` / ``exclude`` entry that names no node and no op type of
    ``model``: a misspelt name would otherwise select nothing without a word."""
    known = {n.name for n in model.graph.all_nodes()} | {n.op_type for n in model.graph.all_nodes()}
    return [{"warning": f"--quantize-{flag} {entry!r} matches no node name or op type in the model"}
            for flag, entries in (("include", include), ("exclude", exclude)) for entry in entries if entry not in known]


def refused(model: ir.Model, pass_name: str) -> PassResult | None:
    """An unchanged result saying why, when the model must not be quantized (again); else None."""
    reason = refusal(model)
    if not reason:
        return None
    logger.info("%s: %s; model left unchanged", pass_name, reason)  # the details warning reaches the user
    return PassResult(model, modified=False, stats={"skipped": 1},
                      details=[{"skipped": reason}, {"warning": f"model left as it was: {reason}"}])


def tensor_dtypes(model: ir.Model) -> dict[str, ir.DataType]:
    """Element type of every named tensor, from onnx's type inference on a copy of the model
    (skipped when every value already carries its type, as after the cleanup pipeline's shape inference)."""
    values = [*model.graph.inputs, *model.graph.initializers.values(), *(v for node in model.graph for v in node.outputs)]
    if all(v.dtype is not None for v in values if v.name):
        return {v.name: v.dtype for v in values if v.name}
    proto = graph_proto(model)
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # inference is best effort; unknown types are simply not quantized
        pass
    graph = proto.graph
    types = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = ir.DataType(info.type.tensor_type.elem_type)
    for init in graph.initializer:
        types[init.name] = ir.DataType(init.data_type)
    for node in model.graph:
        for value in node.outputs:
            if value.dtype is not None:
                types.setdefault(value.name, value.dtype)
    return types
