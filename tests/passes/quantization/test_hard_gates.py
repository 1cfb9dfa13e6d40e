"""Hard-swish written as x * HardSigmoid(x) below opset 14 (PP-LCNet / PP-OCRv4 at 12, PicoDet at 13):
the opset upgrade goes to 14 and makes it one HardSwish, so ORT dequantizes x once instead of twice."""

import numpy as np

from onnxslim.passes.quantization import plan as planning
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from tests.helpers import check_full, make_model, rng
from tests.passes.quantization.util import REL_L2_BOUND, context, fused_ops, ops, rel_l2

SOURCE = """
<ir_version: 7, opset_import: ["" : {opset}]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {{
    c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    h = HardSigmoid <alpha = 0.1666666716337204, beta = 0.5> (c)
    s = {gate_reader}
    y = Conv <pads = [1, 1, 1, 1]> (s, w2, b2)
}}
"""
SHAPES = {"x": (2, 3, 8, 8)}


def _model(opset=12, gate_reader="Mul (c, h)"):
    r = rng(0)
    weights = {"w1": r.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.5, "b1": r.standard_normal(6).astype(np.float32),
               "w2": r.standard_normal((4, 6, 3, 3)).astype(np.float32) * 0.3, "b2": r.standard_normal(4).astype(np.float32)}
    return make_model(SOURCE.format(opset=opset, gate_reader=gate_reader), initializers=weights)


def test_hardswish_gate_is_recognised_only_as_x_times_its_own_hardsigmoid():
    assert [planning.is_hardswish_gate(n) for n in _model().graph] == [False, True, False, False]
    assert [planning.is_hardswish_gate(n) for n in _model(gate_reader="Mul (h, c)").graph] == [False, True, False, False]
    assert not any(planning.is_hardswish_gate(n) for n in _model(gate_reader="Mul (h, h)").graph)  # not x * gate


def test_opset_12_hardswish_model_goes_to_14_and_dequantizes_x_once():
    original = _model()
    result = QuantizeStatic(context=context(SHAPES))(_model())
    assert result.model.opset_imports[""] == 14
    assert {"opset_converted": "12 -> 14", "why": "per-channel int8 weights; 1 x * HardSigmoid(x) -> HardSwish"} in result.details
    assert ops(result.model)["HardSwish"] == 1 and "HardSigmoid" not in ops(result.model)
    # ORT expands HardSwish to HardSigmoid and Mul after its QDQ fusions: x is dequantized once.
    # Written as the two ops, each reader gets its own copy of the DequantizeLinear (an opset-13
    # model kept at its opset)
    as_written = QuantizeStatic(QuantizeStaticConfig(upgrade_opset=False), context=context(SHAPES))(_model(opset=13))
    fused, written = fused_ops(result.model), fused_ops(as_written.model)
    assert as_written.model.opset_imports[""] == 13
    assert fused["QLinearConv"] == 1 and fused["DequantizeLinear"] == 1, fused
    assert written["QLinearConv"] == 1 and written["DequantizeLinear"] == 2, written
    feeds = {"x": rng(5).standard_normal(SHAPES["x"]).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND
    check_full(result.model)


def test_an_opset_13_model_with_the_gate_goes_to_14_too():
    # paddle2onnx's PicoDet is opset 13: per-channel weights needed no upgrade, so its gates stayed
    # two ops, each dequantizing x (all int8 1.06x float's speed; 1.14x at opset 14, same F1)
    original = _model(opset=13)
    result = QuantizeStatic(context=context(SHAPES))(_model(opset=13))
    assert result.model.opset_imports[""] == 14
    assert {"opset_converted": "13 -> 14", "why": "1 x * HardSigmoid(x) -> HardSwish"} in result.details
    assert fused_ops(result.model)["DequantizeLinear"] == 1
    feeds = {"x": rng(5).standard_normal(SHAPES["x"]).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND
    check_full(result.model)
    plain = QuantizeStatic(context=context(SHAPES))(_model(opset=13, gate_reader="Mul (h, h)"))
    assert plain.model.opset_imports[""] == 13 and not any("opset_converted" in row for row in plain.details)


def test_without_the_pattern_the_upgrade_stays_at_13():
    result = QuantizeStatic(context=context(SHAPES))(_model(gate_reader="Mul (h, h)"))
    assert result.model.opset_imports[""] == 13
    assert {"opset_converted": "12 -> 13", "why": "per-channel int8 weights"} in result.details


SQUEEZE_EXCITE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => ({outputs}) {{
    c = Conv <pads = [1, 1, 1, 1]> (x, w1)
    p = GlobalAveragePool (c)
    r = Conv (p, wr)
    q = Relu (r)
    e = Conv (q, we)
    h = HardSigmoid <alpha = 0.2, beta = 0.5> (e)
    m = Mul (c, h)
    d = Conv <pads = [1, 1, 1, 1]> (m, w2)
    y = Sigmoid (d)
}}
"""


def _se_model(outputs="float[N, 4, 8, 8] y"):
    r = rng(3)
    weights = {"w1": r.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.4, "wr": r.standard_normal((2, 6, 1, 1)).astype(np.float32),
               "we": r.standard_normal((6, 2, 1, 1)).astype(np.float32), "w2": r.standard_normal((4, 6, 3, 3)).astype(np.float32) * 0.3}
    return make_model(SQUEEZE_EXCITE.format(outputs=outputs), initializers=weights)


def test_squeeze_excitation_gate_is_quantized_so_its_mul_runs_in_int8():
    result = QuantizeStatic(context=context(SHAPES))(_se_model())
    fused = fused_ops(result.model)
    assert fused["QLinearMul"] == 1 and fused["QLinearConv"] == 4, fused
    assert "Mul" not in fused
    feeds = {"x": rng(6).standard_normal(SHAPES["x"]).astype(np.float32)}
    assert rel_l2(_se_model(), result.model, feeds) < REL_L2_BOUND
    check_full(result.model)


def test_gate_read_only_by_a_float_mul_stays_float():
    # the gated product is a graph output, so its Mul stays float and a Q/DQ on the gate would only round it
    result = QuantizeStatic(context=context(SHAPES))(_se_model("float[N, 4, 8, 8] y, float[N, 6, 8, 8] m"))
    (gate,) = [n for n in result.model.graph if n.op_type == "HardSigmoid"]
    assert [c.op_type for c in gate.outputs[0].consumers()] == ["Mul"]
    assert "QLinearMul" not in fused_ops(result.model)
