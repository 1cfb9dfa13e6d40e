"""ONNX shape inference, recorded in the graph's value_info."""

from __future__ import annotations

import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult


class InferShapes(Pass):
    """Annotate intermediate values with the dtypes and shapes ONNX shape inference derives.

    Symbolic input dims stay symbolic; downstream tools (ONNX Runtime, TensorRT, viewers) read
    the annotations. Graph input and output declarations are left as they were.
    """

    name = "infer-shapes"

    def call(self, model: ir.Model) -> PassResult:
        declared = [(v, v.shape, v.type) for v in (*model.graph.inputs, *model.graph.outputs)]
        result = ir.passes.common.ShapeInferencePass(strict_mode=False)(model)
        model = result.model
        by_name = {v.name: v for v in (*model.graph.inputs, *model.graph.outputs)}
        for old, shape, type_ in declared:
            # Inference may rename symbolic output dims (unk__0); the declaration is the contract.
            value = by_name.get(old.name)
            if value is not None and shape is not None:
                value.shape, value.type = shape, type_
        return PassResult(model, modified=result.modified, stats={})
