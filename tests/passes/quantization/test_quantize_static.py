import numpy as np
import pytest

from onnxslim.errors import DataError
from onnxslim.passes.quantization.cache import CalibrationCache, cache_key, load_calibration_cache, save_calibration_cache
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from onnxslim.core.pass_base import PassContext
from onnxslim.data import DataBatch
from tests.helpers import check_full, make_model, rng
from tests.passes.quantization.util import REL_L2_BOUND, batches, context, fused_ops, ops, rel_l2

CONV_CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 5] y) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r1 = Relu (c1)
    p1 = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (r1)
    c2 = Conv <pads = [1, 1, 1, 1]> (p1, w2, b2)
    r2 = Relu (c2)
    c3 = Conv (p1, w3)
    s = Add (r2, c3)
    a = Relu (s)
    g = GlobalAveragePool (a)
    f = Flatten (g)
    y = Gemm <transB = 1> (f, w4, b4)
}
"""


def _conv_weights(seed=0):
    r = rng(seed)
    return {"w1": r.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "b1": r.standard_normal(8).astype(np.float32),
            "w2": r.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "b2": r.standard_normal(8).astype(np.float32),
            "w3": r.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3,
            "w4": r.standard_normal((5, 8)).astype(np.float32), "b4": r.standard_normal(5).astype(np.float32)}


def _conv_model():
    return _named(make_model(CONV_CHAIN, initializers=_conv_weights()))


def _named(model):
    for index, node in enumerate(model.graph):
        node.name = f"{node.op_type}_{index}"
    return model


def _quantize(model, shapes, count=4, **config):
    return QuantizeStatic(QuantizeStaticConfig(**config), context=context(shapes, count=count))(model)


def test_conv_relu_pool_add_become_integer_kernels_in_ort():
    model = _conv_model()
    original = model.clone()
    result = _quantize(model, {"x": (4, 3, 8, 8)})
    assert result.modified
    assert result.stats["nodes_quantized"] == 8  # 3 Conv, MaxPool, Add, GlobalAveragePool, Flatten, Gemm
    assert result.stats["activations_absorbed"] == 3  # every Relu folds into the uint8 Q before it
    counts = ops(result.model)
    assert counts["Relu"] == 0 and counts["Conv"] == 3
    check_full(result.model)
    # Weights int8 per output channel, biases int32 at input_scale * weight_scale.
    weights = [n for n in result.model.graph if n.op_type == "DequantizeLinear" and n.inputs[0].const_value is not None]
    dtypes = sorted(n.inputs[0].const_value.dtype.name for n in weights)
    assert dtypes == ["INT32", "INT32", "INT32", "INT8", "INT8", "INT8", "INT8"]
    assert all(n.attributes["axis"].value == 0 for n in weights)
    fused = fused_ops(result.model)
    assert fused["QLinearConv"] == 3 and fused["QLinearAdd"] == 1 and fused["QLinearGlobalAveragePool"] == 1
    assert fused["QGemm"] == 1 and fused["Conv"] == 0 and fused["Gemm"] == 0
    feeds = {"x": rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND


def test_int8_activations_and_per_tensor_weights():
    model = _conv_model()
    original = model.clone()
    result = _quantize(model, {"x": (4, 3, 8, 8)}, activations="int8", per_channel=False)
    assert result.stats["activations_absorbed"] == 3  # zero point -128 clamps like Relu
    zero_points = {n.inputs[2].const_value.dtype.name for n in result.model.graph if n.op_type == "QuantizeLinear"}
    assert zero_points == {"INT8"}
    assert not any("axis" in n.attributes for n in result.model.graph if n.op_type == "DequantizeLinear")
    # ORT's x86 build allows int8-activation (S8S8) QDQ fusions only in a few places
    # (QDQIsInt8Allowed() is false off ARM): the reason uint8 is the default here.
    assert fused_ops(result.model)["QLinearConv"] < fused_ops(_quantize(_conv_model(), {"x": (4, 3, 8, 8)}).model)["QLinearConv"]
    feeds = {"x": rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND


@pytest.mark.parametrize("activations, zero", [("int8", 0), ("uint8", 128)])
def test_symmetric_activations_put_every_zero_point_in_the_middle(activations, zero):
    model = _conv_model()
    original = model.clone()
    result = _quantize(model, {"x": (4, 3, 8, 8)}, activations=activations, symmetric_activations=True)
    assert result.stats["activations_absorbed"] == 0  # a symmetric grid does not clamp at 0 like Relu
    assert ops(result.model)["Relu"] == 3
    quantizers = [n for n in result.model.graph if n.op_type == "QuantizeLinear"]
    assert quantizers and {int(n.inputs[2].const_value.numpy()) for n in quantizers} == {zero}
    assert {n.inputs[2].const_value.dtype.name for n in quantizers} == {activations.upper()}
    check_full(result.model)
    feeds = {"x": rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND


MATMUL_GEMM = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 16] x) => (float[N, 4] y) {
    h = MatMul (x, w1)
    r = Relu (h)
    y = Gemm <transB = 1> (r, w2, b2)
}
"""


def test_matmul_and_gemm_fuse_and_the_graph_output_stays_float():
    r = rng(1)
    model = make_model(MATMUL_GEMM, initializers={"w1": r.standard_normal((16, 32)).astype(np.float32),
                                                  "w2": r.standard_normal((4, 32)).astype(np.float32),
                                                  "b2": r.standard_normal(4).astype(np.float32)})
    original = model.clone()
    result = _quantize(model, {"x": (8, 16)}, count=32)
    assert result.model.graph.outputs[0].producer().op_type == "Gemm"  # no Q/DQ on the output
    fused = fused_ops(result.model)
    assert fused["QGemm"] == 1 and (fused["QLinearMatMul"] + fused["MatMulIntegerToFloat"]) == 1
    assert rel_l2(original, result.model, {"x": rng(3).standard_normal((5, 16)).astype(np.float32)}) < REL_L2_BOUND


SOFTMAX_HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 64] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    s = Sigmoid (c)
    shape = Constant <value = int64[3] {0, 4, 64}> ()
    flat = Reshape (s, shape)
    sm = Softmax <axis = 2> (flat)
    y = Mul (sm, flat)
}
"""


def test_softmax_and_post_processing_stay_float_with_reasons():
    model = _named(make_model(SOFTMAX_HEAD, initializers={"w": rng(2).standard_normal((4, 3, 3, 3)).astype(np.float32)}))
    result = _quantize(model, {"x": (2, 3, 8, 8)})
    assert result.stats["nodes_quantized"] == 1  # the Conv only
    reasons = {row["kept_float"]: row["nodes"] for row in result.details if "kept_float" in row}
    sensitive = [r for r in reasons if "Softmax" in r]
    head = [r for r in reasons if "post-processing" in r]
    assert sensitive and head
    assert sorted(reasons[head[0]]) == sorted(n.name for n in model.graph if n.op_type in ("Sigmoid", "Reshape", "Mul"))
    assert ops(result.model)["Sigmoid"] == 1 and ops(result.model)["Softmax"] == 1


def test_exclude_and_include_by_op_type_or_name():
    model = _conv_model()
    names = [n.name for n in model.graph if n.op_type == "Conv"]
    excluded = _quantize(model.clone(), {"x": (2, 3, 8, 8)}, exclude=("Add", names[0]))
    (row,) = [r for r in excluded.details if r.get("kept_float") == "excluded by --quantize-exclude"]
    assert names[0] in row["nodes"] and row["count"] == 2
    assert fused_ops(excluded.model)["QLinearAdd"] == 0 and fused_ops(excluded.model)["QLinearConv"] == 2
    included = _quantize(model.clone(), {"x": (2, 3, 8, 8)}, include=("Conv",))
    assert included.stats["nodes_quantized"] == 3 and fused_ops(included.model)["QLinearConv"] == 3


def test_graph_without_quantizable_ops_is_unchanged():
    model = make_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 4] y) {
    y = Softmax (x)
}
""")
    result = _quantize(model, {"x": (2, 4)})
    assert not result.modified and ops(result.model) == {"Softmax": 1}


def test_already_quantized_model_is_left_alone_with_a_reason():
    model = _conv_model()
    first = _quantize(model, {"x": (2, 3, 8, 8)})
    before = ops(first.model)
    second = _quantize(first.model, {"x": (2, 3, 8, 8)})
    assert not second.modified and ops(second.model) == before
    assert "already quantized" in second.details[0]["skipped"]


def test_if_subgraph_model_quantizes_the_main_graph_only():
    text = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x, bool flag) => (float[N, 4, 8, 8] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    r = Relu (c)
    y = If (flag) <
        then_branch = t () => (float[N, 4, 8, 8] a) { a = Identity (r) },
        else_branch = e () => (float[N, 4, 8, 8] b) { b = Neg (r) }
    >
}
"""
    model = make_model(text, initializers={"w": rng(4).standard_normal((4, 3, 3, 3)).astype(np.float32)})
    original = model.clone()
    calibration = [DataBatch({"x": b.inputs["x"], "flag": np.array(True)}) for b in batches({"x": (2, 3, 8, 8)})]
    result = QuantizeStatic(context=PassContext(calibration=calibration))(model)
    assert result.modified and ops(result.model)["If"] == 1
    check_full(result.model)
    feeds = {"x": rng(6).standard_normal((2, 3, 8, 8)).astype(np.float32), "flag": np.array(False)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND


def test_float16_input_is_kept_float_with_a_reason():
    text = CONV_CHAIN.split("    c2")[0].replace("float[N, 3, 8, 8] x", "float16[N, 3, 8, 8] x") + "    y = Cast <to = 1> (p1)\n}\n"
    text = text.replace("(float[N, 5] y)", "(float[N, 8, 4, 4] y)")
    weights = {k: v.astype(np.float16) for k, v in _conv_weights().items() if k in ("w1", "b1")}
    model = make_model(text, initializers=weights)
    calibration = [DataBatch({"x": b.inputs["x"].astype(np.float16)}) for b in batches({"x": (2, 3, 8, 8)})]
    result = QuantizeStatic(context=PassContext(calibration=calibration))(model)
    assert not result.modified
    assert any("FLOAT16" in row["kept_float"] for row in result.details)


@pytest.mark.parametrize("bad, message", [("nan", "NaN"), ("empty", "no samples")])
def test_bad_calibration_data_is_one_clear_error(bad, message):
    data = batches({"x": (2, 3, 8, 8)})
    if bad == "nan":
        data[1].inputs["x"][0, 0, 0, 0] = np.nan
    else:
        data = []
    with pytest.raises(DataError, match=message):
        QuantizeStatic(context=PassContext(calibration=data))(_conv_model())


def test_cache_round_trip_skips_the_second_calibration(tmp_path):
    cache = CalibrationCache()
    data = batches({"x": (2, 3, 8, 8)})
    first = QuantizeStatic(context=_CachedContext(calibration=data, calibration_cache=cache))(_conv_model())
    assert cache.modified and cache.stats
    save_calibration_cache(cache, tmp_path / "calib.npz")
    loaded = load_calibration_cache(tmp_path / "calib.npz")
    poisoned = [DataBatch({"x": np.full((2, 3, 8, 8), np.nan, np.float32)})]  # would fail if calibration ran again
    loaded.key = cache_key(_conv_model(), poisoned)  # as if it were the same data: calibration must not run again
    second = QuantizeStatic(QuantizeStaticConfig(method="mse"),
                            context=_CachedContext(calibration=poisoned, calibration_cache=loaded))(_conv_model())
    assert second.modified and second.stats["tensors_quantized"] == first.stats["tensors_quantized"]


class _CachedContext(PassContext):
    """PassContext plus the cache object the API hands to quantize-static."""

    def __init__(self, *, calibration, calibration_cache):
        super().__init__(calibration=calibration)
        object.__setattr__(self, "calibration_cache", calibration_cache)


TWO_BRANCH_HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 64] y) {
    t = Conv <pads = [1, 1, 1, 1]> (x, wt)
    tr = Relu (t)
    a = Conv <pads = [1, 1, 1, 1]> (tr, wa)
    ar = Relu (a)
    ao = Conv (ar, wa2)
    b = Conv <pads = [1, 1, 1, 1]> (tr, wb)
    br = Relu (b)
    bo = Conv (br, wb2)
    cat = Concat <axis = 1> (ao, bo)
    shape = Constant <value = int64[3] {0, 4, 64}> ()
    flat = Reshape (cat, shape)
    y = Sigmoid (flat)
}
"""


def _two_branch_model():
    r = rng(5)
    weights = {"wt": r.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.4,
               "wa": r.standard_normal((6, 6, 3, 3)).astype(np.float32) * 0.3,
               "wa2": r.standard_normal((2, 6, 1, 1)).astype(np.float32),
               "wb": r.standard_normal((6, 6, 3, 3)).astype(np.float32) * 0.3,
               "wb2": r.standard_normal((2, 6, 1, 1)).astype(np.float32)}
    return _named(make_model(TWO_BRANCH_HEAD, initializers=weights))


def test_detection_head_branches_are_not_clipped_but_the_trunk_is():
    """Per-scale head branches (YOLO's box/class convs) keep their full range: their rare extremes are the detections."""
    from onnxslim.passes.quantization import detection_head
    from onnxslim.passes.quantization.calibrate import collect_statistics

    model = _two_branch_model()
    branches = {n.outputs[0].name for n in detection_head.head_branches(model.graph, detection_head.post_processing(model.graph))}
    assert branches == {"a", "ar", "ao", "b", "br", "bo"}
    # heavy-tailed inputs and a 99th percentile: the trunk's range is clipped wherever allowed
    calibration = [DataBatch({"x": rng(10 + i).standard_t(2, (4, 3, 8, 8)).astype(np.float32)}) for i in range(4)]
    observed, _ = collect_statistics(model.clone(), calibration, ["tr", "ar"])
    result = QuantizeStatic(QuantizeStaticConfig(method="percentile", percentile=99.0, detector_min_cosine=None), context=PassContext(calibration=calibration))(model)
    scales = {n.inputs[0].name: float(n.inputs[1].const_value.numpy()) for n in result.model.graph if n.op_type == "QuantizeLinear"}
    assert scales["t"] * 255 < 0.9 * observed["tr"].maximum  # trunk (Relu absorbed into t): clipped
    assert scales["a"] * 255 == pytest.approx(observed["ar"].maximum, rel=1e-3)  # branch: full observed range


def test_opset_11_model_is_converted_to_13_for_per_channel_weights_and_says_so():
    source = CONV_CHAIN.replace('"" : 17', '"" : 11')
    shapes, feeds = {"x": (2, 3, 8, 8)}, {"x": rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    upgraded = _quantize(_named(make_model(source, initializers=_conv_weights())), shapes)
    assert upgraded.model.opset_imports[""] == 13 and upgraded.stats["opset_converted"] == 1
    assert {"opset_converted": "11 -> 13", "why": "per-channel int8 weights"} in upgraded.details
    axes = [n.attributes["axis"].value for n in upgraded.model.graph if n.op_type == "DequantizeLinear" and "axis" in n.attributes]
    assert axes and all(a == 0 for a in axes)  # per-output-channel weight scales
    kept = _quantize(_named(make_model(source, initializers=_conv_weights())), shapes, upgrade_opset=False)
    assert kept.model.opset_imports[""] == 11 and "opset_converted" not in kept.stats
    assert not any("axis" in n.attributes for n in kept.model.graph if n.op_type == "DequantizeLinear")
    original = make_model(source, initializers=_conv_weights())
    assert rel_l2(original, upgraded.model, feeds) <= rel_l2(original, kept.model, feeds) < REL_L2_BOUND
    check_full(upgraded.model)
    check_full(kept.model)


def test_calibration_reports_its_progress_through_the_context():
    said = []
    calibration = batches({"x": (2, 3, 8, 8)}, count=3)
    context = PassContext(calibration=calibration, progress=said.append)
    QuantizeStatic(context=context)(_conv_model())
    assert said == [f"quantize-static: calibrating, {n} samples" for n in (2, 4, 6)]


def test_minmax_skips_histograms_and_keeps_them_out_of_the_cache():
    data = batches({"x": (2, 3, 8, 8)})
    cache = CalibrationCache()
    minmax = QuantizeStatic(QuantizeStaticConfig(method="minmax"),
                            context=_CachedContext(calibration=data, calibration_cache=cache))(_conv_model())
    assert not cache.modified and not cache.stats  # min/max-only statistics would mislead a later mse run
    full = CalibrationCache()
    QuantizeStatic(QuantizeStaticConfig(method="mse"), context=_CachedContext(calibration=data, calibration_cache=full))(
        _conv_model())
    assert full.stats and all(s.counts.sum() > 0 for s in full.stats.values())
    # the same ranges as minmax over full statistics: same Q/DQ scales
    reused = QuantizeStatic(QuantizeStaticConfig(method="minmax"),
                            context=_CachedContext(calibration=data, calibration_cache=full))(_conv_model())
    scales = [{n.name: float(n.inputs[1].const_value.numpy()) for n in r.model.graph if n.op_type == "QuantizeLinear"}
              for r in (minmax, reused)]
    assert scales[0] == pytest.approx(scales[1], rel=1e-6) and scales[0]


AFFINE_BETWEEN_CONVS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1)
    h = HardSigmoid <alpha = 0.1666667, beta = 0.5> (c1)
    a = Mul (c1, h)
    s = Mul (a, scale)
    b = Add (s, shift)
    c2 = Conv <pads = [1, 1, 1, 1]> (b, w2)
    y = Sigmoid (c2)
}
"""

BIAS_THEN_RESIDUAL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8, 16] x) => (float[N, 8, 16] y) {
    n = LayerNormalization <axis = -1> (x, gamma, beta)
    m = MatMul (n, w)
    b = Add (m, bias)
    r = Add (b, n)
    y = LayerNormalization <axis = -1> (r, gamma, beta)
}
"""


def test_constant_operands_are_quantized_only_when_asked_and_only_between_quantized_ops():
    r = rng(11)
    affine = {"w1": r.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3,
              "w2": r.standard_normal((4, 6, 3, 3)).astype(np.float32) * 0.3,
              "scale": np.array(1.5, np.float32), "shift": np.array(-0.2, np.float32)}
    shapes = {"x": (2, 3, 8, 8)}
    default = _quantize(make_model(AFFINE_BETWEEN_CONVS, initializers=affine), shapes)
    asked = _quantize(make_model(AFFINE_BETWEEN_CONVS, initializers=affine), shapes, constant_operands=True)
    assert fused_ops(default.model)["QLinearAdd"] == 0 and fused_ops(default.model)["QLinearMul"] == 0
    assert fused_ops(asked.model)["QLinearAdd"] == 1 and fused_ops(asked.model)["QLinearMul"] == 2  # x*h and *scale
    feeds = {"x": rng(12).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    original = make_model(AFFINE_BETWEEN_CONVS, initializers=affine)
    assert rel_l2(original, asked.model, feeds) < REL_L2_BOUND
    check_full(asked.model)
    # a bias Add whose result only float ops read (the residual Add before a LayerNorm) stays float,
    # and so does the MatMul output it would have re-rounded
    residual = {"w": r.standard_normal((16, 16)).astype(np.float32) / 4, "bias": r.standard_normal(16).astype(np.float32),
                "gamma": np.ones(16, np.float32), "beta": np.zeros(16, np.float32)}
    result = _quantize(make_model(BIAS_THEN_RESIDUAL, initializers=residual), {"x": (4, 8, 16)}, constant_operands=True)
    (matmul,) = [n for n in result.model.graph if n.op_type == "MatMul"]
    assert matmul.outputs[0].consumers()[0].op_type == "Add"  # no QuantizeLinear on the MatMul output
    assert fused_ops(result.model)["QLinearAdd"] == 0


def test_detectors_get_mixed_precision_by_default_and_classifiers_do_not():
    detector = _quantize(_two_branch_model(), {"x": (2, 3, 8, 8)})
    (summary,) = [row["mixed_precision"] for row in detector.details if "mixed_precision" in row]
    assert summary["target_cosine"] == 0.9999 and summary["target_met"]
    assert summary["cosine_per_output_part"] is False
    assert "tensors_kept_float_by_sensitivity" in detector.stats
    classifier = _quantize(_conv_model(), {"x": (2, 3, 8, 8)})
    assert not any("mixed_precision" in row for row in classifier.details)
    off = _quantize(_two_branch_model(), {"x": (2, 3, 8, 8)}, detector_min_cosine=None)
    assert not any("mixed_precision" in row for row in off.details)
