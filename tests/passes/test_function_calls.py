"""Weighted layers inside ONNX local functions: the passes rewrite the main graph only and say so
for each call (prune-magnitude and quantize-dynamic reported 'unchanged' with no reason)."""

import numpy as np
import onnx
import onnx.helper as oh
import onnx_ir as ir

from onnxslim.passes.pruning.prune_magnitude import PruneMagnitude, PruneMagnitudeConfig
from onnxslim.passes.quantization.quantize_dynamic import QuantizeDynamic
from tests.helpers import rng


def _model() -> ir.Model:
    function = oh.make_function("custom.fn", "Linear", ["x", "W"], ["y"], [oh.make_node("MatMul", ["x", "W"], ["y"])],
                                [oh.make_opsetid("", 17)])
    weights = [onnx.numpy_helper.from_array(rng(i).standard_normal((64, 64)).astype(np.float32), f"W{i}") for i in range(2)]
    graph = oh.make_graph([oh.make_node("Linear", ["x", "W0"], ["h"], domain="custom.fn", name="first"),
                           oh.make_node("Linear", ["h", "W1"], ["y"], domain="custom.fn", name="second")], "g",
                          [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 64])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 64])], weights)
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("custom.fn", 1)],
                          functions=[function], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def test_each_call_of_a_function_with_weighted_layers_is_reported():
    for result, key in ((PruneMagnitude(PruneMagnitudeConfig(amount=0.5, skip_first_last=False))(_model()), "skipped"),
                        (QuantizeDynamic()(_model()), "kept_float")):
        assert not result.modified
        reasons = [row[key] for row in result.details if key in row]
        assert len(reasons) == 2 and all("local function custom.fn::Linear" in r and "MatMul" in r for r in reasons)
