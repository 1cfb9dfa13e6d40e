"""Which nodes run in int8, chosen to match ONNX Runtime's CPU QDQ fusions, and why others stay float.

Rules (ORT groups ``DequantizeLinear -> op -> QuantizeLinear`` into one integer kernel):
- compute ops (Conv, MatMul, Gemm) with float32 inputs are quantized; their constant weight
  becomes int8. Conv also needs its output quantized, so a Conv producing a graph output stays float;
- follower ops (Add, Mul, Concat, pools, Sigmoid, LeakyRelu, Resize, reshape-like) are
  quantized only when every activation input already is: otherwise the Q/DQ would cost more
  than the integer kernel saves;
- shape-only ops (MaxPool, Reshape, Transpose, Resize, Split...) reuse their input's scale,
  as ORT drops their Q/DQ only then;
- Relu and Clip(a, b) with a <= 0 <= b after a quantized op are absorbed into its output QuantizeLinear;
- Softmax, normalizations, and the post-processing after the last weighted layer (detection
  heads: box decode, DFL, score/coordinate concat) stay float, and the report says why.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from onnxslim.passes.quantization.detection_head import head_branches, is_feature, post_processing

COMPUTE = {"Conv", "MatMul", "Gemm"}
BINARY = {"Add", "Mul"}
OWN_RANGE = {"AveragePool", "GlobalAveragePool", "Sigmoid", "LeakyRelu", "Concat"}
SHARED = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Resize", "Split"}
ACTIVATIONS = {"Relu", "Clip"}
SENSITIVE = {"Softmax", "LayerNormalization", "InstanceNormalization", "GroupNormalization", "LogSoftmax", "TopK", "NonMaxSuppression"}
FLOAT32 = ir.DataType.FLOAT


@dataclasses.dataclass
class Plan:
    quantized: list[ir.Node] = dataclasses.field(default_factory=list)
    absorbed: dict[ir.Node, ir.Node] = dataclasses.field(default_factory=dict)
    """Relu/Clip node -> the quantized producer whose output QuantizeLinear takes its place."""
    kept_float: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """(node name, why it stays float), only for nodes a user might expect to be quantized."""
    tail: set[ir.Node] = dataclasses.field(default_factory=set)
    """The float post-processing (see ``post_processing``)."""
    branches: set[ir.Node] = dataclasses.field(default_factory=set)
    """Nodes that feed exactly one input of the post-processing (see ``head_branches``)."""
    float_outputs: set[ir.Value] = dataclasses.field(default_factory=set)
    """MatMul outputs read only by float ops: left unquantized, so ORT runs MatMulIntegerToFloat
    (integer product, float result) and the output is never rounded to 8 bits (see ``float_matmul_outputs``)."""

    def quantized_outputs(self, node: ir.Node) -> list[ir.Value]:
        """Outputs of the quantized ``node`` that get a Q/DQ pair (not MaxPool's int64 Indices)."""
        outputs = node.outputs[:1] if node.op_type == "MaxPool" else node.outputs
        return [v for v in outputs if v is not None and not v.is_graph_output() and v not in self.float_outputs]

    def feeds_tail(self, value: ir.Value) -> bool:
        """``value`` is read by the float post-processing: it is, in effect, a model output."""
        return any(consumer in self.tail for consumer in value.consumers())

    def in_head(self, value: ir.Value) -> bool:
        """``value`` is a head output or lies on a branch that only a single head output depends on."""
        return self.feeds_tail(value) or value.producer() in self.branches


TAIL = "post-processing after the last weighted layer (detection head / decode) kept float"
NO_WEIGHTED_LAYER = "no layer with a constant weight (Conv, Gemm, x @ W) in the graph to quantize around"
LEFT_CONSTANT = "constant on the left (W @ x) kept float: int8 weights are laid out for x @ W"
INDEXED_POOL_INPUT = ("computes or pools the input of a MaxPool whose Indices are read (MaxUnpool): on 8-bit "
                      "values neighbours tie and the indices move (SegNet-style block: 13% relative error)")
OVERRIDABLE_WEIGHT = ("weight is also a graph input (an overridable default, as IR 3 and keep_initializers_as_inputs "
                      "exports list every weight): kept float, since the application may feed another")
OVERRIDABLE_BIAS = "bias is also a graph input (an overridable default): kept float, since the application may feed another"


def is_constant(value: ir.Value | None) -> bool:
    """A constant, not an initializer that is also a graph input: the application may feed that one
    (ONNX's overridable defaults, IR >= 4), so baking it into int8 would ignore what it feeds."""
    return value is not None and not value.is_graph_input() and ir.convenience.get_const_tensor(value) is not None


def activation_inputs(node: ir.Node) -> list[ir.Value]:
    """Non-constant float inputs that carry data (not shapes, scales or axes)."""
    count = {"Resize": 1, "Reshape": 1, "Squeeze": 1, "Unsqueeze": 1, "Split": 1, "Clip": 1}.get(node.op_type, len(node.inputs))
    if node.op_type in COMPUTE:
        count = 2
    return [v for v in node.inputs[:count] if v is not None and not is_constant(v)]


def make_plan(graph: ir.Graph, dtypes: dict[str, ir.DataType], *, include: tuple[str, ...] = (),
              exclude: tuple[str, ...] = (), absorb: bool = True, float_tensors: frozenset[str] = frozenset(),
              activation_matmuls: bool = False, constant_operands: bool = False) -> Plan:
    """``float_tensors``: activations kept float (mixed precision): their readers and writers stay float.
    ``activation_matmuls``: also quantize MatMuls of two activations (attention scores and context).
    ``constant_operands``: also quantize Add/Mul with a small constant operand, and HardSigmoid
    (what ORT's quantizer does: faster on PP-LCNet, less accurate; docs/quantization.md)."""
    tail = post_processing(graph)
    plan = Plan(tail=tail, branches=head_branches(graph, tail))
    exact = _indexed_pool_inputs(graph)
    quantized_tensors: set[ir.Value] = set()
    weighted = any(is_feature(node) for node in graph)
    for node in graph:
        reason = _float_reason(node, tail, dtypes, include, exclude, quantized_tensors, activation_matmuls,
                               constant_operands)
        if reason == TAIL and not weighted:  # nothing is "after" a layer then: say why there is none
            reason = NO_WEIGHTED_LAYER
        if reason is None and _touches(node, float_tensors):
            reason = "kept float by sensitivity analysis (mixed precision)"
        if reason is None and _touches(node, exact):
            reason = INDEXED_POOL_INPUT
        if node.op_type in ACTIVATIONS and reason is None and absorb:
            producer = node.inputs[0].producer()
            plan.absorbed[node] = producer
            quantized_tensors.update(node.outputs)
            continue
        if reason is not None:
            if node.op_type in COMPUTE | BINARY | OWN_RANGE | SHARED | SENSITIVE | ACTIVATIONS and reason != "-":
                plan.kept_float.append((node.name or f"{node.op_type} (unnamed)", reason))
            continue
        plan.quantized.append(node)
        quantized_tensors.update(activation_inputs(node))
        quantized_tensors.update(v for v in node.outputs if not v.is_graph_output())
    _drop_dangling_followers(plan)
    plan.float_outputs = float_matmul_outputs(plan)
    return plan


def _indexed_pool_inputs(graph: ir.Graph) -> frozenset[str]:
    """The input of each MaxPool whose Indices output is read, and back through the activations that
    compute it: on values rounded to an 8-bit grid, neighbours tie and the indices move."""
    names: set[str] = set()
    for node in graph:
        if node.op_type == "MaxPool" and _maxpool_indices_read(node):
            value = node.inputs[0]
            while value is not None and value.name not in names:
                names.add(value.name)
                producer = value.producer()
                value = producer.inputs[0] if producer is not None and producer.op_type in ACTIVATIONS else None
    return frozenset(names)


def _maxpool_indices_read(node: ir.Node) -> bool:
    return len(node.outputs) > 1 and node.outputs[1] is not None and bool(node.outputs[1].uses() or node.outputs[1].is_graph_output())


def _constant_operand_ok(node: ir.Node) -> bool:
    """Add/Mul by a per-tensor or per-channel constant small enough for one 8-bit grid (PP-LCNet's
    LearnableAffineBlock ``x * s + b``), which ORT then runs as QLinearMul/QLinearAdd."""
    constants = [ir.convenience.get_const_tensor(v) for v in node.inputs if v is not None and is_constant(v)]
    return len(constants) == 1 and constants[0].size <= 4096


def _drop_dangling_followers(plan: Plan) -> None:
    """Followers that rest on a constant operand (or gates) and whose output no quantized node reads go back to float.

    A Q/DQ pair then buys nothing (the reader dequantizes at once) and only rounds: MiniLM's
    ``MatMul -> Add(bias) -> residual Add -> LayerNorm`` would otherwise re-round every
    projection. Repeats until stable (the residual Add goes first, then the bias Add).
    """
    while True:
        readers = set(plan.quantized) | set(plan.absorbed)
        dangling = [n for n in plan.quantized if (n.op_type == "HardSigmoid" or n.op_type in BINARY | OWN_RANGE | SHARED
                                                  and _rests_on_constant_operand(n, plan))
                    and not any(c in readers for v in n.outputs for c in v.consumers())]
        if not dangling:
            return
        for node in dangling:
            plan.quantized.remove(node)
            plan.kept_float.append((node.name or f"{node.op_type} (unnamed)", "read only by float ops"))


def _has_constant_operand(node: ir.Node) -> bool:
    return node.op_type in BINARY and len(activation_inputs(node)) < 2


def _rests_on_constant_operand(node: ir.Node, plan: Plan) -> bool:
    """``node`` has a constant operand, or reads a quantized follower that has one."""
    producers = (v.producer() for v in node.inputs if v is not None)
    return _has_constant_operand(node) or any(p in plan.quantized and _has_constant_operand(p) for p in producers)


def float_matmul_outputs(plan: Plan) -> set[ir.Value]:
    """Outputs of quantized MatMuls that no quantized node (or absorbed Relu) reads.

    Quantizing them only adds error: their readers dequantize at once. Transformers need this:
    MiniLM's FFN output MatMul has one channel reaching 195 where the median channel stays
    under 1, so any 8-bit grid over the whole tensor wipes out the small channels (embedding
    cosine 0.937 with them quantized, 0.99+ without).
    """
    readers = set(plan.quantized) | set(plan.absorbed)
    return {node.outputs[0] for node in plan.quantized if node.op_type == "MatMul"
            and not node.outputs[0].is_graph_output() and not any(c in readers for c in node.outputs[0].consumers())
            and not _becomes_float_gemm(node)}


def _becomes_float_gemm(matmul: ir.Node) -> bool:
    """A MatMul of 2-D input whose only reader adds a constant: with a float output ORT's
    MatMulAddFusion turns ``DQ(W) -> MatMul -> Add`` into a float Gemm that dequantizes the weight
    at every run (6-18x slower than float on a 512x2000 classifier head); with the output quantized
    it runs QLinearMatMul. The cleanup's fuse-matmul-add makes most of them Gemms first (QGemm).
    Transformers' 3-D Linear layers, and inputs of unknown rank, keep their float outputs."""
    activation = matmul.inputs[0]
    readers = matmul.outputs[0].consumers()
    if activation is None or activation.shape is None or len(activation.shape) != 2 or len(readers) != 1:
        return False
    add = readers[0]
    return add.op_type == "Add" and len(add.inputs) == 2 and any(
        is_constant(v) for v in add.inputs if v is not matmul.outputs[0])


def _touches(node: ir.Node, names: frozenset[str]) -> bool:
    return bool(names) and any(v is not None and v.name in names for v in (*node.inputs, *node.outputs))


def _matches(node: ir.Node, names: tuple[str, ...]) -> bool:
    return node.op_type in names or bool(node.name and node.name in names)


def _float_reason(node, tail, dtypes, include, exclude, quantized, activation_matmuls=False,
                  constant_operands=False) -> str | None:
    """None when ``node`` is quantized; ``"-"`` for ops that never are (not worth a report row)."""
    op = node.op_type
    if op in SENSITIVE:
        return "numerically sensitive op (Softmax/normalization) kept float"
    if op not in COMPUTE | BINARY | OWN_RANGE | SHARED | ACTIVATIONS and not _quantizable_gate(node, constant_operands):
        return "-"
    if _matches(node, exclude):
        return "excluded by --quantize-exclude"
    if include and not _matches(node, include) and op not in ACTIVATIONS:
        return "not in --quantize-include"
    overridable = [i for i, v in enumerate(node.inputs[1:3], 1) if v is not None and v.is_graph_input()
                   and v.const_value is not None] if op in COMPUTE else []
    if overridable:
        return OVERRIDABLE_WEIGHT if overridable[0] == 1 else OVERRIDABLE_BIAS
    if op == "MatMul" and is_constant(node.inputs[0]) and not is_constant(node.inputs[1]):
        return LEFT_CONSTANT
    if op == "MaxPool" and _maxpool_indices_read(node):
        return INDEXED_POOL_INPUT
    if node in tail:
        return TAIL
    inputs = activation_inputs(node)
    if not inputs or any(dtypes.get(v.name) != FLOAT32 for v in inputs):
        floating = any(dtypes.get(v.name) in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE) for v in inputs)
        return f"input is {dtypes.get(inputs[0].name)}, not float32" if floating else "-"
    if op in COMPUTE:
        return _compute_reason(node, activation_matmuls)
    if any(v.is_graph_output() for v in node.outputs):
        return "output is a graph output (kept float to keep the output exact)"
    if op in BINARY and len(inputs) < 2 and not (constant_operands and _constant_operand_ok(node)):
        return "has a constant operand"
    if not all(v in quantized for v in inputs):
        return "-" if op not in ACTIVATIONS else "-"
    if op in ACTIVATIONS:
        return _activation_reason(node)
    return None


def _compute_reason(node: ir.Node, activation_matmuls: bool = False) -> str | None:
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if node.op_type == "MatMul" and not activation_matmuls and not is_constant(weight):
        # Attention's Q.K^T and P.V: both operands re-quantized per call. Float was a few percent
        # faster in every paired run (MiniLM 2.32x -> 2.36x and 1.55x -> 1.60x float speed, vit_tiny
        # 0.87x -> 0.90x and 0.93x -> 0.98x; docs/quantization.md), cosine unchanged.
        return "MatMul of two activations (attention) kept float: no faster in int8 on ONNX Runtime CPU"
    if node.op_type == "Conv":
        if weight is None or not is_constant(weight):
            return "Conv weight is not a constant"
        if node.outputs[0].is_graph_output():
            return "Conv output is a graph output (ORT needs it quantized to fuse)"
    if node.op_type == "Gemm":
        attrs = {k: a.value for k, a in node.attributes.items()}
        # transA is fused (QGemm transposes A itself); alpha and beta are not
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return "Gemm with alpha/beta is not fused by ORT"
        if not is_constant(weight):
            return "Gemm weight is not a constant"
    return None


def _activation_reason(node: ir.Node) -> str | None:
    producer = node.inputs[0].producer()
    if producer is None or producer.op_type not in COMPUTE | BINARY | OWN_RANGE or len(node.inputs[0].uses()) != 1:
        return "-"
    if node.op_type == "Clip":
        low, high = clip_bounds(node)
        # a QuantizeLinear clamps to a range holding 0: Clip(-1, 1) too, not Clip(0.5, 6)
        if low is None or not low <= 0.0 <= high:
            return "-"
    return None


def clip_bounds(node: ir.Node) -> tuple[float | None, float]:
    """A Clip's constant (min, max); min None when it has none or it is not constant, max inf when absent."""
    def bound(index: int) -> float | None:
        value = node.inputs[index] if len(node.inputs) > index else None
        if not is_constant(value):  # an overridable default the application may feed: not a bound
            return None
        tensor = ir.convenience.get_const_tensor(value)
        return None if tensor.size != 1 else float(tensor.numpy().reshape(-1)[0])

    high = bound(2) if len(node.inputs) > 2 and node.inputs[2] is not None else float("inf")
    return bound(1), (float("-inf") if high is None else high)


def _quantizable_gate(node: ir.Node, constant_operands: bool) -> bool:
    """A HardSigmoid that gets its own 8-bit grid (when its input is quantized): squeeze-excitation gates
    ``x * HardSigmoid(conv(pool(x)))``, a [N, C, 1, 1] tensor, so their Mul and what follows (PP-OCRv4's
    RSE-FPN neck: shortcut Adds, Resize, Concat) run in int8: det 3-6% faster, IoU unchanged
    (docs/quantization.md). Hard-swish gates stay float (IoU 0.960 -> 0.942) unless ``constant_operands``."""
    return node.op_type == "HardSigmoid" and (constant_operands or not is_hardswish_gate(node))


def is_hardswish_gate(node: ir.Node) -> bool:
    """``node`` is the HardSigmoid of ``Mul(x, HardSigmoid(x))`` (hard-swish: PP-LCNet, MobileNetV3 below
    opset 14) and that Mul is its only reader. Kept float (quantizing the gate for a QLinearMul cost
    PP-OCRv4 det IoU 0.960 -> 0.942 and gained no speed), ORT duplicates the DequantizeLinear of x
    for its two readers: ``opset.py`` turns the pattern into HardSwish when it converts the opset."""
    readers = node.outputs[0].consumers()
    return (node.op_type == "HardSigmoid" and len(readers) == 1 and readers[0].op_type == "Mul"
            and len(readers[0].inputs) == 2 and set(readers[0].inputs) == {node.inputs[0], node.outputs[0]})


def feeds_only_silu(value: ir.Value) -> bool:
    """``value`` is read only by ``Sigmoid(value)`` and ``Mul(value, Sigmoid(value))`` (SiLU / Swish)."""
    consumers = value.consumers()
    sigmoids = [c for c in consumers if c.op_type == "Sigmoid"]
    if len(sigmoids) != 1 or len(consumers) != 2:
        return False
    (mul,) = [c for c in consumers if c is not sigmoids[0]]
    return mul.op_type == "Mul" and set(mul.inputs) == {value, sigmoids[0].outputs[0]}
