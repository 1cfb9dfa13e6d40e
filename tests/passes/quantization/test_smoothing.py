"""quantize-static on transformer patterns: activation smoothing into GELU's constant, and float
readers of a float op's output (the residual stream) keeping the exact value."""

import numpy as np
import pytest

from onnxslim.core.pass_base import PassContext
from onnxslim.passes.quantization import smoothing
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from onnxslim.runtime.session import make_session
from tests.helpers import check_full, make_model, rng, run_ort
from tests.passes.quantization.util import REL_L2_BOUND, batches, context, fused_ops, rel_l2

# GELU as PyTorch exports it at opset 17: x * (1 + erf(x / sqrt 2)) * 0.5, then the FFN's output MatMul
GELU_FFN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8, 16] x) => (float[N, 8, 16] y) {
    h = MatMul (x, w1)
    d = Div (h, sqrt2)
    e = Erf (d)
    one_plus = Add (e, one)
    g1 = Mul (h, one_plus)
    g2 = Mul (g1, half)
    y = MatMul (g2, w2)
}
"""


def _gelu_ffn(outlier: float = 30.0):
    r = rng(1)
    w1 = r.standard_normal((16, 32)).astype(np.float32) / 4
    w1[:, 5] *= outlier  # one hidden channel far above the others (MiniLM's: 24.7 vs median 1.0)
    return make_model(GELU_FFN, initializers={
        "w1": w1, "w2": r.standard_normal((32, 16)).astype(np.float32) / 6, "sqrt2": np.array(1.4142135, np.float32),
        "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)})


def test_smoothing_rewrite_is_exact_in_float():
    model = _gelu_ffn()
    original = model.clone()
    (site,) = smoothing.find_sites(model.graph, set(model.graph))
    session = make_session(model, extra_outputs=[site.value.name])
    values = np.concatenate([session.run([site.value.name], b.inputs)[0] for b in batches({"x": (4, 8, 16)})])
    maxima = np.abs(values).reshape(-1, values.shape[-1]).max(axis=0)
    row = smoothing.rewrite(model.graph, site, smoothing.divisors(site, maxima, alpha=0.75), maxima)
    assert row["outlier_ratio"] > 8 and row["channels"] == 32
    assert ir_const(site.mul.inputs[1]).shape == (32,)  # the scalar 0.5 became a per-channel vector
    feeds = {"x": rng(9).standard_normal((2, 8, 16)).astype(np.float32)}
    np.testing.assert_allclose(run_ort(model, feeds)[0], run_ort(original, feeds)[0], rtol=1e-4, atol=1e-4)
    check_full(model)


def ir_const(value):
    import onnx_ir as ir

    return ir.convenience.get_const_tensor(value).numpy()


def test_smoothing_lowers_the_int8_error_of_an_outlier_channel():
    shapes, feeds = {"x": (4, 8, 16)}, {"x": rng(7).standard_normal((4, 8, 16)).astype(np.float32)}
    plain = QuantizeStatic(QuantizeStaticConfig(smoothing_alpha=0.0), context=context(shapes, count=8))(_gelu_ffn())
    smoothed = QuantizeStatic(context=context(shapes, count=8))(_gelu_ffn())
    assert "activations_smoothed" not in plain.stats and smoothed.stats["activations_smoothed"] == 1
    (row,) = [r for r in smoothed.details if "smoothed" in r]
    assert row["matmuls"] and row["max_scale"] > 1
    error_plain, error_smoothed = rel_l2(_gelu_ffn(), plain.model, feeds), rel_l2(_gelu_ffn(), smoothed.model, feeds)
    assert error_smoothed < 0.6 * error_plain  # measured 0.36x
    assert fused_ops(smoothed.model)["MatMulIntegerToFloat"] + fused_ops(smoothed.model)["QLinearMatMul"] == 2
    check_full(smoothed.model)


def test_no_smoothing_without_outliers_or_when_a_reader_is_not_a_matmul():
    shapes = {"x": (4, 8, 16)}
    mild = QuantizeStatic(context=context(shapes))(_gelu_ffn(outlier=1.0))
    assert "activations_smoothed" not in mild.stats
    model = _gelu_ffn()
    assert smoothing.find_sites(model.graph, set(model.graph))
    (g2,) = [n for n in model.graph if n.outputs[0].name == "g2"]
    model.graph.outputs.append(g2.outputs[0])  # also a graph output: its values must stay as they are
    assert not smoothing.find_sites(model.graph, set(model.graph))


RESIDUAL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8, 16] x) => (float[N, 8, 16] y) {
    n = LayerNormalization <axis = -1> (x, gamma, beta)
    m = MatMul (n, w)
    s = Add (n, m)
    y = LayerNormalization <axis = -1> (s, gamma, beta)
}
"""


def test_float_readers_of_a_float_op_keep_the_exact_value():
    r = rng(3)
    model = make_model(RESIDUAL, initializers={"w": r.standard_normal((16, 16)).astype(np.float32) / 4,
                                               "gamma": np.ones(16, np.float32), "beta": np.zeros(16, np.float32)})
    result = QuantizeStatic(context=context({"x": (4, 8, 16)}))(model)
    (add,) = [n for n in result.model.graph if n.op_type == "Add"]
    (matmul,) = [n for n in result.model.graph if n.op_type == "MatMul"]
    assert add.inputs[0].producer().op_type == "LayerNormalization"  # the residual reads n itself
    assert matmul.inputs[0].producer().op_type == "DequantizeLinear"  # the MatMul reads int8 n
    assert fused_ops(result.model)["MatMulIntegerToFloat"] == 1
    check_full(result.model)


def _qdq_scale(model, tensor: str) -> float:
    (q,) = [n for n in model.graph if n.op_type == "QuantizeLinear" and n.inputs[0].name == tensor]
    return float(ir_const(q.inputs[1]))


@pytest.mark.parametrize("method", ["minmax", "mse"])
@pytest.mark.parametrize("batch, count", [(4, 8), (12, 3)])  # 12: the 16th sample falls inside a batch
def test_smoothing_maxima_come_from_the_calibration_run_itself(monkeypatch, method, batch, count):
    import onnxslim.passes.quantization.calibrate as calibrate
    from onnxslim.core.pass_base import PassContext
    from onnxslim.passes.quantization.cache import CalibrationCache

    sessions = []
    monkeypatch.setattr(calibrate, "make_session", _counting(calibrate.make_session, sessions))
    data, config = batches({"x": (batch, 8, 16)}, count=count), QuantizeStaticConfig(method=method)
    one_run = QuantizeStatic(config, context=PassContext(calibration=data))(_gelu_ffn())
    assert len(sessions) == 1 and one_run.stats["activations_smoothed"] == 1
    # a cache keeps the channel maxima beside the statistics: a cached run decides the same
    # divisors and reads no data (minmax statistics are partial and never cached)
    cache = CalibrationCache()
    runs = [QuantizeStatic(config, context=PassContext(calibration=data, calibration_cache=cache))(_gelu_ffn())
            for _ in range(2)]
    assert len(sessions) == (3 if method == "minmax" else 2)
    rows = [[r for r in result.details if "smoothed" in r] for result in (one_run, *runs)]
    assert rows[0] == rows[1] == rows[2]
    assert [r.stats["calibration_samples"] for r in (one_run, *runs)] == [batch * count] * 3  # also from the cache
    verdicts = [[row["calibration_cache"] for row in r.details if "calibration_cache" in row] for r in runs]
    if method == "minmax":
        assert verdicts == [["not used: the cache was empty; minmax statistics are partial and not stored"]] * 2
    else:
        assert verdicts == [["not used: the cache was empty; calibrated and stored"], ["reused"]]
    feeds = {"x": rng(7).standard_normal((4, 8, 16)).astype(np.float32)}
    for result in runs:
        assert _qdq_scale(result.model, "g2_smoothed") == _qdq_scale(one_run.model, "g2_smoothed")
        np.testing.assert_array_equal(run_ort(result.model, feeds)[0], run_ort(one_run.model, feeds)[0])
    assert rel_l2(_gelu_ffn(), one_run.model, feeds) < REL_L2_BOUND
    check_full(one_run.model)


def test_a_cache_is_not_reused_across_smoothing_settings(tmp_path):
    # the smoothed tensor's statistics depend on the divisors: another alpha, or none, calibrates again
    from onnxslim.passes.quantization.cache import CalibrationCache, load_calibration_cache, save_calibration_cache

    data, cache, scales = batches({"x": (4, 8, 16)}, count=8), CalibrationCache(), {}
    for alpha in (0.75, 0.5, 0.0, 0.75):
        result = QuantizeStatic(QuantizeStaticConfig(smoothing_alpha=alpha),
                                context=PassContext(calibration=data, calibration_cache=cache))(_gelu_ffn())
        fresh = QuantizeStatic(QuantizeStaticConfig(smoothing_alpha=alpha), context=PassContext(calibration=data))(_gelu_ffn())
        name = "g2_smoothed" if alpha else "g2"
        assert _qdq_scale(result.model, name) == _qdq_scale(fresh.model, name)
        scales[alpha] = _qdq_scale(result.model, name)
    assert len(set(scales.values())) == 3
    save_calibration_cache(cache, tmp_path / "ranges.npz")  # the maxima survive the file
    loaded = load_calibration_cache(tmp_path / "ranges.npz")
    assert loaded.key == cache.key and list(loaded.magnitudes) == ["g2"]
    np.testing.assert_array_equal(loaded.magnitudes["g2"], cache.magnitudes["g2"])
    reused = QuantizeStatic(context=PassContext(calibration=data, calibration_cache=loaded))(_gelu_ffn())
    assert not loaded.modified and _qdq_scale(reused.model, "g2_smoothed") == scales[0.75]


def _counting(make, sessions):
    def counting(*args, **kwargs):
        sessions.append(kwargs)
        return make(*args, **kwargs)
    return counting


TWO_SITES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8, 16] x) => (float[N, 8, 16] y) {
    h = MatMul (x, w1)
    hr = Relu (h)
    a = Mul (hr, half)
    ya = MatMul (a, w2)
    hb = MatMul (x, w1b)
    hbr = Relu (hb)
    a_smoothed = Mul (hbr, half)
    yb = MatMul (a_smoothed, w2b)
    y = Add (ya, yb)
}
"""


@pytest.mark.parametrize("cached", [False, True])
def test_a_smoothed_name_already_taken_gets_another(cached):
    from onnxslim.core.pass_base import PassContext
    from onnxslim.passes.quantization.cache import CalibrationCache

    r = rng(4)
    arrays = {"w1": r.standard_normal((16, 32)).astype(np.float32) / 4, "w1b": r.standard_normal((16, 32)).astype(np.float32) / 4,
              "w2": r.standard_normal((32, 16)).astype(np.float32) / 6, "w2b": r.standard_normal((32, 16)).astype(np.float32) / 6,
              "half": np.array(0.5, np.float32)}
    arrays["w1"][:, 5] *= 30
    arrays["w1b"][:, 9] *= 30
    context = PassContext(calibration=batches({"x": (4, 8, 16)}), calibration_cache=CalibrationCache() if cached else None)
    result = QuantizeStatic(context=context)(make_model(TWO_SITES, initializers=arrays))
    assert sorted(row["smoothed"] for row in result.details if "smoothed" in row) == ["a_smoothed_1", "a_smoothed_smoothed"]
    feeds = {"x": rng(7).standard_normal((4, 8, 16)).astype(np.float32)}
    assert rel_l2(make_model(TWO_SITES, initializers=arrays), result.model, feeds) < REL_L2_BOUND
    check_full(result.model)


RANK3_CONSTANT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8, 16] x) => (float[1, M, 16] y) {
    x2 = Reshape (x, shape)
    h = MatMul (x2, w1)
    hr = Relu (h)
    g2 = Mul (half, hr)
    y = MatMul (g2, w2)
}
"""


def test_a_constant_of_higher_rank_keeps_the_output_shape():
    # [1, 1, 1] * [M, 32] is [1, M, 32]: the per-channel constant must stay rank 3
    model = _gelu_ffn()
    arrays = {name: model.graph.initializers[name].const_value.numpy() for name in ("w1", "w2")}
    arrays.update(shape=np.array([-1, 16], np.int64), half=np.full((1, 1, 1), 0.5, np.float32))
    result = QuantizeStatic(context=context({"x": (12, 8, 16)}, count=3))(make_model(RANK3_CONSTANT, initializers=arrays))
    assert result.stats["activations_smoothed"] == 1
    (mul,) = [n for n in result.model.graph if n.op_type == "Mul"]
    assert ir_const(mul.inputs[0]).shape == (1, 1, 32)
    feeds = {"x": rng(7).standard_normal((4, 8, 16)).astype(np.float32)}
    assert run_ort(result.model, feeds)[0].shape == (1, 32, 16)
    check_full(result.model)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_a_batch_cut_for_smoothing_leaves_input_ranges_as_they_were(method):
    # one batch of 100: the site decides on its first 16 samples; the graph input x is still
    # ranged from whole batches (a cut histogram grows its radius twice: coarser bins)
    data = batches({"x": (100, 8, 16)}, count=1)
    on = QuantizeStatic(QuantizeStaticConfig(method=method), context=PassContext(calibration=data))(_gelu_ffn(outlier=1.0))
    off = QuantizeStatic(QuantizeStaticConfig(method=method, smoothing_alpha=0.0),
                         context=PassContext(calibration=data))(_gelu_ffn(outlier=1.0))
    assert _qdq_scale(on.model, "x") == _qdq_scale(off.model, "x")


def test_an_empty_batch_is_skipped_when_smoothing_with_a_cache():
    # a 0-sample batch has no maximum (it crashed smoothing's former run of its own, with a cache)
    from onnxslim.data import DataBatch
    from onnxslim.passes.quantization.cache import CalibrationCache

    data = [DataBatch({"x": np.zeros((0, 8, 16), np.float32)})] + batches({"x": (12, 8, 16)}, count=3)
    result = QuantizeStatic(context=PassContext(calibration=data, calibration_cache=CalibrationCache()))(_gelu_ffn())
    assert result.stats["activations_smoothed"] == 1
