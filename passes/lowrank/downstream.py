"""Which output errors of a layer matter: its consumers, found in the graph.

Whitening makes each split layer minimize its own output error ``||X (W - A)||`` with every
output column counted alike. For a layer whose output is only read through another linear map
that is the wrong metric; ``||X (W - A) M^(1/2)||`` with an output metric M (N x N) from the
consumers is the right one. Recognized here, for ``X @ W`` layers (``matmul_right``):

- ``value``: ``y -> [Add/Mul/Div/Sub by a constant, Reshape, Transpose]* -> MatMul(P, .)``
  with y's last axis kept last (attention probabilities mix tokens, not features), then back
  through Transpose/Reshape (heads merged in their split order) to another split weight
  ``W_o``: the error reaches the graph through ``W_o`` alone, ``M = W_o W_o^T``.
- ``query`` / ``key``: the same chain reaching ``MatMul(Q, K^T)``, y's last axis split into
  heads: ``M`` = block-diagonal over heads of the other side's Gram ``E[k_h k_h^T]`` (keys for a
  query projection, centered per sentence: softmax ignores a logit shift shared by all keys;
  queries for a key projection), measured on calibration data.
- ``ffn``: ``y -> [Add by a constant]* -> h -> f (elementwise ops only) -> a -> a @ W_2`` with
  W_2 a split weight: ``M = (W_2 W_2^T) o E[f'(h) f'(h)^T]`` (``o``: elementwise product; f' by
  central differences of the elementwise subgraph, measured on calibration data).

Anything else keeps the identity metric.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir
from onnxslim.passes.lowrank.sites import Group

_SCALE_OPS = {"Add", "Sub", "Mul", "Div"}
_SHAPE_OPS = {"Reshape", "Transpose", "Identity"}
_MAX_REGION = 64
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Erf", "Tanh", "Sigmoid", "Relu", "Gelu", "Exp", "Pow", "Sqrt",
               "Neg", "Abs", "LeakyRelu", "Elu", "Selu", "Softplus", "HardSigmoid", "HardSwish", "Clip", "Cast"}


@dataclasses.dataclass
class Link:
    role: str
    """``value``, ``query``, ``key`` or ``ffn``."""
    tap: str = ""
    """Tensor whose statistics give the metric: the other attention operand (query / key), h (ffn)."""
    head_axis: int = 1
    """Axis of the heads in ``tap`` (query / key); the head's features are on the other non-token axis."""
    partner: int | None = None
    """Index of the consumer weight's group (value: W_o; ffn: W_2)."""
    nodes: list[ir.Node] = dataclasses.field(default_factory=list)
    """ffn: the elementwise nodes from h to a, in graph order."""
    output: str = ""
    """ffn: the name of a (the input of W_2)."""


def _const(value: ir.Value | None) -> bool:
    return value is not None and not value.is_graph_input() and ir.convenience.get_const_tensor(value) is not None


def _affine(node: ir.Node) -> bool:
    """Add / Sub of a constant, or Mul / Div by a scalar constant."""
    if node.op_type not in _SCALE_OPS or len(node.inputs) != 2:
        return False
    constants = [ir.convenience.get_const_tensor(v) for v in node.inputs if _const(v)]
    if len(constants) != 1:
        return False
    return node.op_type in ("Add", "Sub") or constants[0].size == 1


def _consumers(value: ir.Value) -> list[ir.Node]:
    return [u.node for u in value.uses() if u.node.op_type != "Shape"]


def _follow(value: ir.Value, axes: list[str]) -> tuple[ir.Value, ir.Node | None, list[str]]:
    """Walks single-consumer Reshape / Transpose / bias (Add, Sub by a constant) / scale (Mul, Div by a
    scalar constant) nodes from ``value``; ``axes`` names its axes ("feature", after a head split
    "head" and "dim", "" for the others; empty: stop at any Reshape or Transpose). Returns (last
    value, the node that reads it when there is exactly one, the axes there)."""
    while not value.is_graph_output():
        consumers = _consumers(value)
        if len(consumers) != 1:
            return value, None, axes
        node = consumers[0]
        if _affine(node):
            pass
        elif not axes and node.op_type in _SHAPE_OPS - {"Identity"}:
            return value, None, axes
        elif node.op_type == "Reshape" and node.inputs[0] is value:
            axes = _reshaped(node, axes)
            if axes is None:
                return value, None, []
        elif node.op_type == "Transpose":
            perm = list(node.attributes.get_ints("perm", []))
            if len(perm) != len(axes):
                return value, None, []
            axes = [axes[p] for p in perm]
        elif node.op_type != "Identity":
            return value, node, axes
        value = node.outputs[0]
    return value, None, axes


def _reshaped(node: ir.Node, axes: list[str]) -> list[str] | None:
    """Axis names after a Reshape that splits the feature axis into (head, dim) or merges them back;
    None for any other Reshape. Needs the input's rank (``axes``) and the target's length."""
    target = _target_length(node.inputs[1])
    if target is None:
        return None
    if axes[-1] == "feature" and target == len(axes) + 1:
        return axes[:-1] + ["head", "dim"]
    if axes[-2:] == ["head", "dim"] and target == len(axes) - 1:
        return axes[:-2] + ["feature"]
    return None


def _target_length(shape: ir.Value | None) -> int | None:
    if shape is None:
        return None
    tensor = ir.convenience.get_const_tensor(shape)
    if tensor is not None:
        return int(tensor.size)
    producer = shape.producer()
    if producer is not None and producer.op_type == "Concat":  # dynamic shapes: one element per input
        sizes = [ir.convenience.get_const_tensor(v) for v in producer.inputs]
        lengths = [1 if t is None else int(t.size) for t in sizes]  # Unsqueeze'd scalars count one
        return sum(lengths)
    return None


def find_links(graph: ir.Graph, groups: list[Group], rank: int = 3) -> dict[int, Link]:
    """Consumer relation of each group that has one (index -> Link); ``rank``: the activations'
    rank (3 for [batch, seq, feature]), needed to track axes through the head split."""
    by_node = {id(use.node): (i, use) for i, g in enumerate(groups) for use in g.uses}
    links: dict[int, Link] = {}
    for i, group in enumerate(groups):
        if len(group.uses) != 1 or group.uses[0].kind != "matmul_right":
            continue
        out = group.uses[0].node.outputs[0]
        known = out.shape is not None and len(out.shape) >= 2
        start = [""] * ((len(out.shape) if known else rank) - 1) + ["feature"]
        link = _attention(out, start, by_node) or _ffn(out, by_node)
        if link is not None:
            links[i] = link
    return links


def _attention(value: ir.Value, axes: list[str], by_node: dict) -> Link | None:
    end, node, axes = _follow(value, axes)
    if node is None or node.op_type != "MatMul" or "head" not in axes or any(_const(v) for v in node.inputs):
        return None
    side = 0 if node.inputs[0] is end else 1
    other = node.inputs[1 - side]
    if axes[-1] == "dim" and side == 0:
        return Link("query", tap=other.name, head_axis=axes.index("head"))
    if axes[-2] == "dim" and side == 1:
        return Link("key", tap=other.name, head_axis=axes.index("head"))
    if axes[-1] == "dim" and side == 1:  # P @ V: features stay, tokens are mixed
        _, consumer, back = _follow(node.outputs[0], axes)
        if consumer is not None and back[-1:] == ["feature"] and id(consumer) in by_node:
            index, use = by_node[id(consumer)]
            if use.kind == "matmul_right" and consumer.inputs[0] is not None:
                return Link("value", partner=index)
    return None


def _ffn(value: ir.Value, by_node: dict) -> Link | None:
    """y (+ constants) = h -> elementwise-only region -> a -> MatMul with a split weight."""
    h, _, _ = _follow(value, [])  # bias adds / scales only: a Reshape or Transpose stops it
    region, exits, stack, seen = [], [], [h], set()
    while stack:
        current = stack.pop()
        if current.is_graph_output():
            return None
        for node in _consumers(current):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if id(node) in by_node and node.op_type == "MatMul" and node.inputs[0] is current:
                exits.append((current, node))
            elif node.op_type in ELEMENTWISE and node.domain in ("", "ai.onnx") and len(region) < _MAX_REGION:
                region.append(node)
                stack.extend(node.outputs)
            else:
                return None
    if len(exits) != 1 or exits[0][0] is h:
        return None
    inside = {id(h)} | {id(v) for n in region for v in n.outputs}
    if any(v is not None and not _const(v) and id(v) not in inside for n in region for v in n.inputs):
        return None  # the region reads another tensor: not a function of h alone
    order = {id(n): k for k, n in enumerate(h.graph)} if h.graph is not None else {}
    region.sort(key=lambda n: order.get(id(n), 0))
    a, matmul = exits[0]
    return Link("ffn", tap=h.name, partner=by_node[id(matmul)][0], nodes=region, output=a.name)
