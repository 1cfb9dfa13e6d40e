"""Quantization helpers at their boundaries: ranges, dynamic and weight-only selection, float16
refusals, bias correction and mixed precision's scoring.

Pinned by a mutation audit: each test fails when the condition it names is dropped or loosened.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.passes.quantization.bias_correction import _input_means
from onnxslim.passes.quantization.common import tensor_dtypes
from onnxslim.passes.quantization.convert_fp16 import ConvertFp16, ConvertFp16Config
from onnxslim.passes.quantization.mixed_precision import _shortest_prefix, concat_parts, output_cosine
from onnxslim.passes.quantization.sensitivity import rank_tensors
from onnxslim.passes.quantization.quantize_dynamic import QuantizeDynamic, QuantizeDynamicConfig
from onnxslim.passes.quantization.quantize_weights import QuantizeWeights, QuantizeWeightsConfig
from onnxslim.passes.quantization.ranges import tensor_range
from onnxslim.passes.quantization.statistics import TensorStats
from tests.helpers import make_model, rng


def test_entropy_range_when_the_histogram_holds_only_zeros():
    """The sampled histogram is all in the zero bin (the extremes fell between samples): entropy
    falls back to the exact [min, max] instead of a KL search over nothing.
    (mutation: ``if not magnitude[1:].any():`` -> ``if False:``; the search then raises IndexError)"""
    stats = TensorStats()
    stats.observe(0.0, 100.0, np.zeros(1000, np.float32))
    assert tensor_range(stats, "entropy") == (0.0, 100.0)


def test_percentile_keeps_zero_as_the_low_end_of_a_relu_tensor():
    """A non-negative tensor (min exactly 0) is ranged one-sided: the low end stays its minimum, 0,
    even when few values are 0 (else the zeros would be clipped up to the first percentile edge).
    (mutation: ``if stats.minimum < 0 else`` -> ``<= 0`` in _percentile)"""
    stats = TensorStats()
    values = np.random.default_rng(0).uniform(1.0, 10.0, 100000).astype(np.float32)
    values[0] = 0.0
    stats.update(values)
    low, high = tensor_range(stats, "percentile", percentile=99.0)
    assert low == 0.0 and 9.0 < high <= 10.0


def test_quantization_mse_grid_always_holds_zero():
    """The asymmetric grid of quantization_mse spans zero (as ORT's uint8 grid does): a range
    [1, 10] is measured on [0, 10]. (mutation: dropping ``low, high = min(low, 0.0), max(high, 0.0)``)"""
    from onnxslim.passes.quantization.ranges import quantization_mse

    values = np.random.default_rng(0).uniform(1.0, 10.0, 10000).astype(np.float32)
    assert quantization_mse(values, 1.0, 10.0) == quantization_mse(values, 0.0, 10.0)
    assert quantization_mse(-values, -10.0, -1.0) == quantization_mse(-values, -10.0, 0.0)


def _one_layer(body, w_shape, opset=17, x="float[N, 16] x", y="float[N, 32] y"):
    return make_model(f"""<ir_version: 8, opset_import: ["" : {opset}]>
        g ({x}) => ({y}) {{ {body} }}""", initializers={"w": rng(0).standard_normal(w_shape).astype(np.float32)})


def _kept(result):
    return {r["op"]: r["kept_float"] for r in result.details if "kept_float" in r}


def test_qd_three_dimensional_weight_stays_float():
    """A batched [2, 16, 32] MatMul weight is no 2-D matrix for MatMulInteger's per-column scales.
    (mutation: ``len(weight.shape) != 2`` -> ``> 3``)"""
    result = QuantizeDynamic()(_one_layer("y = MatMul (x, w)", (2, 16, 32), x="float[2, N, 16] x", y="float[2, N, 32] y"))
    assert not result.modified and _kept(result) == {"MatMul": "weight is not a 2-D tensor"}


def test_qd_weight_of_exactly_min_elements_is_quantized():
    """min_elements is inclusive: a 16 x 32 weight (512) is quantized at min_elements=512, not at 513.
    (mutation: ``< config.min_elements`` -> ``<=``)"""
    assert QuantizeDynamic(QuantizeDynamicConfig(min_elements=512))(_one_layer("y = MatMul (x, w)", (16, 32))).modified
    assert not QuantizeDynamic(QuantizeDynamicConfig(min_elements=513))(_one_layer("y = MatMul (x, w)", (16, 32))).modified


def test_qd_gemm_with_trans_a_stays_float():
    """Gemm(transA=1) has no MatMulInteger form here: kept float with the reason.
    (mutation: dropping ``attrs.get("transA", 0) or``)"""
    result = QuantizeDynamic()(_one_layer("y = Gemm <transA = 1> (x, w)", (16, 32), x="float[16, N] x"))
    assert not result.modified and _kept(result) == {"Gemm": "Gemm with transA/alpha/beta"}


def _why(w_shape, constant_node=False, **config):
    k, n = w_shape
    if constant_node:
        values = ", ".join(["0.5"] * (k * n))
        body = f"w = Constant <value = float[{k}, {n}] {{{values}}}> ()\n y = MatMul (x, w)"
        weights = {}
    else:
        body, weights = "y = MatMul (x, w)", {"w": rng(0).standard_normal(w_shape).astype(np.float32)}
    model = make_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, {k}] x) => (float[N, {n}] y) {{ {body} }}""", initializers=weights)
    node = [n for n in model.graph if n.op_type == "MatMul"][0]
    return QuantizeWeights(QuantizeWeightsConfig(**config))._reason(node, tensor_dtypes(model))


def test_qw_weight_fed_by_a_constant_node_stays_float_with_the_reason():
    """ORT's MatMulNBits quantizer reads initializers only: a Constant-node weight is reported, not passed on.
    (mutation: ``if weight.name not in node.graph.initializers:`` -> ``if False:``)"""
    assert _why((64, 8), constant_node=True) == "weight is not an initializer (fed by a Constant node)"
    assert _why((64, 8)) is None


def test_qw_blocks_as_large_as_the_float_weight_stay_float():
    """K = 5 rows, 4-bit blocks of 32: 16 packed bytes + a 4-byte scale per column = the 20 float bytes: no gain.
    (mutation: ``_packed_bytes(...) >= tensor.nbytes`` -> ``>``)"""
    assert _why((5, 8)) == "K = 5 rows: blocks of 32 would take more bytes than the float weight"
    assert _why((6, 8)) is None


def test_qw_min_elements_is_inclusive():
    """A weight with exactly min_elements elements is quantized.
    (mutation: ``np.prod(tensor.shape) < config.min_elements`` -> ``<=``)"""
    assert _why((64, 8), min_elements=512) is None
    assert _why((64, 8), min_elements=513) == "weight has fewer than 513 elements"


def test_qw_include_naming_another_op_keeps_the_matmul_float():
    """--quantize-include Gemm: a MatMul is not selected.
    (mutation: the include check in _reason disabled)"""
    assert _why((64, 8), include=("Gemm",)) == "not in --quantize-include"
    assert _why((64, 8), include=("MatMul",)) is None


def test_fp16_default_risky_op_absent_from_the_model_is_no_warning():
    """keep_float naming a default risky op (Exp...) that the model lacks: no "matches no node" warning.
    (mutation: dropping ``and entry not in RISKY_OPS`` in _unmatched_keep_float)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 4] y) { y = MatMul (x, w) }""",
                       initializers={"w": rng(0).standard_normal((8, 4)).astype(np.float32)})
    result = ConvertFp16(ConvertFp16Config(keep_float=("Exp", "Softmax")))(model)
    warnings = [d["warning"] for d in result.details if "warning" in d]
    assert result.modified and not any("'Exp'" in w for w in warnings)


def test_fp16_model_with_float16_weights_is_left_as_it_was():
    """A model that already holds float16 weights is refused with the reason (converting again would
    double-cast its boundary). (mutation: the float16-weights check in _already_half disabled)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 4] y) {
            c = Cast <to = 1> (w)
            y = MatMul (x, c)
        }""", initializers={"w": rng(0).standard_normal((8, 4)).astype(np.float16)})
    result = ConvertFp16()(model)
    assert not result.modified and {"skipped": "model already has float16 weights"} in result.details


def test_bias_correction_mean_of_a_single_position_is_that_value():
    """One calibration sample of a Gemm input [1, K]: the per-channel mean is that row itself.
    (mutation: ``totals[n] / max(counts[n], 1)`` -> ``max(counts[n], 2)``: the mean halved)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 4] y) { y = Gemm <transB = 1> (x, w, b) }""",
                       initializers={"w": rng(0).standard_normal((4, 8)).astype(np.float32),
                                     "b": np.zeros(4, np.float32)})
    x = rng(1).standard_normal((1, 8)).astype(np.float32)
    gemm = next(iter(model.graph))
    means = _input_means(model, [gemm], [{"x": x}])
    np.testing.assert_allclose(means["x"], x[0], rtol=1e-6)


def test_mp_shortest_prefix_boundaries():
    """Nothing kept float when the quantized model already meets the target exactly; the bisection
    returns the smallest k whose score equals the target. (mutations: ``score(0) >= target`` -> ``>``;
    ``score(middle) < target`` -> ``<=``)"""
    assert _shortest_prefix(lambda k: 0.99, 10, 0.99) == 0
    assert _shortest_prefix(lambda k: float(k), 10, 5.0) == 5


def test_mp_a_tensor_that_is_all_zeros_ranks_last():
    """A tensor with no signal (all zeros) has no rounding noise worth keeping float: ratio 0, ranked last.
    (mutation: ``if signal[n] > 0 else 0.0`` -> ``else 1.0``)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 8] y) {
            zero = Constant <value = float {0.0}> ()
            z = Mul (x, zero)
            y = Add (z, x)
        }""")
    params = {name: (np.float32(0.03), np.uint8(128)) for name in ("x", "z")}
    ranking = rank_tensors(model, params, [{"x": rng(0).standard_normal((4, 8)).astype(np.float32)}])
    assert [name for name, _ in ranking] == ["x", "z"] and ranking[1][1] == 0.0


def test_mp_output_cosine_of_integer_outputs_of_another_shape_is_zero():
    """Integer outputs (class ids) of another shape agree nowhere, even when they would broadcast.
    (mutation: dropping ``got.shape == expected.shape and``)"""
    expected = {"ids": np.array([[1, 2], [1, 2]], np.int64)}
    assert output_cosine(expected, {"ids": np.array([1, 2], np.int64)}) == 0.0
    assert output_cosine(expected, {"ids": expected["ids"].copy()}) == 1.0


def test_mp_output_cosine_of_two_zero_outputs_is_one():
    """Both outputs all zeros: they agree (1.0); zeros against non-zeros: 0.0.
    (mutation: ``else float(np.array_equal(a, b))`` -> ``else 0.0`` in _cosine)"""
    zeros = {"y": np.zeros((2, 3), np.float32)}
    assert output_cosine(zeros, {"y": np.zeros((2, 3), np.float32)}) == 1.0
    assert output_cosine(zeros, {"y": np.ones((2, 3), np.float32)}) == 0.0


def test_mp_concat_with_an_empty_part_is_not_split():
    """A Concat output whose parts include a 0-wide one is scored whole (a 0-size part has no cosine).
    (mutation: ``all(isinstance(size, int) and size > 0 ...)`` -> ``True``)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] a, float[N, 0] b, float[N, 2] c) => (float[N, 6] y) { y = Concat <axis = 1> (a, b, c) }""")
    assert concat_parts(model) == {}
    whole = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] a, float[N, 2] c) => (float[N, 6] y) { y = Concat <axis = 1> (a, c) }""")
    assert concat_parts(whole) == {"y": (1, [4, 2])}


@pytest.mark.parametrize("constant, converted", [("int64[2] {4, 8}", False), ("float[1] {2.0}", True)])
def test_fp16_without_weights_converts_only_for_float_constants(constant, converted):
    """A model whose only constant is an int64 shape has nothing to halve: it used to get a Cast
    pair around its float ops; a float Constant node (a Paddle weight) is a weight."""

    dims = "4, 8"
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[{dims}] x) => (float[{dims}] y) {{
        c = Constant <value = {constant}> ()
        y = {"Reshape (x, c)" if "int64" in constant else "Mul (x, c)"}
    }}
    """
    result = ConvertFp16()(make_model(text))
    assert result.modified is converted
    if not converted:
        assert result.details == [{"skipped": "no float32 weights"}]
