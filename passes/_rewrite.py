"""Running onnxscript rewrite rules inside an onnxslim pass."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import onnx_ir as ir
from onnxscript.rewriter import pattern

from onnxslim.core.pass_base import PassResult
from onnxslim.core.stats import count_nodes


def apply_rules(model: ir.Model, rules: Sequence[pattern.RewriteRule], *, commute: bool = False) -> PassResult:
    """Applies ``rules`` until none matches; stats count rewrites and removed nodes."""
    nodes_before = count_nodes(model)
    before = _named_nodes(model)
    rewrites = pattern.RewriteRuleSet(list(rules), commute=commute).apply_to_model(model)
    if rewrites:
        # Rules leave replaced initializers behind; drop what no node reads any more.
        ir.passes.common.RemoveUnusedNodesPass()(model)
        drop_provenance(model)
        keep_names(model, before)
    return PassResult(
        model,
        modified=bool(rewrites),
        stats={"rewrites": rewrites, "nodes_removed": nodes_before - count_nodes(model)},
    )


def _all_nodes(model: ir.Model) -> list[ir.Node]:
    nodes = list(ir.traversal.RecursiveGraphIterator(model.graph))
    for function in model.functions.values():
        nodes += list(ir.traversal.RecursiveGraphIterator(function))
    return nodes


def _first_input(node: ir.Node) -> str | int | None:
    """The node's first input by name (a rewrite upstream replaces the value but keeps its name)."""
    value = node.inputs[0] if node.inputs else None
    return None if value is None else value.name or id(value)


@dataclasses.dataclass(frozen=True)
class _Before:
    """A named node as it was before the rules ran."""

    node: ir.Node
    op_type: str
    first: str | int | None
    outputs: tuple[str, ...]
    readers: tuple[int, ...]
    """ids of the nodes that read its outputs."""


def _named_nodes(model: ir.Model) -> dict[int, _Before]:
    return {id(n): _Before(n, n.op_type, _first_input(n), tuple(v.name for v in n.outputs if v.name),
                           tuple(id(user) for v in n.outputs for user, _ in v.uses()))
            for n in _all_nodes(model) if n.name}


def keep_names(model: ir.Model, before: dict[int, _Before]) -> None:
    """A node a rule made takes the name of the node it replaced. Node names are how users point at
    layers (``--quantize-exclude conv1``), and PP-OCRv4 det lost 30 of its 62 Conv names to the
    fusions. The replaced node is the removed one of the same op type that produced the new node's
    output (``Where(Not(c), a, b)`` -> the Where's name); else the removed one that read the same
    first input and whose chain of removed readers produced that output (Conv + BatchNormalization ->
    the Conv's name, also when two such pairs read one input; MatMul + Add -> Gemm, the MatMul's)."""
    nodes = _all_nodes(model)
    alive, taken = {id(n) for n in nodes}, {n.name for n in nodes if n.name}
    gone = {key: old for key, old in before.items() if key not in alive}
    for node in nodes:
        if id(node) in before or not node.outputs or _first_input(node) is None:
            continue
        name = _replaced_name(node, gone)
        if name is not None and name not in taken:
            taken.add(name)
            node.name = name


def _replaced_name(node: ir.Node, gone: dict[int, _Before]) -> str | None:
    output = node.outputs[0].name
    same_output = [old for old in gone.values() if old.op_type == node.op_type and output in old.outputs]
    if len(same_output) == 1:
        return same_output[0].node.name
    readers = [old for old in gone.values() if old.first == _first_input(node)]
    chained = [old for old in readers if output in _reach(old, gone)] or readers
    same = [old for old in chained if old.op_type == node.op_type]
    found = same if same else chained
    return found[0].node.name if len(found) == 1 else None


def _reach(start: _Before, gone: dict[int, _Before]) -> set[str]:
    """Output names of ``start`` and of the removed nodes downstream of it through removed nodes."""
    names, queue, seen = set(), [start], set()
    while queue:
        old = queue.pop()
        if id(old.node) in seen:
            continue
        seen.add(id(old.node))
        names.update(old.outputs)
        queue += [gone[key] for key in old.readers if key in gone]
    return names


PROVENANCE_PREFIX = "pkg.onnxscript."


def drop_provenance(model: ir.Model) -> None:
    """Removes the metadata onnxscript's rewriter and folder attach to what they made
    (``pkg.onnxscript.rewriter.rule_name``, ``pkg.onnxscript.optimizer.folded_from``): PP-OCRv4 rec
    came out with 90 such entries, bytes in every saved model that no runtime reads."""
    graphs = [model.graph, *(n.attributes[a].as_graph() for n in ir.traversal.RecursiveGraphIterator(model.graph)
                             for a in n.attributes if n.attributes[a].type == ir.AttributeType.GRAPH)]
    for graph in graphs:
        holders = [*graph.inputs, *graph.outputs, *graph.initializers.values()]
        for node in graph:
            holders += [node, *node.outputs]
        for holder in holders:
            for key in [k for k in holder.metadata_props if k.startswith(PROVENANCE_PREFIX)]:
                del holder.metadata_props[key]


def drop_stale_uses(model: ir.Model) -> int:
    """Disconnects nodes that are no longer in the model from the main graph's initializers; returns
    how many reads were dropped. onnxscript's folder inlines an If whose condition it knows and
    keeps the other branch's nodes reading the outer initializers: those then look used, so
    RemoveUnusedNodesPass keeps them, and ONNX Runtime drops them at load and fails to take them as
    arrays beside the graph (silero VAD's LSTM biases: fold-constants rolled back)."""
    live = {id(node) for node in _all_nodes(model)}
    dropped = 0
    for value in model.graph.initializers.values():
        for node, index in list(value.uses()):
            if id(node) not in live:
                node.replace_input_with(index, None)
                dropped += 1
    return dropped
