"""In-graph probes: calibration reads SiLU inputs through a GlobalMaxPool and a strided 1x1
AveragePool instead of fetching them (``probes.py``), under the minmax method."""

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim.passes.quantization import calibrate
from onnxslim.passes.quantization.probes import max_probe, sample_probe, spatial_rank
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from onnxslim.passes.quantization.ranges import silu_low
from onnxslim.runtime.session import make_session
from tests.helpers import check_full, make_model, rng
from tests.passes.quantization.util import REL_L2_BOUND, batches, rel_l2

SILU = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, {size}, {size}] x) => (float[N, 4, {size}, {size}] y) {{
    c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    s = Sigmoid (c)
    m = Mul (c, s)
    y = Conv <pads = [1, 1, 1, 1]> (m, w2, b2)
}}
"""


def _model(size=32, shapes=True):
    r = rng(0)
    weights = {"w1": r.standard_normal((6, 3, 3, 3)).astype(np.float32) * 2.0, "b1": r.standard_normal(6).astype(np.float32),
               "w2": r.standard_normal((4, 6, 3, 3)).astype(np.float32) * 0.3, "b2": r.standard_normal(4).astype(np.float32)}
    model = make_model(SILU.format(size=size), initializers=weights)
    if shapes:
        model = ir.passes.common.ShapeInferencePass()(model).model
        assert _conv_output(model).shape is not None
    else:
        for node in model.graph:
            for value in node.outputs:
                if not value.is_graph_output():
                    value.shape = None
    return model


def _conv_output(model):
    return next(node.outputs[0] for node in model.graph if node.op_type == "Conv")


@pytest.mark.parametrize("size, shapes, stride", [(160, True, 4), (96, True, 2), (18, True, 1), (10, True, 1),
                                                  (32, False, 4), (10, False, 4)])
def test_sample_probe_is_the_strided_tensor(size, shapes, stride):
    """Stride 4, or less where the shape says it would keep fewer than MIN_SAMPLE values per sample
    (6 channels: 160x160 keeps 9,600 at stride 4, 96x96 only 3,456); unknown shapes: stride 4."""
    model = _model(size, shapes=shapes)
    value = _conv_output(model)
    probe, top = sample_probe(value, 2), max_probe(value.name)
    feeds = {"x": rng(1).standard_normal((2, 3, size, size)).astype(np.float32)}
    session = make_session(model, extra_outputs=["c"], probes=[probe.node, top.node])
    full, sample, maxima = session.run(["c", probe.output, top.output], feeds)
    np.testing.assert_array_equal(sample, full[:, :, ::stride, ::stride])
    np.testing.assert_array_equal(maxima.reshape(2, 6), full.max(axis=(2, 3)))
    if shapes:
        assert probe.factor * sample.size == pytest.approx(full.size)
    else:
        assert probe.factor == stride * stride


def test_spatial_rank_from_the_shape_or_the_conv_weight():
    model = _model()
    assert spatial_rank(_conv_output(model)) == 2
    assert spatial_rank(_conv_output(_model(shapes=False))) == 2  # from w1's rank
    mul = next(n for n in _model(shapes=False).graph if n.op_type == "Mul").outputs[0]
    assert spatial_rank(mul) is None  # unknown rank: fetched as before


@pytest.mark.parametrize("shapes", [True, False])
def test_minmax_calibration_probes_silu_inputs_instead_of_fetching_them(monkeypatch, shapes):
    model = _model(shapes=shapes)
    asked = []
    real = calibrate.make_session
    monkeypatch.setattr(calibrate, "make_session", lambda m, **kw: asked.append(kw) or real(m, **kw))
    data = batches({"x": (4, 3, 32, 32)}, count=3)
    stats = calibrate.tensor_statistics(model, data, ["x", "c", "s", "m"], minmax_only=True)
    assert "c" not in asked[0]["extra_outputs"]
    assert sorted(n.op_type for n in asked[0]["probes"]) == ["AveragePool", "GlobalMaxPool"]
    exact = np.concatenate([make_session(model, extra_outputs=["c"]).run(["c"], b.inputs)[0] for b in data])
    found = stats["c"]
    assert found.maximum == pytest.approx(float(exact.max()), rel=1e-6)  # exact: the pool sees every value
    assert exact.min() <= found.minimum <= float(exact[:, :, ::4, ::4].min())
    assert found.elements == exact.size and found.counts.sum() > 0
    # the lower bound the search picks from the sampled histogram is the one the whole tensor gives
    full, _ = calibrate.collect_statistics(model, data, ["c"])
    low, high = silu_low(found, found.minimum, found.maximum), silu_low(full["c"], full["c"].minimum, full["c"].maximum)
    assert low == pytest.approx(high, rel=0.1)


def test_quantized_silu_model_from_probed_statistics():
    original = _model()
    data = batches({"x": (4, 3, 32, 32)}, count=3)
    from onnxslim.core.pass_base import PassContext

    result = QuantizeStatic(QuantizeStaticConfig(method="minmax"), context=PassContext(calibration=data))(_model())
    assert result.stats["tensors_quantized"] >= 2
    feeds = {"x": rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND
    check_full(result.model)


def test_silu_input_with_more_than_three_spatial_axes_is_fetched():
    """ORT's AveragePool takes at most 3 spatial axes: a sample probe on a rank-6 SiLU input failed
    every calibration batch ("Unsupported pooling size"), reported as bad data (exit 2)."""
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 2, 3, 4, 5, 8] x) => (float[N, 2, 3, 4, 5, 4] y) {
        c = MatMul (x, w1)
        s = Sigmoid (c)
        m = Mul (c, s)
        y = MatMul (m, w2)
    }
    """, initializers={"w1": rng(0).standard_normal((8, 16)).astype(np.float32),
                       "w2": rng(1).standard_normal((16, 4)).astype(np.float32)})
    model = ir.passes.common.ShapeInferencePass()(model).model
    assert spatial_rank(next(n for n in model.graph if n.op_type == "MatMul").outputs[0]) == 4
    data = batches({"x": (2, 2, 3, 4, 5, 8)}, count=2)
    stats = calibrate.tensor_statistics(model, data, ["x", "c", "m"], minmax_only=True)
    exact = np.concatenate([make_session(model, extra_outputs=["c"]).run(["c"], b.inputs)[0] for b in data])
    assert stats["c"].minimum == pytest.approx(float(exact.min())) and stats["c"].maximum == pytest.approx(float(exact.max()))


@pytest.mark.parametrize("broken", ["sample", "max"])
def test_a_probe_onnx_runtime_cannot_run_falls_back_to_fetching(monkeypatch, broken):
    """Whatever ORT refuses in a probe (an attribute, a rank, a type) is the pass's doing, not the
    data's: calibration fetches the tensors instead, and bad data still fails on its own."""
    import onnx

    from onnxslim.passes.quantization import probes

    def refused(real):
        def make(*args):
            probe = real(*args)
            node = onnx.helper.make_node("AveragePool", list(probe.node.input), list(probe.node.output), kernel_shape=[99, 99])
            return probes.Probe(probe.tensor, probe.kind, node, probe.factor)
        return make

    name = "sample_probe" if broken == "sample" else "max_probe"
    monkeypatch.setattr(calibrate, name, refused(getattr(probes, name)))
    model = _model()
    data = batches({"x": (4, 3, 32, 32)}, count=2)
    stats = calibrate.tensor_statistics(model, data, ["x", "c", "s", "m"], minmax_only=True)
    exact = np.concatenate([make_session(model, extra_outputs=["c"]).run(["c"], b.inputs)[0] for b in data])
    assert stats["c"].minimum == pytest.approx(float(exact.min())) and stats["c"].maximum == pytest.approx(float(exact.max()))
    bad = [type(b)({"x": np.full((4, 3, 32, 32), np.nan, np.float32)}) for b in data]
    with pytest.raises(calibrate.DataError):
        calibrate.tensor_statistics(model, bad, ["x", "c", "s", "m"], minmax_only=True)
