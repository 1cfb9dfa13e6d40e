"""ONNX shape inference, recorded in the graph's value_info."""

from __future__ import annotations

import contextlib
from typing import Iterator

import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult


class InferShapes(Pass):
    """Annotate intermediate values with the dtypes and shapes ONNX shape inference derives.

    Symbolic input dims stay symbolic; downstream tools (TensorRT, viewers) read the annotations.
    Graph input and output declarations are left as they were. Not part of ``simplify``: the
    annotations make the file larger and ONNX Runtime infers shapes itself.
    """

    name = "infer-shapes"

    def call(self, model: ir.Model) -> PassResult:
        return PassResult(model, modified=infer_shapes(model), stats={})


def infer_shapes(model: ir.Model) -> bool:
    """Runs ONNX shape inference in place; graph input/output declarations stay as they were."""
    declared = {v.name: (v.shape, v.type) for v in (*model.graph.inputs, *model.graph.outputs)}
    modified = ir.passes.common.ShapeInferencePass(strict_mode=False)(model).modified
    for value in (*model.graph.inputs, *model.graph.outputs):
        shape, type_ = declared.get(value.name, (None, None))
        # Inference may rename symbolic output dims (unk__0); the declaration is the contract.
        if shape is not None:
            value.shape, value.type = shape, type_
    return modified


@contextlib.contextmanager
def inferred_shapes(model: ir.Model) -> Iterator[None]:
    """Shapes and dtypes for the duration of a rewrite, without leaving annotations behind."""
    saved = {value: (value.shape, value.type, value.is_graph_output()) for node in model.graph for value in node.outputs}
    infer_shapes(model)
    try:
        yield
    finally:
        for value, (shape, type_, was_output) in saved.items():
            if was_output or not value.is_graph_output():  # one that became an output carries the contract now
                value.shape, value.type = shape, type_
