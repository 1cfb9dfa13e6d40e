"""The graph inputs' and outputs' declared types and shapes: the application's contract, which a
tool a pass calls (onnx's version converter, ORT's float16 converter, onnx-ir's CSE) may rewrite
with what it infers or leave empty. A pass takes them before and puts them back after."""

from __future__ import annotations

import onnx_ir as ir

Declared = dict[str, tuple[ir.TypeProtocol | None, ir.Shape | None]]


def declared_io(graph: ir.Graph) -> Declared:
    return {value.name: (value.type, value.shape) for value in (*graph.inputs, *graph.outputs)}


def restore_declared_io(graph: ir.Graph, declared: Declared) -> None:
    """Each input and output of ``graph`` named in ``declared`` gets its declared type and shape back."""
    for value in (*graph.inputs, *graph.outputs):
        if value.name in declared:
            kind, shape = declared[value.name]
            value.type = kind if kind is not None else value.type
            value.shape = shape.copy() if shape is not None else None
