"""quantize-auto: the format with the best measured speed-up within the cosine floor, or float.

Timings are replaced by fixed numbers (monkeypatch): the choice logic is tested, not this
machine's speed; the candidates themselves are really built and run in ONNX Runtime.
"""

import numpy as np
import pytest

from onnxslim.core.pass_base import PassContext
from onnxslim.passes.quantization import quantize_auto
from onnxslim.passes.quantization.quantize_auto import QuantizeAuto, QuantizeAutoConfig
from onnxslim.passes.quantization.quantize_dynamic import QuantizeDynamic
from onnxslim.passes.quantization.quantize_static import QuantizeStatic
from tests.helpers import check_full, rng, run_ort
from tests.passes.quantization.test_float_matmul_outputs import _ffn
from tests.passes.quantization.util import context, ops


def _timed(monkeypatch, ms: dict[str, float]):
    def fake(variants, inputs, **_):
        assert set(variants) <= {"float", "static", "dynamic"} and all(len(v) == 1 for v in inputs.values())
        return {label: [ms[label]] * 3 for label in variants}
    monkeypatch.setattr(quantize_auto, "time_round_robin", fake)


def _rows(result):
    return {row["format"]: row for row in result.details if "format" in row}


@pytest.mark.parametrize("fastest,marker", [("static", "QuantizeLinear"), ("dynamic", "DynamicQuantizeLinear")])
def test_the_fastest_format_is_applied(monkeypatch, fastest, marker):
    _timed(monkeypatch, {"float": 1.0, "static": 0.5 if fastest == "static" else 0.9,
                         "dynamic": 0.5 if fastest == "dynamic" else 0.9})
    result = QuantizeAuto(context=context({"x": (4, 8, 32)}, count=8))(_ffn())
    rows = _rows(result)
    assert set(rows) == {"static", "dynamic"} and rows[fastest]["chosen"] and rows[fastest]["speedup"] == 2.0
    assert result.modified and ops(result.model)[marker] >= 1 and result.stats["speedup_measured"] == 2.0
    # exactly what the chosen pass gives on its own
    alone = (QuantizeStatic(context=context({"x": (4, 8, 32)}, count=8)) if fastest == "static" else QuantizeDynamic())(_ffn())
    feeds = {"x": rng(4).standard_normal((2, 8, 32)).astype(np.float32)}
    np.testing.assert_array_equal(run_ort(result.model, feeds)[0], run_ort(alone.model, feeds)[0])
    check_full(result.model)


def test_nothing_faster_than_float_leaves_the_model_unchanged(monkeypatch):
    _timed(monkeypatch, {"float": 1.0, "static": 1.2, "dynamic": 0.97})  # 0.97: inside the noise margin
    model = _ffn()
    result = QuantizeAuto(context=context({"x": (4, 8, 32)}))(model)
    assert not result.modified and ops(result.model) == ops(_ffn())
    assert {"kept_float": "no format both faster and within the cosine floor"} in result.details
    # said loudly: a details warning reaches the CLI's output and the JSON report's warnings, also under -q
    (warning,) = [row["warning"] for row in result.details if "warning" in row]
    assert warning.startswith("model left float32: no format both faster") and "static 0.833x" in warning
    rows = _rows(result)
    assert rows["static"]["rejected"].startswith("speedup 0.833x") and "cosine" not in rows["static"]["rejected"]


def test_a_faster_format_below_the_cosine_floor_says_so(monkeypatch):
    # PP-OCRv4 det: static ran 1.26x faster at cosine 0.9755, and the row said "no faster format"
    _timed(monkeypatch, {"float": 1.0, "static": 0.5, "dynamic": 1.2})
    result = QuantizeAuto(QuantizeAutoConfig(min_cosine=0.999999), context=context({"x": (4, 8, 32)}))(_ffn())
    assert not result.modified
    rows = _rows(result)
    assert rows["static"]["rejected"].startswith("cosine ") and "speedup" not in rows["static"]["rejected"]
    assert "speedup" in rows["dynamic"]["rejected"]


def test_the_cosine_floor_rules_out_a_faster_but_worse_format(monkeypatch):
    _timed(monkeypatch, {"float": 1.0, "static": 0.4, "dynamic": 0.8})
    probe = QuantizeAuto(context=context({"x": (4, 8, 32)}))(_ffn())
    cosines = {k: r["cosine"] for k, r in _rows(probe).items()}
    assert cosines["static"] < cosines["dynamic"]  # static also rounds activations
    floor = (cosines["static"] + cosines["dynamic"]) / 2
    result = QuantizeAuto(QuantizeAutoConfig(min_cosine=floor), context=context({"x": (4, 8, 32)}))(_ffn())
    assert _rows(result)["dynamic"]["chosen"] and ops(result.model)["QuantizeLinear"] == 0


def test_without_calibration_data_only_dynamic_is_tried(monkeypatch):
    _timed(monkeypatch, {"float": 1.0, "dynamic": 0.5})
    result = QuantizeAuto(context=PassContext())(_ffn())
    assert set(_rows(result)) == {"dynamic"} and result.modified


MASKED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 32] x, int64[N, 32] attention_mask) => (float[N, 16] y) {
    m = Cast <to = 1> (attention_mask)
    xm = Mul (x, m)
    y = MatMul (xm, w)
}
"""


def test_without_calibration_data_a_mask_input_is_not_all_zeros(monkeypatch):
    # an all-zero mask zeroed the output, and every format matched float "exactly" (cosine 1.0)
    from tests.helpers import make_model

    _timed(monkeypatch, {"float": 1.0, "dynamic": 0.5})
    model = make_model(MASKED, initializers={"w": rng(3).standard_normal((32, 16)).astype(np.float32)})
    rows = _rows(QuantizeAuto(context=PassContext())(model))
    assert 0.99 < rows["dynamic"]["cosine"] < 1.0


def test_integer_outputs_are_scored_by_agreement():
    from onnxslim.passes.quantization.mixed_precision import output_cosine

    reference = {"ids": np.array([1, 2, 3, 4]), "keep": np.array([True, False, True, True])}
    assert output_cosine(reference, {"ids": np.array([1, 2, 0, 4]), "keep": reference["keep"]}) == 0.75
    assert output_cosine({"s": np.array(["a"], dtype=object)}, {"s": np.array(["a"], dtype=object)}, unscored=-1.0) == -1.0


def test_nothing_quantizable_says_so(monkeypatch):
    from tests.helpers import make_model

    _timed(monkeypatch, {"float": 1.0})
    model = make_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 8] y) { y = Relu (x) }
    """)
    result = QuantizeAuto(context=context({"x": (4, 8)}))(model)
    assert not result.modified
    assert any(row.get("warning", "").startswith("model left float32: nothing to quantize") for row in result.details)


SHAPE_INPUT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 16] x, int64[2] shape) => (float[N, 16] y) {
    e = Expand (x, shape)
    y = MatMul (e, w)
}
"""


def test_generated_inputs_the_model_rejects_are_not_blamed_on_calibration_data(monkeypatch):
    from onnxslim.errors import DataError
    from tests.helpers import make_model

    _timed(monkeypatch, {"float": 1.0, "dynamic": 0.5})
    model = make_model(SHAPE_INPUT, initializers={"w": rng(3).standard_normal((16, 16)).astype(np.float32)})
    with pytest.raises(DataError, match="random inputs made to time the formats .no calibration data. were rejected"):
        QuantizeAuto(context=PassContext())(model)


def test_the_measured_candidate_is_handed_back_with_its_opset(monkeypatch):
    # static converts an opset-12 model for per-channel weights; the chosen model is the one built
    # and measured, not a second quantization
    from tests.helpers import make_model

    _timed(monkeypatch, {"float": 1.0, "static": 0.5, "dynamic": 0.9})
    built = []
    real = quantize_auto.QuantizeStatic.call
    monkeypatch.setattr(quantize_auto.QuantizeStatic, "call", lambda self, model: built.append(1) or real(self, model))
    model = make_model("""
        <ir_version: 7, opset_import: ["" : 12]>
        g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
            c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
            y = Relu (c)
        }
    """, initializers={"w": rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32) / 3,
                       "b": rng(2).standard_normal(4).astype(np.float32)})
    result = QuantizeAuto(context=context({"x": (4, 3, 8, 8)}))(model)
    assert _rows(result)["static"]["chosen"] and len(built) == 1
    assert result.model.opset_imports[""] >= 13 and ops(result.model)["QuantizeLinear"] >= 1
    feeds = {"x": rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    assert run_ort(result.model, feeds)[0].shape == (2, 4, 8, 8)
    check_full(result.model)
