"""SiLU-aware ranges, unclipped head outputs, sensitivity ranking / mixed precision, bias correction."""

import numpy as np
import pytest
import onnx_ir as ir

from onnxslim.core.pass_base import PassContext
from onnxslim.data import DataBatch
from onnxslim.passes.quantization.mixed_precision import output_cosine, run_outputs, subset
from onnxslim.passes.quantization.sensitivity import fake_quantize, rank_tensors
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from onnxslim.passes.quantization.ranges import silu, silu_low
from onnxslim.passes.quantization.statistics import TensorStats
from onnxslim.passes.quantization.qdq import activation_params
from tests.helpers import check_full, make_model, rng, run_ort
from tests.passes.quantization.test_quantize_static import _conv_model, _conv_weights
from tests.passes.quantization.util import context, ops, rel_l2


def test_silu_input_range_drops_the_useless_negative_tail():
    # A YOLO-like pre-activation: body around 0, long negative tail down to -150.
    r = rng(0)
    values = np.concatenate([r.normal(0, 2, 200000), -r.exponential(30, 2000)]).astype(np.float32)
    stats = TensorStats()
    stats.update(values)
    high = float(values.max())
    low = silu_low(stats, stats.minimum, high)
    assert stats.minimum < -100 and -20 < low < -2

    def error_after_silu(lo):
        scale, zero = activation_params(lo, high, "uint8")
        return float(np.mean((silu(fake_quantize(values, scale, zero)) - silu(values)) ** 2))

    assert error_after_silu(low) < 0.2 * error_after_silu(stats.minimum)  # measured ~0.05x
    assert silu_low(stats, 0.0, high) == 0.0  # nothing to cut on a non-negative tensor


HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 64] y) {
    c = Conv (x, w)
    shape = Constant <value = int64[3] {0, 4, 64}> ()
    flat = Reshape (c, shape)
    y = Sigmoid (flat)
}
"""


def test_head_outputs_read_by_post_processing_keep_their_extremes():
    # Like YOLOv8's class logits: the rare large values are the detections; clipping them
    # (percentile / entropy / mse) would cap every score.
    model = make_model(HEAD, initializers={"w": rng(1).standard_normal((4, 3, 1, 1)).astype(np.float32)})
    data = [DataBatch({"x": rng(i).standard_t(2, (4, 3, 8, 8)).astype(np.float32)}) for i in range(4)]
    result = QuantizeStatic(QuantizeStaticConfig(method="percentile", percentile=99.0),
                            context=PassContext(calibration=data))(model)
    (q,) = [n for n in result.model.graph if n.op_type == "QuantizeLinear" and n.inputs[0].name == "c"]
    scale, zero = float(q.inputs[1].const_value.numpy()), int(q.inputs[2].const_value.numpy())
    reference = make_model(HEAD, initializers={"w": rng(1).standard_normal((4, 3, 1, 1)).astype(np.float32)})
    conv = np.concatenate([run_ort(_with_output(reference, "c"), b.inputs)[1] for b in data])
    assert np.percentile(conv, 99.0) < 0.5 * conv.max()  # a percentile range would clip a lot here
    # Observed min/max kept, up to one step (the zero point is rounded to an integer).
    assert scale * (255 - zero) >= conv.max() - scale and -scale * zero <= conv.min() + scale


def _with_output(model, name):
    value = next(v for n in model.graph for v in n.outputs if v.name == name)
    model.graph.outputs.append(value)
    return model


def test_ranking_puts_the_worst_quantized_tensor_first():
    model = _conv_model()
    params = {"x": (np.float32(0.02), np.array(128, np.uint8)), "c1": (np.float32(2.0), np.array(128, np.uint8)),
              "s": (np.float32(0.05), np.array(128, np.uint8))}
    ranking = rank_tensors(model, params, subset(context({"x": (4, 3, 8, 8)}).calibration, 8))
    assert [name for name, _ in ranking][0] == "c1" and all(error > 0 for _, error in ranking)
    assert ranking[0][1] > 3 * ranking[-1][1]


def test_mixed_precision_keeps_the_worst_tensors_float_until_the_target_is_met():
    shapes = {"x": (4, 3, 8, 8)}
    loose = QuantizeStatic(QuantizeStaticConfig(min_cosine=0.5), context=context(shapes))(_conv_model())
    (summary,) = [row["mixed_precision"] for row in loose.details if "mixed_precision" in row]
    assert summary["tensors_kept_float"] == 0 and summary["target_met"]
    assert ops(loose.model) == ops(QuantizeStatic(context=context(shapes))(_conv_model()).model)
    start = summary["cosine_all_quantized"]
    target = 1 - (1 - start) / 4  # a quarter of the all-int8 error
    tight = QuantizeStatic(QuantizeStaticConfig(min_cosine=target), context=context(shapes))(_conv_model())
    (summary,) = [row["mixed_precision"] for row in tight.details if "mixed_precision" in row]
    assert summary["target_met"] and summary["cosine_final"] >= target and summary["tensors_kept_float"] >= 1
    assert tight.stats["tensors_kept_float_by_sensitivity"] == summary["tensors_kept_float"]
    assert tight.stats["weight_elements_quantized_fraction"] < loose.stats["weight_elements_quantized_fraction"] == 1.0
    ranks = [row for row in tight.details if "sensitivity_rank" in row]
    assert sum(row["kept_float"] for row in ranks) == summary["tensors_kept_float"]
    assert any("sensitivity" in row.get("kept_float", "") for row in tight.details if isinstance(row.get("kept_float"), str))
    check_full(tight.model)
    feeds = {"x": rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    assert rel_l2(_conv_model(), tight.model, feeds) < rel_l2(_conv_model(), loose.model, feeds)


CONV_IDENTITY = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 32, 12, 12] x) => (float[N, 8, 10, 10] y) {
    c = Conv (x, w, b)
    y = Identity (c)
}
"""


def _wide_conv():
    r = rng(3)
    return make_model(CONV_IDENTITY, initializers={"w": r.standard_normal((8, 32, 3, 3)).astype(np.float32) * 0.05,
                                                   "b": r.standard_normal(8).astype(np.float32) * 0.1})


def test_bias_correction_removes_the_per_channel_mean_shift():
    # 288 inputs per output with mean 1: int8 weight rounding shifts each channel's mean by
    # sum(W_q - W) (~0.005 here, measured); the correction leaves ~0.0001 (what the output's own
    # rounding adds). Bound: a fifth of the uncorrected shift.
    data = [DataBatch({"x": rng(10 + i).uniform(0, 2, (8, 32, 12, 12)).astype(np.float32)}) for i in range(4)]
    feeds = {"x": rng(99).uniform(0, 2, (16, 32, 12, 12)).astype(np.float32)}
    expected = run_ort(_wide_conv(), feeds)[0]
    shifts = {}
    for correct in (False, True):
        result = QuantizeStatic(QuantizeStaticConfig(bias_correction=correct),
                                context=PassContext(calibration=data))(_wide_conv())
        shifts[correct] = np.abs((run_ort(result.model, feeds)[0] - expected).mean(axis=(0, 2, 3))).mean()
    assert result.stats["biases_corrected"] == 1
    (row,) = [r for r in result.details if "bias_corrected" in r]
    assert row["channels"] == 8 and row["mean_abs_shift"] == pytest.approx(shifts[False], rel=0.3)
    assert shifts[True] < 0.2 * shifts[False]
    check_full(result.model)


def _labelled(model, count=16, batch=32, seed=0):
    """Heavy-tailed random inputs labelled with the float model's own top-1: float accuracy is 100% by
    construction, and the clipped ranges flip about 8% of the int8 predictions (measured 0.916)."""
    r = rng(seed)
    result = []
    for _ in range(count):
        x = r.standard_t(1.5, (batch, 3, 8, 8)).astype(np.float32)
        result.append(DataBatch({"x": x}, run_ort(model, {"x": x})[0].argmax(1)))
    return result


def test_max_accuracy_drop_keeps_tensors_float_until_accuracy_on_the_labels_holds():
    calibration = _labelled(_conv_model())
    plain = QuantizeStatic(QuantizeStaticConfig(max_accuracy_drop=0.5), context=PassContext(calibration=calibration))
    (summary,) = [row["mixed_precision"] for row in plain(_conv_model()).details if "mixed_precision" in row]
    assert summary["float_accuracy"] == 1.0 and summary["tensors_kept_float"] == 0
    all_int8 = summary["accuracy_all_quantized"]
    assert all_int8 < 0.97  # else the test proves nothing
    bound = (1 - all_int8) / 3
    result = QuantizeStatic(QuantizeStaticConfig(max_accuracy_drop=bound, accuracy_samples=256),
                            context=PassContext(calibration=calibration))(_conv_model())
    (summary,) = [row["mixed_precision"] for row in result.details if "mixed_precision" in row]
    assert summary["target_met"] and summary["tensors_kept_float"] >= 1 and summary["samples"] == 256
    assert 1.0 - summary["accuracy_final"] <= bound
    # the reported accuracy is what ONNX Runtime gives on those samples
    x = np.concatenate([b.inputs["x"] for b in calibration[:8]])
    labels = np.concatenate([b.labels for b in calibration[:8]])
    assert np.mean(run_ort(result.model, {"x": x})[0].argmax(1) == labels) == pytest.approx(summary["accuracy_final"])
    check_full(result.model)


def test_max_accuracy_drop_without_labels_is_one_clear_error():
    from onnxslim.errors import DataError

    with pytest.raises(DataError, match="needs labels"):
        QuantizeStatic(QuantizeStaticConfig(max_accuracy_drop=0.01), context=context({"x": (4, 3, 8, 8)}))(_conv_model())
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        QuantizeStaticConfig(max_accuracy_drop=1.5)


def test_concatenated_output_is_scored_part_by_part():
    """A detector output joins boxes (hundreds of pixels) and scores (0-1): a 20% error on every
    score is invisible in one cosine over the whole output, and found when each part is scored."""
    model = make_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4, 6] boxes, float[N, 2, 6] logits) => (float[N, 6, 6] out) {
            scores = Sigmoid(logits)
            out = Concat<axis = 1>(boxes, scores)
        }""")
    from onnxslim.passes.quantization.mixed_precision import concat_parts, output_cosine

    parts = concat_parts(model)
    assert parts == {"out": (1, [4, 2])}
    boxes = rng(0).uniform(100, 300, (3, 4, 6)).astype(np.float32)
    scores = rng(1).uniform(0, 1, (3, 2, 6)).astype(np.float32)
    reference = {"out": np.concatenate([boxes, scores], axis=1)}
    noisy = {"out": np.concatenate([boxes, scores * rng(2).uniform(0.6, 1.4, scores.shape)], axis=1).astype(np.float32)}
    assert output_cosine(reference, noisy) > 0.9999
    assert output_cosine(reference, noisy, parts) < 0.99
    assert output_cosine(reference, reference, parts) == pytest.approx(1.0)


def test_refinement_reorders_the_ranking_by_measured_output_effect():
    """The noise ranking puts c1 first (a coarse scale), but only keeping ``s`` float repairs the
    output: without refinement the search keeps a prefix reaching down to ``s``; measuring each
    candidate's own effect on the output puts ``s`` first and keeps it alone."""
    from onnxslim.passes.quantization.mixed_precision import Goal, search

    clean = _conv_model()
    noisy = _conv_model()
    noisy.graph.initializers["w4"].const_value = ir.tensor(_conv_weights()["w4"] + rng(9).standard_normal((5, 8)).astype(np.float32) * 0.3)
    params = {"x": (np.float32(0.02), np.array(128, np.uint8)), "c1": (np.float32(2.0), np.array(128, np.uint8)),
              "s": (np.float32(0.05), np.array(128, np.uint8))}

    def build(floats):
        return (clean if "s" in floats else noisy), params

    calibration = context({"x": (4, 3, 8, 8)}).calibration
    plain, _, _ = search(clean, build, calibration, goal=Goal(0.9999), samples=8, accuracy_samples=8)
    refined, rows, _ = search(clean, build, calibration, goal=Goal(0.9999), samples=8, accuracy_samples=8, refine=3)
    assert "s" in plain and len(plain) >= 2
    assert refined == {"s"}
    ranks = [row for row in rows if "sensitivity_rank" in row]
    assert ranks[0]["tensor"] == "s" and ranks[0]["output_gain"] > 0 and ranks[0]["kept_float"]


def test_the_reported_final_cosine_is_the_written_model_s():
    # the search scores candidates without int8 embedding tables or bias correction, which come
    # after it: YOLOv8n reported "cosine_final 0.99541, target met" for a written model at 0.99513
    from onnxslim.core.pass_base import PassContext
    from onnxslim.data import DataBatch
    from tests.passes.quantization.test_embedding import _model as embedding_model

    calibration = [DataBatch({"ids": rng(i).integers(0, 400, (4, 6)).astype(np.int64)}) for i in range(2)]
    config = QuantizeStaticConfig(min_cosine=0.5, sensitivity_samples=8)
    result = QuantizeStatic(config, context=PassContext(calibration=calibration))(embedding_model())
    (summary,) = [row["mixed_precision"] for row in result.details if "mixed_precision" in row]
    assert result.stats["embeddings_quantized"] == 1
    feeds = subset(calibration, 8)
    written = output_cosine(run_outputs(embedding_model(), feeds), run_outputs(result.model, feeds))
    assert summary["cosine_final"] == round(written, 6) and summary["target_met"], (summary, written)


DEPTHWISE_READ = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8, 6, 6] x) => (float[N, 8, 6, 6] y) {
    a = Mul (x, skewed)
    d = Conv <group = 8> (a, depthwise)
    b = Mul (x, even)
    e = Conv (b, mixing)
    y = Add (d, e)
}
"""


def test_a_tensor_a_depthwise_conv_reads_is_scored_per_channel():
    # PicoDet's stem: one channel at 94 beside a median of 3.4 on one 8-bit grid crushes the small
    # channels, and a depthwise Conv passes each one's noise on alone; the whole-tensor ratio
    # (dominated by the big channel) ranked it 117th of 193, and F1 fell to 0.75 all int8
    skewed = np.ones((1, 8, 1, 1), np.float32)
    skewed[0, 0] = 100.0
    model = make_model(DEPTHWISE_READ, initializers={
        "skewed": skewed, "even": np.full((1, 8, 1, 1), 3.0, np.float32),
        "depthwise": rng(1).standard_normal((8, 1, 1, 1)).astype(np.float32),
        "mixing": rng(2).standard_normal((8, 8, 1, 1)).astype(np.float32)})
    x = rng(3).standard_normal((4, 8, 6, 6)).astype(np.float32)
    a, b = x * skewed, x * 3.0
    params = {"a": (np.float32(np.abs(a).max() / 127), np.int8(0)),   # 8 bits over the big channel
              "b": (np.float32(np.abs(b).max() / 7), np.int8(0))}      # a coarse grid, but even
    ranking = dict(rank_tensors(model, params, [{"x": x}]))
    assert ranking["a"] > 0.5  # 7 of 8 channels mostly rounded to 0
    assert ranking["b"] < 0.3 < ranking["a"]
    whole = float(np.linalg.norm(fake_quantize(a, *params["a"]) - a) / np.linalg.norm(a))
    assert whole < ranking["b"]  # what the whole-tensor ratio said: a looked the safer one
