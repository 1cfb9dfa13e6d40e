"""The harness end to end through `onnxslim validate` and the API, on the bundled models."""

from __future__ import annotations

import json

import pytest

from onnxslim import api
from onnxslim.runtime import unavailable_reason
from tests.helpers import MODELS
from tests.validation.conftest import DIGITS, DIGITS_DATA, nan_in_output, run_cli, run_json, scale_weight

BUNDLED = [("digits_cnn", "digits_eval"), ("resnet_mini", "digits16_eval"), ("mobilenet_mini", "digits16_eval"),
           ("vit_tiny", "digits_eval")]
CUDA_MISSING = unavailable_reason("cuda")


@pytest.mark.parametrize("model, data", BUNDLED)
def test_identical_bundled_models_pass_with_zero_error(model, data):
    path = MODELS / f"{model}.onnx"
    report = api.validate(path, path, data=str(MODELS / f"{data}.npz"))
    assert report and report.passed and report.samples == 360
    assert report.outputs and all(o.max_abs == 0.0 and o.rel_l2 == 0.0 and o.cosine == 1.0 for o in report.outputs)
    assert report.accuracy["original"] == report.accuracy["optimized"] > 0.5  # trained models, labels in the data


@pytest.mark.parametrize("model, data, index", [("digits_cnn", "digits_eval", 1), ("digits_cnn", "digits_eval", 3),
                                                ("resnet_mini", "digits16_eval", 4)])
def test_perturbed_weight_fails_and_localization_names_that_layer_first(tmp_path, capsys, model, data, index):
    broken = tmp_path / "broken.onnx"
    node = scale_weight(MODELS / f"{model}.onnx", broken, index)
    code, report = run_json(["validate", MODELS / f"{model}.onnx", broken, "--data", MODELS / f"{data}.npz"], tmp_path, capsys)
    assert code == 1 and report["passed"] is False
    localization = report["providers"][0]["localization"]
    assert localization["first"]["node"] == node
    assert localization["offenders"][0]["node"] == node
    assert [o["index"] for o in localization["offenders"]] == sorted(o["index"] for o in localization["offenders"])


def test_terminal_output_names_divergence_and_ends_failed(tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    node = scale_weight(DIGITS, broken, 1)
    code, _, err = run_cli(["validate", DIGITS, broken, "--data", DIGITS_DATA], capsys)
    assert code == 1
    assert "divergence starts at" in err and node in err
    assert err.strip().splitlines()[-1] == "FAILED"


def test_nan_in_output_fails(tmp_path, capsys):
    broken = tmp_path / "nan.onnx"
    nan_in_output(DIGITS, broken)
    code, report = run_json(["validate", DIGITS, broken, "--data", DIGITS_DATA], tmp_path, capsys)
    assert code == 1
    out = report["outputs"][0]
    assert out["nonfinite"] == 360 and out["passed"] is False
    assert any("NaN" in f for f in out["failures"])


def test_accuracy_only_with_labels(tmp_path, capsys):
    code, report = run_json(["validate", DIGITS, DIGITS], tmp_path, capsys)  # random inputs: no labels
    assert code == 0 and report["accuracy"] is None and report["samples"] == 8  # 4 random batches of 2
    code, report = run_json(["validate", DIGITS, DIGITS, "--data", DIGITS_DATA], tmp_path, capsys)
    assert code == 0 and report["accuracy"]["samples"] == 360 and report["accuracy"]["original"] > 0.9


def test_json_report_is_strict_json_with_schema(tmp_path, capsys):
    code, report = run_json(["validate", DIGITS, DIGITS, "--capture", "always"], tmp_path, capsys)
    assert code == 0 and report["schema"] == "onnxslim.validate/1"
    json.dumps(report, allow_nan=False)  # infinities are written as strings
    assert report["outputs"][0]["snr_db"] == "inf"
    curve = report["providers"][0]["localization"]["curve"]
    assert len(curve) == 12 and curve[-1]["name"] == "logits" and not any(t["diverged"] for t in curve)


@pytest.mark.skipif(CUDA_MISSING is None, reason="CUDA is available here; this checks the skipped path")
def test_cuda_missing_is_skipped_not_crashed(tmp_path, capsys):
    code, report = run_json(["validate", DIGITS, DIGITS, "--providers", "cpu,cuda"], tmp_path, capsys)
    assert code == 0 and report["passed"]
    cuda = report["providers"][1]
    assert cuda["provider"] == "cuda" and cuda["status"] == "skipped" and "CUDAExecutionProvider" in cuda["reason"]
    code, report = run_json(["validate", DIGITS, DIGITS, "--providers", "all", "--strict"], tmp_path, capsys)
    assert code == 1 and not report["passed"]
    # nothing compared is not a pass for `validate` (a CI gate on a CPU runner passed any model) ...
    code, report = run_json(["validate", DIGITS, DIGITS, "--providers", "cuda"], tmp_path, capsys)
    assert code == 1 and not report["passed"] and "no requested provider could run" in report["skipped"]
    # ... while optimize's validation stays advisory unless --strict
    code, report = run_json([DIGITS, tmp_path / "out.onnx", "--providers", "cuda"], tmp_path, capsys)
    assert code == 0 and report["passed"] and "no requested provider could run" in report["validation"]["skipped"]
    code, report = run_json([DIGITS, tmp_path / "out2.onnx", "--providers", "cuda", "--strict"], tmp_path, capsys)
    assert code == 1 and not report["passed"] and not (tmp_path / "out2.onnx").exists()


@pytest.mark.skipif(CUDA_MISSING is not None, reason=f"needs CUDA: {CUDA_MISSING}")
def test_cuda_runs_and_compares_with_cpu(tmp_path, capsys):
    code, report = run_json(["validate", DIGITS, DIGITS, "--providers", "cpu,cuda", "--data", DIGITS_DATA], tmp_path, capsys)
    cuda = report["providers"][1]
    assert code == 0 and cuda["status"] == "ran" and cuda["outputs"][0]["max_abs"] == 0.0
    assert [c["name"] for c in cuda["cross"]] == ["original/logits", "optimized/logits"]
    assert cuda["cross"][0]["cosine"] > 0.9999


def test_optimize_runs_the_harness_and_writes_html(tmp_path, capsys):
    html = tmp_path / "report.html"
    code, _, err = run_cli([DIGITS, tmp_path / "out.onnx", "--data", DIGITS_DATA, "--html", html], capsys)
    assert code == 0, err
    assert "onnxslim validation" in html.read_text() and "accuracy (logits, 360 labels)" in err


def test_min_cosine_flag_sets_the_floor(tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    scale_weight(DIGITS, broken, 1, factor=1.2)
    base = ["validate", DIGITS, broken, "--data", DIGITS_DATA, "--lossy", "--min-snr", "0", "--min-top1", "0"]
    code, report = run_json(base, tmp_path, capsys)
    cosine = report["outputs"][0]["cosine"]
    assert code == 0 and 0.99 < cosine < 0.99999
    code, report = run_json([*base, "--min-cosine", f"{(1 + cosine) / 2:.8f}"], tmp_path, capsys)
    assert code == 1 and [f.split(" ")[0] for f in report["outputs"][0]["failures"]] == ["cosine"]
