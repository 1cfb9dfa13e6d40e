"""float16 weights and activations for GPU targets, float32 kept at the graph boundary."""

from __future__ import annotations

import dataclasses
import logging

import onnx
import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import refusal
from onnxslim.passes._contract import declared_io, restore_declared_io
from onnxslim.passes._names import Names
from onnxslim.passes.quantization.fp16_constants import own_float_constants
from onnxslim.passes.quantization.fp16_ort_crashes import crashing_nodes
from onnxslim.passes.quantization.fp16_range import FLOAT16_MAX, RANGE_HEADROOM, out_of_range_nodes
from onnxslim.passes.quantization.ort_tools import float_weight_bytes, in_scratch_folder, replace_contents, to_proto

logger = logging.getLogger(__name__)

RISKY_OPS = ("Exp", "Pow", "ReduceSum", "ReduceProd", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
             "Reciprocal", "Log", "Sqrt")
"""Kept float32 besides onnxruntime's own block list (NMS, TopK, Range, CumSum, Min/Max...):
ops whose float16 result over- or underflows easily (sums of many terms, exponentials)."""


@dataclasses.dataclass(frozen=True)
class ConvertFp16Config:
    keep_float: tuple[str, ...] = RISKY_OPS
    """Op types or node names that stay float32 (Casts are inserted around them)."""

    def __post_init__(self):
        if isinstance(self.keep_float, str):
            object.__setattr__(self, "keep_float", tuple(s.strip() for s in self.keep_float.split(",") if s.strip()))


class ConvertFp16(Pass):
    """Store weights and run activations in float16, keeping float32 graph inputs and outputs.

    Before: float32 initializers and ops. After: float16 initializers and ops, a Cast to float16
    after each float32 graph input and a Cast to float32 before each float32 graph output (the
    application's input/output contract is unchanged), Casts around ops kept float32
    (onnxruntime's block list plus ``keep_float``; readers of one value share one Cast). The graph
    inputs' and outputs' shapes are the source's. Wraps
    ``onnxruntime.transformers.float16.convert_float_to_float16`` (keep_io_types=True).
    Meant for GPU execution providers: ONNX Runtime's CPU EP runs most float16 ops by casting
    back to float32, so on CPU the model is smaller but not faster. Already-quantized or
    already-float16 models are left unchanged.
    """

    name = "convert-fp16"
    Config = ConvertFp16Config
    lossy = True
    isolated_check = True  # ONNX Runtime's CPU optimizers have crashed on float16 graphs

    def call(self, model: ir.Model) -> PassResult:
        reason = refusal(model) or _already_half(model) or _unconvertible_outputs(model)
        if reason:
            logger.info("convert-fp16: %s; model left unchanged", reason)  # the details warning reaches the user
            return PassResult(model, modified=False, stats={"skipped": 1},
                              details=[{"skipped": reason}, {"warning": f"model left as it was: {reason}"}])
        before = float_weight_bytes(model, ir.DataType.FLOAT)
        if before == 0 and not any(_float_constant(node) for node in model.graph):
            return PassResult(model, modified=False, details=[{"skipped": "no float32 weights"}])
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        # a local function's body is not converted (its float32 Constants stayed float32 beside inputs made
        # float16: ORT refused the model and the pass was rolled back): calls keep float32, with Casts around
        functions = {name for _, name, _ in model.functions}
        # converted, these would be refused by ORT and the whole pass rolled back (Celu, IsInf < opset 20)
        no_half = _ops_without_float16(model)
        blocked_ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(self.config.keep_float) | functions | no_half)  # a node name here is harmless
        out_of_range = {**out_of_range_nodes(model, self.context.calibration), **crashing_nodes(model)}
        names = Names(model.graph)
        for node in out_of_range:
            node.name = node.name or names.fresh("onnxslim_fp16_kept")  # the converter blocks nodes by name
        blocked_nodes = [node.name for node in model.graph if node.name in self.config.keep_float or node in out_of_range]
        if (reason := _blocked_in_branch(model, set(blocked_ops), set(blocked_nodes))) is not None:
            return PassResult(model, modified=False, stats={"skipped": 1},
                              details=[{"skipped": reason}, {"warning": f"model left float32: {reason}"}])
        declared = declared_io(model.graph)
        unmatched = _unmatched_keep_float(model, self.config.keep_float)  # before the converter renames
        with in_scratch_folder():
            converted = convert_float_to_float16(_converter_input(model), keep_io_types=True,
                                                 op_block_list=blocked_ops, node_block_list=blocked_nodes)
        merged = _merge_duplicate_casts(converted.graph)
        replace_contents(model, _retyped(converted))
        restore_declared_io(model.graph, declared)  # shape inference wrote a symbolic batch as 1
        removed = merged + _tidy_casts(model.graph)
        reasons = {node.name: reason for node, reason in out_of_range.items()}
        kept = [{"node": n.name, "op": n.op_type,
                 "kept_float32": reasons.get(n.name) or _kept_reason(n.op_type, functions, no_half, model)}
                for n in model.graph if n.op_type in blocked_ops or n.name in blocked_nodes]
        unchecked = [] if self.context.calibration is not None else [{
            "note": f"float16 range not checked: give --calibration-data to keep float32 the nodes whose values "
                    f"reach {FLOAT16_MAX / RANGE_HEADROOM:g}"}]
        after = float_weight_bytes(model, ir.DataType.FLOAT) + float_weight_bytes(model, ir.DataType.FLOAT16)
        casts = sum(node.op_type == "Cast" for node in model.graph)
        return PassResult(model, modified=True, details=unmatched + kept + unchecked,
                          stats={"bytes_saved": before - after, "nodes_kept_float32": len(kept), "casts": casts,
                                 "casts_removed": removed})


def _float_constant(node: ir.Node) -> bool:
    """A Constant node holding float32 weights (Paddle exports); an int64 shape constant is none:
    a model of such alone was converted into two Casts around its float ops, for nothing."""
    if node.op_type != "Constant":
        return False
    if "value_float" in node.attributes or "value_floats" in node.attributes:
        return True
    value = node.attributes.get("value")
    return value is not None and value.type == ir.AttributeType.TENSOR and value.value.dtype == ir.DataType.FLOAT


def _unmatched_keep_float(model: ir.Model, keep_float: tuple[str, ...]) -> list[dict]:
    """A details warning per ``keep_float`` entry naming no node and no op type (``softmax`` for
    Softmax kept nothing float without a word); the default entries may match nothing."""
    known = {n.name for n in model.graph.all_nodes()} | {n.op_type for n in model.graph.all_nodes()}
    return [{"warning": f"--fp16-keep-float {entry!r} matches no node name or op type in the model"}
            for entry in keep_float if entry not in known and entry not in RISKY_OPS]


def _blocked_in_branch(model: ir.Model, blocked_ops: set[str], blocked_nodes: set[str]) -> str | None:
    """Why the converter would break a control-flow node, or None: it puts the Casts around an op it
    keeps float32 inside an If/Loop/Scan branch into the main graph, where the branch's values do
    not exist (the checker then refused the model and the pass was rolled back)."""
    for node in model.graph:
        for attribute in node.attributes.values():
            graphs = [attribute.value] if attribute.type == ir.AttributeType.GRAPH else \
                list(attribute.value) if attribute.type == ir.AttributeType.GRAPHS else []
            for branch in graphs:
                for inner in ir.traversal.RecursiveGraphIterator(branch):
                    if inner.op_type in blocked_ops or inner.name in blocked_nodes:
                        return (f"{inner.op_type} inside {node.op_type} node {node.name!r} ({attribute.name}) stays "
                                "float32, and onnxruntime's float16 converter cannot keep an op float32 inside a branch "
                                "(--fp16-keep-float cannot help; the node must be moved out of the branch)")
    return None


def _kept_reason(op_type: str, functions: set[str], no_half: set[str], model: ir.Model) -> str:
    if op_type in functions:
        return "calls a local function (its body stays float32)"
    if op_type in no_half:
        return f"no float16 type in its schema at opset {_opset(model)}"
    return "blocked op type or --fp16-keep-float"


def _opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", onnx.defs.onnx_opset_version()))


def _ops_without_float16(model: ir.Model) -> set[str]:
    """Standard op types in ``model`` (subgraphs too) that read or write a float32 tensor through a
    type constraint that allows float32 but not float16 at the model's opset. Inputs the converter
    keeps float32 on its own (Resize's scales) do not count."""
    opset, found, seen = _opset(model), set(), set()
    always_float = _always_float_inputs(opset)
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.domain not in ("", "ai.onnx") or node.op_type in seen:
            continue
        seen.add(node.op_type)
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            continue
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        kept_float = set(always_float.get(node.op_type, ()))
        inputs, outputs = list(schema.inputs), list(schema.outputs)
        pairs = [(v, inputs[min(i, len(inputs) - 1)]) for i, v in enumerate(node.inputs) if inputs and i not in kept_float]
        pairs += [(v, outputs[min(i, len(outputs) - 1)]) for i, v in enumerate(node.outputs) if outputs]
        for value, formal in pairs:  # (a variadic last parameter repeats)
            if value is None or (value.dtype is not None and value.dtype != ir.DataType.FLOAT):
                continue
            types = allowed.get(formal.type_str, {formal.type_str})
            if "tensor(float)" in types and "tensor(float16)" not in types:
                found.add(node.op_type)
                break
    return found


def _always_float_inputs(opset: int) -> dict[str, list[int]]:
    """{op type: input indices} onnxruntime's converter keeps float32: its table, with Resize's
    scales at index 1 below opset 11 (no roi there), as the converter itself reads it."""
    from onnxruntime.transformers.float16 import ALWAYS_FLOAT_INPUTS

    table = {op: list(indices) for op, indices in ALWAYS_FLOAT_INPUTS.items()}
    if opset <= 10:
        table["Resize"] = [1]
    return table


def _converter_input(model: ir.Model) -> onnx.ModelProto:
    """The model as the converter should see it: weights inline, and no value_info on initializers.
    onnx-ir writes one per initializer; the converter retypes it to float16 even for an initializer
    it keeps float32 (Resize scales, weights read only by kept-float ops) and then "casts it back"
    before each reader. Inputs it keeps float32 read constants of their own."""
    proto = to_proto(model)
    initializers = {tensor.name for tensor in proto.graph.initializer}
    kept = [info for info in proto.graph.value_info if info.name not in initializers]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    _branch_outputs_from_nodes(proto.graph)
    own_float_constants(proto.graph, _always_float_inputs(_opset(model)))
    return proto


def _branch_outputs_from_nodes(graph: onnx.GraphProto) -> None:
    """Give each If/Loop/Scan branch output that no node of the branch makes (folding leaves a
    branch returning its own initializer or an outer value) an Identity: the converter retypes a
    branch's outputs to float16 but converts an initializer only for a float16 reader, so the If
    yielded float32 into float16 ops and ORT refused the model."""
    for node in graph.node:
        for attribute in node.attribute:
            for branch in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)):
                _branch_outputs_from_nodes(branch)
                made = {name for inner in branch.node for name in inner.output}
                for output in branch.output:
                    if output.name not in made:
                        source, output.name = output.name, f"{output.name}_onnxslim_branch_output"
                        branch.node.append(onnx.helper.make_node("Identity", [source], [output.name]))


def _merge_duplicate_casts(graph: onnx.GraphProto) -> int:
    """Keep one of each set of identical Casts declaring the same output; returns how many were dropped.

    The converter gives each float32 reader of a float16 value (an op kept float32, Resize's scales)
    its own ``Cast(v) -> v_cast_to_fp32``: readers sharing ``v`` (one Resize scales initializer
    shared by YOLOv8's two upsamples, two kept-float ops reading one activation) get the same
    output declared twice, which neither onnx-ir nor ONNX Runtime accepts. The copies compute the
    same value, and every reader already refers to it by that name."""
    first: dict[str, onnx.NodeProto] = {}
    duplicates = []
    for index, node in enumerate(graph.node):
        twin = first.get(node.output[0]) if node.op_type == "Cast" and len(node.output) == 1 else None
        if twin is not None and twin.op_type == "Cast" and twin.input == node.input and twin.attribute == node.attribute:
            duplicates.append(index)
            continue
        for name in node.output:
            first.setdefault(name, node)
    for index in reversed(duplicates):
        del graph.node[index]
    return len(duplicates)


def _retyped(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Types inferred afresh (the converter's value_info follows its own rules, not the graph's),
    nodes in order (it appends the Casts it adds)."""
    model = ir.serde.deserialize_model(proto)
    model.graph.sort()  # it also appends nodes out of order
    proto = ir.serde.serialize_model(model)
    del proto.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(proto)
    except Exception:  # > 2 GB or an op onnx cannot infer: types of intermediates stay unknown
        return proto


def _tidy_casts(graph: ir.Graph) -> int:
    """Drop the converter's redundant Casts; returns how many were removed.

    ``Cast(float32 v, to=float16) -> Cast(to=float32)`` (a float32 op feeding a float32 one or a
    graph output) rounds for nothing: the second Cast reads ``v`` instead. A Cast to its input's
    own type is then removed unless it produces a graph output (whose name must stay).
    """
    for node in graph:
        source = node.inputs[0].producer() if node.op_type == "Cast" else None
        if source is not None and source.op_type == "Cast" and _to(node) == ir.DataType.FLOAT \
                and _to(source) == ir.DataType.FLOAT16 and source.inputs[0].dtype == ir.DataType.FLOAT:
            node.replace_input_with(0, source.inputs[0])
    count = len(graph)
    for node in list(graph):
        if node.op_type == "Cast" and node.inputs[0].dtype == _to(node) and not node.outputs[0].is_graph_output():
            node.outputs[0].replace_all_uses_with(node.inputs[0])
            graph.remove(node, safe=True)
    for node in reversed(list(graph)):  # Casts left without readers
        if node.op_type == "Cast" and not any(v.uses() or v.is_graph_output() for v in node.outputs):
            graph.remove(node, safe=True)
    return count - len(graph)


def _to(node: ir.Node):
    attribute = node.attributes.get("to")
    return ir.DataType(attribute.value) if attribute is not None else None


def _already_half(model: ir.Model) -> str | None:
    if float_weight_bytes(model, ir.DataType.FLOAT16):
        return "model already has float16 weights"
    for node in model.graph:
        to = node.attributes.get("to")
        if node.op_type == "Cast" and to is not None and to.value == ir.DataType.FLOAT16:
            return "model already casts to float16"
    return None


def _unconvertible_outputs(model: ir.Model) -> str | None:
    """ORT's converter keeps float32 outputs by adding a Cast that produces the output's name; for an
    output that is also a graph input or an initializer, that name then has two producers and the
    graph is invalid (the pass used to be rolled back with an opaque deserialization error)."""
    shared = [v.name for v in model.graph.outputs if v.is_graph_input() or v.is_initializer()]
    if not shared:
        return None
    return (f"graph output(s) {', '.join(map(repr, shared))} are also graph inputs or initializers, which "
            "onnxruntime's float16 converter cannot keep float32")
