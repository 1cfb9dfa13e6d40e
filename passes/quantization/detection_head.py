"""The post-processing after a detector's last weighted layer, which static quantization keeps float.

Box decode, DFL expectations and score/coordinate concatenation work on values whose extremes
matter (coordinates in pixels next to scores in 0..1): one 8-bit grid for a Concat of both
rounds the scores away. ``post_processing`` finds the nodes with no weighted layer after them;
``head_branches`` the per-scale branches that feed exactly one of its inputs: their tensors are
ranged by minmax whatever the method (a clipped range loses the rare high score), and a graph
that has them gets the detector's mixed-precision floor (``quantize_static.py``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.passes._constants import is_fixed
from onnxslim.patterns import is_softmax

WEIGHTED = {"Conv", "MatMul", "Gemm"}


def post_processing(graph: ir.Graph) -> set[ir.Node]:
    """Nodes with no feature layer (weighted Conv/MatMul/Gemm) after them, and not one themselves.

    A Conv/MatMul/Gemm fed by a Softmax (or its expanded form) through shape-only ops that sums the
    bins against a ramp into one value (YOLO's DFL expectation) counts as decode math.
    """
    nodes = list(graph)
    feature_below: dict[ir.Node, bool] = {}
    for node in reversed(nodes):
        consumers = {c for v in node.outputs for c in v.consumers()}
        feature_below[node] = any(is_feature(c) or feature_below.get(c, False) for c in consumers)
    return {n for n in nodes if not feature_below[n] and not is_feature(n)}


def head_branches(graph: ir.Graph, tail: set[ir.Node]) -> set[ir.Node]:
    """Nodes whose outputs reach exactly one of the head outputs (weighted layers the post-processing reads).

    In YOLO-style heads these are the per-scale box and class branches (conv, SiLU, conv),
    which split off the shared neck; a node feeding several head outputs is shared trunk. Only
    nodes below such a trunk count: a plain classifier has a single head output and no branches.
    """
    reached: dict[ir.Node, set[ir.Value]] = {}
    for node in reversed(list(graph)):
        if node in tail:
            continue
        targets: set[ir.Value] = set()
        for value in node.outputs:
            for consumer in value.consumers():
                if consumer not in tail:
                    targets |= reached.get(consumer, set())
                elif is_feature(node):
                    targets.add(value)
        reached[node] = targets
    below_trunk: set[ir.Node] = set()
    for node in graph:
        sources = {v.producer() for v in node.inputs if v is not None} - {None}
        if any(len(reached.get(s, ())) > 1 or s in below_trunk for s in sources):
            below_trunk.add(node)
    return {node for node in below_trunk if len(reached.get(node, ())) == 1}


def is_feature(node: ir.Node) -> bool:
    """A layer with a constant weight that is not a softmax's expectation (see ``post_processing``)."""
    if node.op_type not in WEIGHTED or len(node.inputs) < 2 or not is_fixed(node.inputs[1]):
        return False
    source = node.inputs[0].producer()
    while source is not None and source.op_type in {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"}:
        source = source.inputs[0].producer()
    return source is None or not is_softmax(source) or not _is_expectation(node)


def _is_expectation(node: ir.Node) -> bool:
    """``node`` sums its input's bins against a ramp into one value: the expectation over a softmax's
    bins that distribution-focal box heads compute (YOLOv8's DFL: a 1x1 Conv with weights 0..15;
    GFL heads: a MatMul with a linspace). A learned layer after a softmax has more outputs."""
    weight = ir.convenience.get_const_tensor(node.inputs[1]).numpy()
    if node.op_type == "Conv":
        ramp = weight.reshape(-1) if weight.shape[0] == 1 else None
    elif node.op_type == "Gemm" and node.attributes.get("transB") is not None and node.attributes["transB"].value:
        ramp = weight.reshape(-1) if weight.shape[0] == 1 else None
    else:  # MatMul, Gemm: [bins, 1] or [bins]
        ramp = weight.reshape(-1) if weight.ndim == 1 or weight.shape[-1] == 1 else None
    return ramp is not None and ramp.size > 1 and bool(np.all(np.diff(ramp.astype(np.float64)) > 0))
