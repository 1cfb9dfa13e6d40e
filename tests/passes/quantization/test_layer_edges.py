"""Weighted layers at the edges of the QDQ rules: biases int32 cannot hold, Gemm's C shapes and
transA, a Concat with a constant part, learned layers after a softmax."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from tests.helpers import check_full, make_model, rng, run_ort
from tests.passes.quantization.util import REL_L2_BOUND, context, fused_ops, ops, rel_l2

TWO_CONVS = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r1 = Relu (c1)
    c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2, b2)
    y = Relu (c2)
}
"""


def _quantize(model, shapes, **config):
    return QuantizeStatic(QuantizeStaticConfig(**config), context=context(shapes, count=4))(model)


def _row(result, name):
    return next(row for row in result.details if row.get("node") == name)


@pytest.mark.parametrize("per_channel", [True, False])
def test_a_bias_int32_cannot_hold_at_the_weight_scale_gets_a_coarser_weight_scale(per_channel):
    """Channel 5's weights are ~1e-8 (batch norm with gamma ~ 0 folded in) and its bias 1.0: at
    input_scale * weight_scale the bias needs ~1e11 steps. It used to be clipped to 2^31 - 1 and the
    channel came out 0.01 instead of 1.0."""
    r = rng(1)
    w1 = r.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w1[5] *= 1e-8
    b1 = (r.standard_normal(8) * 0.1).astype(np.float32)
    b1[5] = 1.0
    weights = {"w1": w1, "b1": b1, "w2": (r.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32),
               "b2": np.full(4, 0.1, np.float32)}
    model = make_model(TWO_CONVS, initializers=weights)
    for index, node in enumerate(model.graph):
        node.name = f"n{index}"
    original = model.clone()
    result = _quantize(model, {"x": (4, 3, 8, 8)}, per_channel=per_channel, bias_correction=False)
    row = _row(result, "n0")
    # one scale per tensor is set by the other channels' weights: wide enough already
    assert row["bias"] == "int32" and row.get("weight_scales_raised_for_bias", 0) == (1 if per_channel else 0)
    assert "weight_scales_raised_for_bias" not in _row(result, "n2")
    check_full(result.model)
    probe = result.model.clone()
    probe.graph.outputs.append(next(v for node in probe.graph for v in node.outputs if v.name == "c1"))
    feeds = {"x": rng(7).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    channel = run_ort(probe, feeds)[1][:, 5]
    # the raised scale still resolves the tiny weights to 0: the channel is its bias
    assert np.allclose(channel, 1.0, atol=1e-3)
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND


def _gemm(c_shape, trans_a=0):
    a_shape = "[16, N]" if trans_a else "[N, 16]"
    text = f"""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float{a_shape} x) => (float[N, 8] y) {{
        h = Gemm <transA = {trans_a}, transB = 1> (x, w, c)
        y = Relu (h)
    }}
    """
    r = rng(2)
    return make_model(text, initializers={"w": (r.standard_normal((8, 16)) * 0.3).astype(np.float32),
                                          "c": (r.standard_normal(c_shape) * 0.2).astype(np.float32)})


@pytest.mark.parametrize("c_shape", [(8,), (1, 8), ()])
def test_gemm_c_that_is_the_same_for_every_row_becomes_an_int32_bias_and_qgemm(c_shape):
    model = _gemm(c_shape)
    original = model.clone()
    result = _quantize(model, {"x": (8, 16)})
    gemm = next(node for node in result.model.graph if node.op_type == "Gemm")
    bias = gemm.inputs[2].producer()
    assert bias is not None and bias.op_type == "DequantizeLinear" and bias.inputs[0].const_value.dtype.name == "INT32"
    assert next(row for row in result.details if row.get("op") == "Gemm")["bias"] == "int32"
    assert fused_ops(result.model)["QGemm"] == 1
    assert rel_l2(original, result.model, {"x": rng(3).standard_normal((5, 16)).astype(np.float32)}) < REL_L2_BOUND


def test_gemm_c_that_varies_by_row_stays_float_and_the_report_says_why():
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[4, 16] x) => (float[4, 8] y) {
        h = Gemm <transB = 1> (x, w, c)
        y = Relu (h)
    }
    """
    r = rng(2)
    model = make_model(text, initializers={"w": (r.standard_normal((8, 16)) * 0.3).astype(np.float32),
                                           "c": r.standard_normal((4, 8)).astype(np.float32)})
    original = model.clone()
    result = _quantize(model, {"x": (4, 16)})
    assert next(row for row in result.details if row.get("op") == "Gemm")["bias"] == "float: shape [4, 8] is no per-channel vector"
    assert rel_l2(original, result.model, {"x": rng(3).standard_normal((4, 16)).astype(np.float32)}) < REL_L2_BOUND


def test_gemm_with_trans_a_is_quantized_and_fuses():
    model = _gemm((8,), trans_a=1)
    original = model.clone()
    result = _quantize(model, {"x": (16, 8)})
    assert result.stats["nodes_quantized"] == 1 and not any("Gemm with" in row.get("kept_float", "") for row in result.details)
    assert fused_ops(result.model)["QGemm"] == 1
    assert rel_l2(original, result.model, {"x": rng(3).standard_normal((16, 5)).astype(np.float32)}) < REL_L2_BOUND


CONCAT_CONSTANT = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r1 = Relu (c1)
    m = Concat <axis = 1> (r1, k)
    c2 = Conv <pads = [1, 1, 1, 1]> (m, w2, b2)
    y = Relu (c2)
}
"""


def test_a_concat_with_a_constant_part_runs_as_qlinearconcat():
    r = rng(9)
    model = make_model(CONCAT_CONSTANT, initializers={
        "w1": (r.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "b1": r.standard_normal(8).astype(np.float32),
        "k": (r.standard_normal((1, 2, 8, 8)) * 3.0).astype(np.float32),
        "w2": (r.standard_normal((4, 10, 3, 3)) * 0.2).astype(np.float32), "b2": r.standard_normal(4).astype(np.float32)})
    original = model.clone()
    result = _quantize(model, {"x": (1, 3, 8, 8)})
    concat = next(node for node in result.model.graph if node.op_type == "Concat")
    constant = concat.inputs[1].producer()
    assert constant is not None and constant.op_type == "DequantizeLinear"
    output_q = concat.outputs[0].consumers()[0]
    assert output_q.op_type == "QuantizeLinear"  # the constant sits on the output's grid
    assert constant.inputs[1].const_value.numpy() == output_q.inputs[1].const_value.numpy()
    fused = fused_ops(result.model)
    assert fused["QLinearConcat"] == 1 and fused["Concat"] == 0
    assert rel_l2(original, result.model, {"x": rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)}) < REL_L2_BOUND


SOFTMAX_THEN_LAYER = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 16] x) => (float[N, {out}] y) {{
    h = Gemm <transB = 1> (x, w1, b1)
    r = Relu (h)
    s = Softmax <axis = 1> (r)
    y = MatMul (s, w2)
}}
"""


@pytest.mark.parametrize("ramp, quantized", [(False, True), (True, False)])
def test_only_an_expectation_over_softmax_bins_counts_as_decode(ramp, quantized):
    """A learned layer after a softmax is a layer; a single-output ramp over the bins (YOLOv8's DFL)
    is box decoding, kept float."""
    r = rng(4)
    w2 = np.arange(12, dtype=np.float32).reshape(12, 1) if ramp else (r.standard_normal((12, 6)) * 0.3).astype(np.float32)
    model = make_model(SOFTMAX_THEN_LAYER.format(out=w2.shape[1]), initializers={
        "w1": (r.standard_normal((12, 16)) * 0.3).astype(np.float32), "b1": r.standard_normal(12).astype(np.float32),
        "w2": w2})
    result = _quantize(model, {"x": (8, 16)})
    matmul = next(node for node in result.model.graph if node.op_type == "MatMul")
    weight = matmul.inputs[1].producer()
    assert (weight is not None and weight.op_type == "DequantizeLinear") is quantized
    decode = [row for row in result.details if "post-processing" in row.get("kept_float", "")]
    assert bool(decode) is not quantized
    assert ops(result.model)["Softmax"] == 1


CONV_CLIP_CONV = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    k = Clip (c1, low, high)
    c2 = Conv <pads = [1, 1, 1, 1]> (k, w2, b2)
    y = Relu (c2)
}
"""


@pytest.mark.parametrize("low, high, absorbed", [(-0.3, 0.5, True), (0.0, 6.0, True), (0.1, 6.0, False)])
def test_a_clip_whose_range_holds_zero_is_absorbed_into_the_quantizer(low, high, absorbed):
    """The QuantizeLinear after the Conv clamps to its grid, which holds 0: Clip(-0.3, 0.5) is that
    grid's clamp (ORT's quantizer drops it too); Clip(0.1, 6) would need a clamp at 0.1 and stays."""
    r = rng(6)
    model = make_model(CONV_CLIP_CONV, initializers={
        "low": np.array(low, np.float32), "high": np.array(high, np.float32),
        "w1": (r.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "b1": (r.standard_normal(8) * 0.1).astype(np.float32),
        "w2": (r.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32), "b2": r.standard_normal(4).astype(np.float32)})
    original = model.clone()
    result = _quantize(model, {"x": (4, 3, 8, 8)})
    assert (ops(result.model)["Clip"] == 0) is absorbed
    assert result.stats["activations_absorbed"] == (1 if absorbed else 0)
    fused = fused_ops(result.model)
    assert fused["QLinearConv"] == 2 and fused["Clip"] == (0 if absorbed else 1)
    if absorbed:  # the grid stays inside the clip's range, to half a step
        quantizer = next(node for node in result.model.graph if node.op_type == "QuantizeLinear"
                         and node.inputs[0].producer() is not None and node.inputs[0].producer().op_type == "Conv")
        scale, zero = (float(v.const_value.numpy()) for v in quantizer.inputs[1:])
        assert low - scale / 2 <= scale * (0 - zero) and scale * (255 - zero) <= high + scale / 2
    assert rel_l2(original, result.model, {"x": rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)}) < REL_L2_BOUND


def test_a_2d_matmul_read_by_a_bias_add_keeps_its_output_quantized():
    """Left float, ``DQ(W) -> MatMul -> Add(b)`` became ORT's float Gemm (MatMulAddFusion) that
    dequantized the weight at every run; quantized, it runs QLinearMatMul."""
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 64] x) => (float[N, 32] y) {
        m = MatMul (x, w)
        y = Add (m, c)
    }
    """
    r = rng(3)
    model = make_model(text, initializers={"w": (r.standard_normal((64, 32)) * 0.2).astype(np.float32),
                                           "c": r.standard_normal(32).astype(np.float32)})
    original = model.clone()
    result = _quantize(model, {"x": (8, 64)})
    fused = fused_ops(result.model)
    assert fused["QLinearMatMul"] == 1 and fused["Gemm"] == 0 and fused["MatMul"] == 0
    assert rel_l2(original, result.model, {"x": rng(4).standard_normal((5, 64)).astype(np.float32)}) < REL_L2_BOUND


SHARED_WEIGHT = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 8, 8] x) => (float[N, 4, 8, 8] y) {
    a = Conv <pads = [1, 1, 1, 1]> (x, w, zero_bias)
    r = Relu (a)
    b = Conv <pads = [1, 1, 1, 1]> (r, w, bias)
    y = Relu (b)
}
"""


def test_a_shared_weight_too_fine_for_a_later_readers_bias_is_copied_for_that_reader():
    """The first reader (bias 0) quantizes the shared weight with channel 0 at ~1e-7 / 127; the
    second reader's bias 1.0 does not fit int32 at that scale. Kept float, ORT fused the node anyway
    and wrapped its own int32 bias to -2^31 (cosine 0.978, validation failed): that reader now gets
    an int8 copy with its own, raised scale."""
    r = rng(5)
    w = (r.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32)
    w[0] *= 1e-6
    model = make_model(SHARED_WEIGHT, initializers={"w": w, "zero_bias": np.zeros(4, np.float32),
                                                     "bias": np.array([1.0, 0.1, -0.2, 0.3], np.float32)})
    for index, node in enumerate(model.graph):
        node.name = f"n{index}"
    original = model.clone()
    result = _quantize(model, {"x": (4, 4, 8, 8)}, bias_correction=False)
    second = _row(result, "n2")
    assert second["bias"] == "int32" and second["weight_copied_for_bias"] and second["weight_scales_raised_for_bias"] == 1
    assert "weight_copied_for_bias" not in _row(result, "n0")
    feeds = {"x": rng(6).standard_normal((2, 4, 8, 8)).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND  # with ORT's default optimizations (fused)


def test_a_clip_whose_bound_the_application_may_feed_is_not_absorbed():
    """An initializer that is also a graph input is a default the caller may override: absorbing
    Clip(c, lo, hi) baked lo = 0 into the grid, and feeding lo = 2 no longer clipped."""
    import onnx

    r = rng(7)
    model = make_model(CONV_CLIP_CONV, initializers={
        "low": np.array(0.0, np.float32), "high": np.array(6.0, np.float32),
        "w1": (r.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "b1": (r.standard_normal(8) * 0.1).astype(np.float32),
        "w2": (r.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32), "b2": r.standard_normal(4).astype(np.float32)})
    low = model.graph.initializers["low"]
    model.graph.inputs.append(low)  # overridable (IR >= 4)
    result = _quantize(model, {"x": (4, 3, 8, 8)})
    assert ops(result.model)["Clip"] == 1
    assert onnx.checker.check_model(ir.serde.serialize_model(result.model)) is None
