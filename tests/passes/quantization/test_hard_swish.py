"""Hard-swish inputs: matched in every spelling, ranged down to one grid step below the saturation
point, and calibrated under minmax from the hard swish's output maximum (``hard_swish.py``)."""

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim.passes.quantization import calibrate
from onnxslim.passes.quantization.hard_swish import HardSwishUse, hard_swish_use
from onnxslim.passes.quantization.qdq import INT_RANGES, activation_params
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from onnxslim.runtime.session import make_session
from tests.helpers import check_full, make_model, rng
from tests.passes.quantization.util import REL_L2_BOUND, batches, context, rel_l2

SOURCE = """
<ir_version: 8, opset_import: ["" : {opset}]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {{
    two = Constant <value = float {{{scale}}}> ()
    c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    {body}
    y = Conv <pads = [1, 1, 1, 1]> (s, w2, b2)
}}
"""
SPELLINGS = {
    "op": (14, "s = HardSwish (c)"),
    "gate": (13, "h = HardSigmoid <alpha = 0.1666666716337204, beta = 0.5> (c)\n s = Mul (c, h)"),
    "gate first": (13, "h = HardSigmoid <alpha = 0.1666666716337204, beta = 0.5> (c)\n s = Mul (h, c)"),
    "paddle": (13, "h = HardSigmoid <alpha = 0.2, beta = 0.4> (c)\n p = Mul (c, two)\n s = Mul (p, h)"),
}
SHAPES = {"x": (2, 3, 8, 8)}


def _model(spelling="gate", scale=2.0, body=None):
    opset, text = SPELLINGS[spelling]
    r = rng(0)
    # large first-layer weights: the Conv output reaches far below the saturation point (-3)
    weights = {"w1": r.standard_normal((6, 3, 3, 3)).astype(np.float32) * 2.0, "b1": r.standard_normal(6).astype(np.float32),
               "w2": r.standard_normal((4, 6, 3, 3)).astype(np.float32) * 0.3, "b2": r.standard_normal(4).astype(np.float32)}
    return make_model(SOURCE.format(opset=opset, scale=scale, body=body or text), initializers=weights)


def _conv_output(model):
    return next(node.outputs[0] for node in model.graph if node.op_type == "Conv")


@pytest.mark.parametrize("spelling, expected", [("op", (1 / 6, 0.5, 1.0)), ("gate", (1 / 6, 0.5, 1.0)),
                                                ("gate first", (1 / 6, 0.5, 1.0)), ("paddle", (0.2, 0.4, 2.0))])
def test_each_spelling_is_matched_with_its_constants(spelling, expected):
    use = hard_swish_use(_conv_output(_model(spelling)))
    assert use is not None and use.output.name == "s"
    assert np.allclose((use.alpha, use.beta, use.scale), expected)


@pytest.mark.parametrize("body", [
    "h = HardSigmoid <alpha = 0.1666666716337204, beta = 0.5> (c)\n m = Mul (c, h)\n s = Add (m, c)",  # a third reader
    "h = HardSigmoid <alpha = -0.2, beta = 0.5> (c)\n s = Mul (c, h)",  # decreasing gate
    "h = HardSigmoid <alpha = 0.2, beta = 0.5> (c)\n p = Mul (c, two)\n s = Mul (p, h)",  # negative scale (below)
    "h = HardSigmoid <alpha = 0.2, beta = 0.5> (c)\n s = Mul (h, h)",  # not x times its gate
])
def test_other_readers_are_not_a_hard_swish(body):
    assert hard_swish_use(_conv_output(_model(body=body, scale=-2.0))) is None


def test_scaled_input_read_elsewhere_is_not_a_hard_swish():
    """``c * x`` also read by an Add: that reader would see x's clipped negative tail."""
    body = "h = HardSigmoid <alpha = 0.2, beta = 0.4> (c)\n p = Mul (c, two)\n q = Mul (p, h)\n s = Add (q, p)"
    assert hard_swish_use(_conv_output(_model(body=body, scale=2.0))) is None
    assert hard_swish_use(_conv_output(_model("paddle", scale=2.0))) is not None


@pytest.mark.parametrize("alpha, beta, scale", [(1 / 6, 0.5, 1.0), (0.2, 0.4, 2.0), (0.5, 0.25, 0.5)])
def test_input_maximum_inverts_the_output_maximum(alpha, beta, scale):
    use = HardSwishUse(None, alpha, beta, scale)
    for top in (0.0, 0.3, (1 - beta) / alpha - 1e-3, (1 - beta) / alpha, 7.5, 40.0):
        x = np.concatenate([rng(1).uniform(-20, top, 999), [top]])
        assert use.input_maximum(float(use(x).max())) == pytest.approx(top, abs=1e-9)
    top = -0.2 * beta / alpha  # below 0 on the rising side, nothing saturated
    x = np.concatenate([rng(1).uniform(use.saturation / 2, top, 999), [top]])
    assert use.input_maximum(float(use(x).max())) == pytest.approx(top, abs=1e-9)
    x = np.array([-0.9, -0.6]) * beta / alpha  # all on the falling side: an upper bound, not below any x
    assert use.input_maximum(float(use(x).max())) >= x.max()


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_lowest_grid_value_lies_at_or_below_the_saturation_point(dtype):
    """Without the step of margin, the zero point's rounding leaves the grid's lowest value above -3
    for about half of these highs, and every clipped value then leaves hard swish as a small negative."""
    use = HardSwishUse(None)
    for high in np.linspace(0.5, 60, 400):
        low = use.lower_bound(high)
        scale, zero = activation_params(low, high, dtype)
        lowest = (INT_RANGES[dtype][0] - int(zero)) * float(scale)
        assert lowest <= use.saturation and lowest > use.saturation - 2.5 * float(scale)
        assert use(np.float32(lowest)) == 0


def test_minmax_calibration_reads_the_output_maximum_not_the_input(monkeypatch):
    model = _model("gate")
    asked = []
    real = calibrate.make_session
    monkeypatch.setattr(calibrate, "make_session", lambda m, **kw: asked.append(kw) or real(m, **kw))
    data = batches(SHAPES, count=3)
    stats = calibrate.tensor_statistics(model, data, ["x", "c", "s"], minmax_only=True)
    assert "c" not in asked[0]["extra_outputs"]
    assert [(n.op_type, list(n.input)) for n in asked[0]["probes"]] == [("GlobalMaxPool", ["s"])]
    exact = np.concatenate([make_session(model, extra_outputs=["c"]).run(["c"], b.inputs)[0] for b in data])
    use = hard_swish_use(_conv_output(model))
    assert exact.min() < use.saturation - 1  # the case the shortcut is for
    assert stats["c"].maximum == pytest.approx(float(exact.max()), rel=1e-5)
    assert stats["c"].minimum == pytest.approx(use.lower_bound(stats["c"].maximum))
    assert stats["s"].maximum == pytest.approx(float(use(exact).max()), rel=1e-5)
    # the histogram methods still fetch the tensor itself: its exact minimum
    full = calibrate.tensor_statistics(model, data, ["x", "c", "s"])
    assert full["c"].minimum == pytest.approx(float(exact.min()))


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_quantized_hard_swish_input_stops_below_saturation(spelling):
    original = _model(spelling)
    result = QuantizeStatic(QuantizeStaticConfig(method="minmax"), context=context(SHAPES))(_model(spelling))
    graph = result.model.graph
    q = next(n for n in graph if n.op_type == "QuantizeLinear" and n.inputs[0].name == "c")
    scale, zero = (float(np.asarray(v.const_value.numpy())) for v in q.inputs[1:3])
    use = hard_swish_use(_conv_output(original))
    assert use.saturation - 2.5 * scale < -zero * scale <= use.saturation  # uint8: the grid's lowest value
    feeds = {"x": rng(5).standard_normal(SHAPES["x"]).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND
    check_full(result.model)


def _branch_model():
    """The Conv output's only reader is a HardSwish inside an If branch (its output exists only there)."""
    import onnx
    import onnx.helper as oh

    r = rng(2)
    branch = lambda op, source, name: oh.make_graph([oh.make_node(op, [source], [name])], name, [],  # noqa: E731
                                                  [oh.make_tensor_value_info(name, 1, ["N", 6, 8, 8])])
    nodes = [oh.make_node("ReduceMax", ["x"], ["top"], keepdims=0), oh.make_node("Greater", ["top", "floor"], ["cond"]),
             oh.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1] * 4), oh.make_node("Conv", ["x", "w1"], ["d"], pads=[1] * 4),
             oh.make_node("If", ["cond"], ["s"], then_branch=branch("HardSwish", "c", "h"), else_branch=branch("Relu", "d", "r")),
             oh.make_node("Conv", ["s", "w2"], ["y"], pads=[1] * 4)]
    weights = {"floor": np.array(-100.0, np.float32), "w1": r.standard_normal((6, 3, 3, 3)).astype(np.float32),
               "b1": r.standard_normal(6).astype(np.float32), "w2": r.standard_normal((4, 6, 3, 3)).astype(np.float32) * 0.3}
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", 1, ["N", 3, 8, 8])],
                          [oh.make_tensor_value_info("y", 1, ["N", 4, 8, 8])],
                          [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    return ir.serde.deserialize_model(proto)


def test_hard_swish_inside_a_branch_is_not_pooled_from_the_main_graph():
    """Its output lives in the branch: a GlobalMaxPool of it in the main graph made ORT refuse the
    calibration session, and the whole pass was rolled back (exit 0, a float model)."""
    model = _branch_model()
    assert hard_swish_use(_conv_output(model)) is None
    original = _branch_model()
    result = QuantizeStatic(QuantizeStaticConfig(method="minmax"), context=context(SHAPES))(model)
    assert result.stats["nodes_quantized"] == 2  # the Convs before the If (the last one writes the graph output)
    feeds = {"x": rng(5).standard_normal(SHAPES["x"]).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND
