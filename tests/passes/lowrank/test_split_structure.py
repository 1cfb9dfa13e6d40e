"""split-lowrank on tiny graphs: each supported op, structure and numerics.

The weights are built with an exact rank (product of two thin random matrices), so splitting
at that rank is lossless: outputs must match within 1e-4 (float32 rounding of two products).
"""

import numpy as np
import pytest

from onnxslim.passes.lowrank.split_lowrank import Config, SplitLowRank
from tests.helpers import assert_same_outputs, check_full, make_model, op_types, rng

EXACT = {"atol": 1e-4, "rtol": 1e-4}


def low_rank(shape, rank, seed=0):
    r = rng(seed)
    return (r.standard_normal((shape[0], rank)) @ r.standard_normal((rank, shape[1]))).astype(np.float32) / rank


def split(model, **settings):
    settings.setdefault("min_params", 0)
    settings.setdefault("rank_multiple", 1)
    return SplitLowRank(Config(**settings))(model)


MATMUL_RIGHT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[B, S, 48] x) => (float[B, S, 40] y) {
    y = MatMul (x, w)
}
"""


@pytest.mark.parametrize("settings", [{"rank": 6}, {"energy": 1.0}])
def test_matmul_right_batched_3d(settings):
    model = make_model(MATMUL_RIGHT, initializers={"w": low_rank((48, 40), 6)})
    original = model.clone()
    result = split(model, **settings)
    assert result.modified and op_types(model) == ["MatMul", "MatMul"]
    assert result.stats["weights_split"] == 1
    assert result.stats["params_saved"] == 48 * 40 - 6 * (48 + 40)
    row = result.details[0]
    assert (row["K"], row["N"], row["rank"]) == (48, 40, 6) and row["weight_error"] < 1e-3  # float32 singular values: ~1e-4 resolution
    assert sorted(model.graph.initializers) == ["w.lowrank_u", "w.lowrank_v"]
    check_full(model)
    assert_same_outputs(original, model, {"x": rng(1).standard_normal((2, 5, 48)).astype(np.float32)}, **EXACT)


MATMUL_LEFT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[B, 48, 7] x) => (float[B, 32, 7] y) {
    y = MatMul (w, x)
}
"""


def test_matmul_weight_on_the_left():
    model = make_model(MATMUL_LEFT, initializers={"w": low_rank((32, 48), 5)})
    original = model.clone()
    result = split(model, rank=5)
    assert result.modified and op_types(model) == ["MatMul", "MatMul"]
    row = result.details[0]
    assert (row["K"], row["N"], row["rank"]) == (48, 32, 5)  # K: the dimension contracted with x
    first, second = list(model.graph)
    assert first.inputs[0].const_value.shape == (5, 48) and second.inputs[0].const_value.shape == (32, 5)
    check_full(model)
    assert_same_outputs(original, model, {"x": rng(1).standard_normal((3, 48, 7)).astype(np.float32)}, **EXACT)


GEMM = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[{a}] x) => (float[M, 40] y) {{
    y = Gemm <transA = {ta}, transB = {tb}, alpha = 0.5, beta = 2.0> (x, w, c)
}}
"""


@pytest.mark.parametrize("trans_a, trans_b", [(0, 1), (0, 0), (1, 1)])
def test_gemm_keeps_transposes_alpha_beta_and_bias(trans_a, trans_b):
    w = low_rank((48, 40), 4)
    text = GEMM.format(a="48, M" if trans_a else "M, 48", ta=trans_a, tb=trans_b)
    model = make_model(text, initializers={"w": w.T.copy() if trans_b else w, "c": rng(2).standard_normal(40).astype(np.float32)})
    original = model.clone()
    result = split(model, rank=4)
    assert result.modified and op_types(model) == ["Gemm", "Gemm"]
    second = list(model.graph)[1]
    assert second.attributes.get_float("alpha") == 0.5 and second.attributes.get_float("beta") == 2.0
    assert second.inputs[2].name == "c"
    check_full(model)
    x = rng(1).standard_normal((48, 6) if trans_a else (6, 48)).astype(np.float32)
    assert_same_outputs(original, model, {"x": x}, **EXACT)


CONV = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[B, 48, 6, 6] x) => (float[B, 40, 4, 4] y) {
    y = Conv <kernel_shape = [1, 1], strides = [2, 2], pads = [1, 1, 1, 1]> (x, w, b)
}
"""


def test_1x1_conv_keeps_stride_padding_and_bias():
    w = low_rank((40, 48), 6).reshape(40, 48, 1, 1)
    model = make_model(CONV, initializers={"w": w, "b": rng(3).standard_normal(40).astype(np.float32)})
    original = model.clone()
    result = split(model, rank=6)
    assert result.modified and op_types(model) == ["Conv", "Conv"]
    first, second = list(model.graph)
    assert first.inputs[1].const_value.shape == (6, 48, 1, 1) and second.inputs[1].const_value.shape == (40, 6, 1, 1)
    assert list(first.attributes.get_ints("strides")) == [2, 2] and "strides" not in second.attributes
    check_full(model)
    assert_same_outputs(original, model, {"x": rng(1).standard_normal((2, 48, 6, 6)).astype(np.float32)}, **EXACT)


SHARED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 48] x, float[N, 48] z) => (float[N, 40] y1, float[N, 40] y2) {
    y1 = MatMul (x, w)
    y2 = MatMul (z, w)
}
"""


def test_shared_weight_is_split_once():
    model = make_model(SHARED, initializers={"w": low_rank((48, 40), 6)})
    original = model.clone()
    result = split(model, rank=6)
    assert result.stats["weights_split"] == 1 and result.details[0]["uses"] == 2
    assert op_types(model) == ["MatMul"] * 4 and len(model.graph.initializers) == 2
    check_full(model)
    feeds = {n: rng(i).standard_normal((3, 48)).astype(np.float32) for i, n in enumerate(("x", "z"))}
    assert_same_outputs(original, model, feeds, **EXACT)


CONSTANT_FED = """
<ir_version: 8, opset_import: ["" : 12]>
g (float[N, 48] x) => (float[N, 40] y) {
    y = MatMul (x, w)
}
"""


def test_weight_from_a_constant_node_is_split():
    import onnx

    proto = onnx.parser.parse_model(CONSTANT_FED)
    tensor = onnx.numpy_helper.from_array(low_rank((48, 40), 6), "w_value")
    proto.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["w"], value=tensor))
    import onnx_ir as ir

    model = ir.serde.deserialize_model(proto)
    original = model.clone()
    assert split(model, rank=6).modified
    assert op_types(model) == ["MatMul", "MatMul"]
    check_full(model)
    assert_same_outputs(original, model, {"x": rng(1).standard_normal((3, 48)).astype(np.float32)}, **EXACT)
