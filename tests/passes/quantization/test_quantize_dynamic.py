import numpy as np

from onnxslim.passes.quantization.quantize_dynamic import QuantizeDynamic, QuantizeDynamicConfig
from tests.helpers import check_full, make_model, rng
from tests.passes.quantization.util import fused_ops, ops, rel_l2

MLP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 16] x) => (float[N, 4] y) {
    h = MatMul (x, w1)
    r = Relu (h)
    y = Gemm <transB = 1> (r, w2, b2)
}
"""

# Run-time uint8 activations and per-column int8 weights: within 3% relative L2 on this MLP (measured ~1%).
BOUND = 0.03


def _mlp():
    r = rng(0)
    return make_model(MLP, initializers={"w1": r.standard_normal((16, 32)).astype(np.float32),
                                         "w2": r.standard_normal((4, 32)).astype(np.float32),
                                         "b2": r.standard_normal(4).astype(np.float32)})


def test_matmul_and_gemm_become_dynamic_quantized_matmuls():
    model = _mlp()
    original = model.clone()
    result = QuantizeDynamic()(model)
    assert result.modified and result.stats["nodes_quantized"] == 2
    # float32 -> int8 weights, less the float32 scales each (per-channel) column adds
    assert result.stats["bytes_saved"] == 3 * (16 * 32 + 4 * 32) - 4 * (32 + 4)
    counts = ops(result.model)
    assert counts["MatMulInteger"] == 2 and counts["DynamicQuantizeLinear"] == 2 and counts["Gemm"] == 0
    assert result.model.graph.outputs[0].name == "y"
    check_full(result.model)
    assert fused_ops(result.model)["DynamicQuantizeMatMul"] == 2
    assert rel_l2(original, result.model, {"x": rng(1).standard_normal((6, 16)).astype(np.float32)}) < BOUND


def test_exclude_and_min_elements_keep_layers_float():
    result = QuantizeDynamic(QuantizeDynamicConfig(min_elements=200))(_mlp())
    assert result.stats["nodes_quantized"] == 1 and ops(result.model)["Gemm"] == 1
    assert not QuantizeDynamic(QuantizeDynamicConfig(exclude=("MatMul", "Gemm")))(_mlp()).modified


def test_conv_and_second_run_are_left_alone():
    model = make_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {
    y = Conv (x, w)
}
""", initializers={"w": rng(2).standard_normal((2, 3, 1, 1)).astype(np.float32)})
    result = QuantizeDynamic()(model)
    assert not result.modified and "ConvInteger" in result.details[0]["kept_float"]
    once = QuantizeDynamic()(_mlp()).model
    again = QuantizeDynamic()(once)
    assert not again.modified and "already quantized" in again.details[0]["skipped"]
    assert again.details[1]["warning"].startswith("model left as it was: model is already quantized")  # printed by the CLI


def test_a_node_named_like_a_new_one_does_not_collide():
    # the new nodes are named {layer}_{op}: a user node already named "mm_Cast" made the model
    # invalid ("two nodes with same node name") and the pass was rolled back
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 16] x) => (float[N, 32] y) {
        h = MatMul (x, w1)
        y = Relu (h)
    }
    """
    model = make_model(text, initializers={"w1": rng(0).standard_normal((16, 32)).astype(np.float32)})
    matmul, relu = list(model.graph)
    matmul.name, relu.name = "mm", "mm_Cast"
    original = model.clone()
    result = QuantizeDynamic()(model)
    names = [n.name for n in result.model.graph]
    assert result.stats["nodes_quantized"] == 1 and len(names) == len(set(names))
    check_full(result.model)
    assert rel_l2(original, result.model, {"x": rng(1).standard_normal((6, 16)).astype(np.float32)}) < BOUND


def test_layers_without_a_right_hand_weight_say_why():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 16] x, float[16, 16] fed) => (float[16, 16] y) {
        a = MatMul (x, fed)
        t = Transpose <perm = [1, 0]> (a)
        b = MatMul (left, t)
        y = MatMul (b, a)
    }
    """
    r = rng(2)
    model = make_model(text, initializers={"fed": r.standard_normal((16, 16)).astype(np.float32),
                                           "left": r.standard_normal((16, 16)).astype(np.float32)})
    result = QuantizeDynamic()(model)
    assert [row["kept_float"] for row in result.details] == [
        "weight is also a graph input (the application may feed it)",
        "the constant operand is on the left (only a right-hand weight is quantized)",
        "both operands are activations (no weight)"]


def test_a_selection_that_matches_nothing_is_a_warning():
    from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
    from onnxslim.passes.quantization.quantize_weights import QuantizeWeights, QuantizeWeightsConfig
    from tests.passes.quantization.util import context

    dynamic = QuantizeDynamic(QuantizeDynamicConfig(include=("MatMul", "matmull"), exclude=("Conv",)))(_mlp())
    warnings = [row["warning"] for row in dynamic.details if "warning" in row]
    assert warnings == ["--quantize-include 'matmull' matches no node name or op type in the model",
                        "--quantize-exclude 'Conv' matches no node name or op type in the model"]
    assert dynamic.stats["kept_float"] == 1  # the Gemm not included; warnings are not layers
    static = QuantizeStatic(QuantizeStaticConfig(include=("relu_1",)), context=context({"x": (4, 16)}))(_mlp())
    assert not static.modified and "'relu_1' matches no node" in static.details[0]["warning"]
    weights = QuantizeWeights(QuantizeWeightsConfig(exclude=("w1",)))(_mlp())
    assert any("'w1' matches no node" in row.get("warning", "") for row in weights.details)
    from onnxslim.passes.quantization.quantize_auto import QuantizeAuto, QuantizeAutoConfig

    auto = QuantizeAuto(QuantizeAutoConfig(exclude=("w1",)))(_mlp())  # chosen or kept float: said either way
    assert sum("'w1' matches no node" in row.get("warning", "") for row in auto.details) == 1
