"""The --quantize flags through the CLI/API, bad data exit codes, and the bundled trained models."""

import numpy as np
import pytest

from onnxslim import api
from onnxslim.cli import main
from onnxslim.core.flags import family_steps
from onnxslim.errors import ConfigError
from tests.helpers import MODELS
from tests.passes.quantization.util import fused_ops


def test_flags_become_steps():
    _, step = family_steps({"quantize": "static", "calibration_method": "mse", "quantize_per_tensor": True,
                            "quantize_activations": "int8", "quantize_exclude": "Softmax,head"})
    assert step.name == "quantize-static"
    # ahead of int8 for ONNX Runtime's CPU kernels: a Softmax on an inner axis is written out
    assert [s.name for s in family_steps({"quantize": "static"})] == ["expand-inner-softmax", "quantize-static"]
    assert step.options == {"method": "mse", "per_channel": False, "activations": "int8", "exclude": "Softmax,head"}
    _, step = family_steps({"quantize": "static", "quantize_min_cosine": 0.999, "quantize_bias_correction": True})
    assert step.options == {"min_cosine": 0.999, "bias_correction": True}
    _, step = family_steps({"quantize": "static", "quantize_bias_correction": False})  # --no-quantize-bias-correction
    assert step.options == {"bias_correction": False}
    _, step = family_steps({"quantize": "static", "quantize_symmetric": True, "quantize_activations": "int8"})
    assert step.options == {"symmetric_activations": True, "activations": "int8"}
    _, step = family_steps({"quantize": "auto", "quantize_min_cosine": 0.995, "calibration_method": "minmax"})
    assert step.name == "quantize-auto" and step.options == {"min_cosine": 0.995, "method": "minmax"}
    with pytest.raises(ConfigError, match="static only"):
        family_steps({"quantize": "auto", "quantize_activations": "int8"})
    _, step = family_steps({"quantize": "static", "quantize_max_accuracy_drop": 0.005, "quantize_smoothing": 0})
    assert step.options == {"max_accuracy_drop": 0.005, "smoothing_alpha": 0.0}
    with pytest.raises(ConfigError, match="static only"):
        family_steps({"quantize": "dynamic", "quantize_max_accuracy_drop": 0.01})
    with pytest.raises(ConfigError, match=r"static\|auto only"):
        family_steps({"quantize": "dynamic", "quantize_min_cosine": 0.99})
    (step,) = family_steps({"quantize": "dynamic"})
    assert step.name == "quantize-dynamic"
    with pytest.raises(ConfigError, match="without --quantize"):
        family_steps({"calibration_method": "mse"})
    with pytest.raises(ConfigError, match=r"static\|auto only"):
        family_steps({"quantize": "dynamic", "calibration_method": "mse"})


def _accuracy(model, data):
    import onnxruntime as ort
    import onnx_ir as ir

    session = ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return float((session.run(None, {"input": data["input"]})[0].argmax(1) == data["labels"]).mean())


def test_static_on_the_trained_resnet_keeps_accuracy_and_runs_integer_kernels():
    result = api.run(MODELS / "resnet_mini.onnx", quantize="static", calibration_data=MODELS / "digits16_calib.npz",
                     calibration_samples=64, validate=False)
    record = result.pipeline.records[-1]
    assert record.name == "quantize-static" and record.status == "applied"
    data = np.load(MODELS / "digits16_eval.npz")
    assert _accuracy(result.model, data) >= _accuracy(api.io.load(MODELS / "resnet_mini.onnx"), data) - 0.01
    fused = fused_ops(result.model)
    assert fused["QLinearConv"] == 10 and fused["Conv"] == 0


@pytest.mark.parametrize("method", ["entropy", "minmax"])
def test_entropy_calibration_keeps_the_trained_mobilenet_accurate(method):
    # Regression: entropy (KL) ranges used to clip ReLU features to a fifth of their range and
    # mobilenet_mini fell from 98.9% to ~20%. Entropy must now be as accurate as minmax (1 point).
    result = api.run(MODELS / "mobilenet_mini.onnx", quantize="static", calibration_data=MODELS / "digits16_calib.npz",
                     calibration_samples=64, calibration_method=method, validate=False)
    data = np.load(MODELS / "digits16_eval.npz")
    assert _accuracy(result.model, data) >= _accuracy(api.io.load(MODELS / "mobilenet_mini.onnx"), data) - 0.01


def test_mixed_precision_and_bias_correction_on_the_trained_cnn(tmp_path):
    code = main([str(MODELS / "digits_cnn.onnx"), str(tmp_path / "out.onnx"), "--quantize", "static", "--calibration-data",
                 str(MODELS / "digits_calib.npz"), "--quantize-min-cosine", "0.99999", "--quantize-bias-correction",
                 "--report", str(tmp_path / "report.json"), "--no-validate", "-q"])
    assert code == 0
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    (record,) = [r for r in report["pipeline"]["passes"] if r["name"] == "quantize-static"]
    (summary,) = [d["mixed_precision"] for d in record["details"] if "mixed_precision" in d]
    assert summary["target_met"] and summary["cosine_final"] >= 0.99999 > summary["cosine_all_quantized"]
    assert any("bias_corrected" in d for d in record["details"])


def test_dynamic_on_the_trained_vit_keeps_accuracy():
    result = api.run(MODELS / "vit_tiny.onnx", quantize="dynamic", validate=False)
    data = np.load(MODELS / "digits_eval.npz")
    assert _accuracy(result.model, data) >= _accuracy(api.io.load(MODELS / "vit_tiny.onnx"), data) - 0.01
    assert fused_ops(result.model)["DynamicQuantizeMatMul"] >= 8


@pytest.mark.parametrize("bad", ["nan", "empty"])
def test_bad_calibration_data_exits_2_with_one_line(tmp_path, capsys, bad):
    inputs = np.load(MODELS / "digits_calib.npz")["input"][:8].copy()
    if bad == "nan":
        inputs[3, 0, 2, 2] = np.nan
    else:
        inputs = inputs[:0]
    np.savez(tmp_path / "calib.npz", input=inputs)
    code = main([str(MODELS / "digits_cnn.onnx"), str(tmp_path / "out.onnx"), "--quantize", "static",
                 "--calibration-data", str(tmp_path / "calib.npz")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and ("NaN" in err or "no samples" in err)
    assert not (tmp_path / "out.onnx").exists()


def test_calibration_cache_is_written_and_reused(tmp_path):
    cache = tmp_path / "ranges.npz"
    calib = str(MODELS / "digits_calib.npz")
    first = api.run(MODELS / "digits_cnn.onnx", quantize="static", calibration_data=calib, calibration_cache=str(cache), validate=False)
    assert cache.exists()
    stamp = cache.stat().st_mtime_ns
    second = api.run(MODELS / "digits_cnn.onnx", quantize="static", calibration_data=calib, calibration_cache=str(cache),
                     calibration_method="minmax", validate=False)
    assert cache.stat().st_mtime_ns == stamp  # nothing new to store: every range came from the cache
    assert first.pipeline.records[-1].status == second.pipeline.records[-1].status == "applied"


def test_a_batch_pinned_by_input_shape_sets_the_calibration_and_validation_batch():
    # --input-shape input:1,1,8,8 leaves a model that takes one sample at a time: calibration and
    # validation (on the calibration data) must feed it that way, not in the readers' batches of 32
    result = api.run(MODELS / "digits_cnn.onnx", quantize="static", calibration_data=str(MODELS / "digits_calib.npz"),
                     calibration_samples=40, input_shapes={"input": [1, 1, 8, 8]})
    assert [r.status for r in result.pipeline.records if r.name == "quantize-static"] == ["applied"]
    # validation reads the whole calibration file, one sample per run
    assert result.validation.passed and result.validation.samples == len(np.load(MODELS / "digits_calib.npz")["input"])
    assert list(result.model.graph.inputs[0].shape) == [1, 1, 8, 8]
