"""Static quantization on old exports: weights listed as graph inputs, opsets below QDQ's, the IR
version an upgraded model needs."""

import numpy as np
import onnx
import onnx_ir as ir

from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from tests.helpers import check_full, make_model, rng
from tests.passes.quantization.util import REL_L2_BOUND, context, ops, rel_l2

CONV = """
<ir_version: %d, opset_import: ["" : %d]>
g (float[N, 4, 8, 8] x) => (float[N, 8, 8, 8] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
    y = Relu (c)
}
"""


def _conv(ir_version: int, opset: int) -> ir.Model:
    r = rng(0)
    return make_model(CONV % (ir_version, opset), initializers={"w": r.standard_normal((8, 4, 3, 3)).astype(np.float32),
                                                                "b": r.standard_normal(8).astype(np.float32)})


def _quantize(model: ir.Model, **settings):
    return QuantizeStatic(QuantizeStaticConfig(bias_correction=False, **settings), context=context({"x": (4, 4, 8, 8)}))(model)


def test_weights_that_are_graph_inputs_stay_float_with_that_reason():
    # IR 3 lists every weight as an input; the plan said "post-processing after the last weighted layer"
    proto = ir.serde.serialize_model(_conv(4, 11))
    proto.graph.input.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s)
                             for n, s in (("w", [8, 4, 3, 3]), ("b", [8])))
    result = _quantize(ir.serde.deserialize_model(proto))
    assert not result.modified
    reasons = {row["kept_float"] for row in result.details if "kept_float" in row}
    assert any("weight is also a graph input" in r for r in reasons), reasons
    assert not any("post-processing" in r for r in reasons), reasons


def test_opset_9_without_upgrade_declines_with_the_reason():
    model = _conv(4, 9)
    result = _quantize(model, upgrade_opset=False)
    assert not result.modified and ops(result.model)["QuantizeLinear"] == 0
    assert any("QuantizeLinear needs opset 10" in row.get("declined", "") for row in result.details)


def test_an_upgraded_model_gets_the_ir_version_its_opset_needs():
    model = _conv(4, 9)
    original = model.clone()
    result = _quantize(model)
    assert result.modified and result.model.opset_imports[""] == 13
    assert result.model.ir_version >= 7  # onnx's checker refuses opset 13 at IR 4
    check_full(result.model)
    feeds = {"x": rng(3).standard_normal((2, 4, 8, 8)).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND


def test_a_constant_on_the_left_of_a_matmul_is_named_as_such():
    # it was reported as "MatMul of two activations (attention)"
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[32, 4] x) => (float[16, 4] y) {
        y = MatMul (w, x)
    }
    """, initializers={"w": rng(0).standard_normal((16, 32)).astype(np.float32)})
    result = QuantizeStatic(QuantizeStaticConfig(bias_correction=False), context=context({"x": (32, 4)}))(model)
    reasons = [row["kept_float"] for row in result.details if "kept_float" in row]
    assert any(r.startswith("constant on the left") for r in reasons) and not any("attention" in r for r in reasons)

