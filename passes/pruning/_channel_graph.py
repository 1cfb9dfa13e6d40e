"""Channel dependency analysis: which output channels of which layers must be removed together.

Every output channel of a prunable layer (a *producer*) is a *unit*. Walking the graph in order,
each tensor that carries units gets a ``Track``: the unit of each position along its channel
axis. Ops that pass channels through keep the track, Concat/Split/Flatten rearrange it, and
ops that combine two tensors position by position (residual Add, Mul...) join their units in a
union-find, so coupled channels end up as one component. A unit read by anything the analysis
does not understand (an unknown op, a graph output, a subgraph) is joined to the ``BLOCKED``
unit and never removed. The result lists what must be sliced, for ``_channel_apply``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import onnx
import onnx_ir as ir

from onnxslim.passes.pruning._layers import Layer, as_layer
from onnxslim.proto import graph_proto

BLOCKED = 0
UNARY = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "Softsign",
         "Erf", "Gelu", "Clip", "Identity", "Abs", "Neg", "Sqrt", "Exp", "Log", "Mish", "Celu", "ThresholdedRelu",
         "Cast", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Dropout"}
BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu"}
SPATIAL = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "Resize", "Upsample"}
NORM = {"BatchNormalization", "InstanceNormalization"}


@dataclasses.dataclass
class Track:
    units: list[int]
    axis: int
    """Channel axis counted from the end (-1 = last)."""
    rank: int | None


@dataclasses.dataclass
class Slice:
    """Slice tensor ``value`` along ``axis`` to the kept positions of ``source`` (``groups`` > 1: per group, axis 1)."""

    value: ir.Value
    axis: int
    source: str
    groups: int = 1


@dataclasses.dataclass
class Edit:
    """An attribute/shape-constant fix-up: ``kind`` in {"group", "split", "reshape"}."""

    node: ir.Node
    kind: str
    sources: list[str]


class ChannelGraph:
    def __init__(self, model: ir.Model, prunable: Callable[[Layer], bool]):
        self.model, self.prunable = model, prunable
        self.parent = [BLOCKED]
        self.reasons: dict[int, str] = {}
        self.tracks: dict[str, Track] = {}
        self.producers: dict[str, Layer] = {}
        """Output value name -> producer layer."""
        self.consumers: list[tuple[Layer, str]] = []
        """(layer, input value name) whose input channels follow a track."""
        self.followers: list[tuple[Layer, str]] = []
        """(depthwise layer, output value name): layers whose channels are their input's (no units of their own)."""
        self.slices: list[Slice] = []
        self.edits: list[Edit] = []
        self.constraints: list[tuple[str, int]] = []
        """(value name, groups): the same number of positions must go from each of ``groups`` equal segments."""
        self.shapes = _inferred_shapes(model)
        self.values = {out.name: out for node in model.graph for out in node.outputs}
        for node in model.graph:
            self._visit(node)
        for value in model.graph.outputs:
            self.block_value(value.name, "graph output")
        self._block_foreign_uses()

    # union-find -------------------------------------------------------------------------------
    def new_units(self, count: int) -> list[int]:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return list(range(start, start + count))

    def find(self, unit: int) -> int:
        while self.parent[unit] != unit:
            self.parent[unit] = self.parent[self.parent[unit]]
            unit = self.parent[unit]
        return unit

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            low, high = sorted((ra, rb))  # BLOCKED (0) always stays the root
            self.parent[high] = low
            if low == BLOCKED and high in self.reasons:
                self.reasons.setdefault(BLOCKED, self.reasons[high])

    def block(self, units, reason: str) -> None:
        for unit in units:
            root = self.find(unit)
            if root != BLOCKED:
                self.reasons.setdefault(root, reason)
                self.parent[root] = BLOCKED

    def block_value(self, name: str, reason: str) -> None:
        if name in self.tracks:
            self.block(self.tracks[name].units, reason)

    def _block_foreign_uses(self) -> None:
        for name in list(self.tracks):
            value = self.values.get(name)
            if value is not None and any(use.node.graph is not self.model.graph for use in value.uses()):
                self.block_value(name, "read inside a subgraph")

    # helpers -----------------------------------------------------------------------------------
    def shape(self, value: ir.Value) -> tuple | None:
        if value.const_value is not None:
            return tuple(value.const_value.shape)
        return self.shapes.get(value.name)

    def track(self, value: ir.Value | None) -> Track | None:
        return self.tracks.get(value.name) if value is not None else None

    def block_node(self, node: ir.Node, reason: str) -> None:
        for value in node.inputs:
            if value is not None:
                self.block_value(value.name, reason or f"read by {node.op_type} {node.name}")

    # visiting ----------------------------------------------------------------------------------
    def _visit(self, node: ir.Node) -> None:
        from onnxslim.passes.pruning import _channel_rules as rules

        tracked = [v for v in node.inputs if v is not None and v.name in self.tracks]
        layer, _ = as_layer(node)
        if layer is not None:
            rules.visit_layer(self, layer)
        elif not tracked:
            return
        elif node.domain not in ("", "ai.onnx"):
            self.block_node(node, f"read by custom op {node.domain}.{node.op_type}")
        else:
            handler = rules.HANDLERS.get(node.op_type)
            if handler is None:
                self.block_node(node, f"read by {node.op_type} {node.name}")
            else:
                handler(self, node)
                self._block_untracked_outputs(node)

    def _block_untracked_outputs(self, node: ir.Node) -> None:
        """Blocks the inputs of a channel-following op when an output the handler left untracked is read.

        Such an output (MaxPool's Indices, Dropout's mask, BatchNormalization's running statistics) has
        the input's channel count too, but nothing slices it: pruning would change the shape of whatever
        reads it, a graph output included (``uses()`` does not list graph outputs)."""
        for out in node.outputs:
            if out.name not in self.tracks and (out.uses() or out.is_graph_output()):
                self.block_node(node, f"{node.op_type} {node.name}: output {out.name} has the channels but is not sliced")
                return


def _inferred_shapes(model: ir.Model) -> dict[str, tuple]:
    """Static shapes by value name from onnx shape inference (the model itself is not annotated)."""
    proto = graph_proto(model)
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # inference is a help, not a requirement
        pass
    shapes = {}
    for info in [*proto.graph.value_info, *proto.graph.input, *proto.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape"):
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    return shapes


