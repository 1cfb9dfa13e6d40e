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
