"""split-lowrank through the flags/API, in combined pipelines, and on the bundled ViT."""

import numpy as np
import pytest

from onnxslim.api import run
from onnxslim.core.flags import family_steps
from onnxslim.errors import ConfigError
from tests.helpers import MODELS, run_ort

VIT = MODELS / "vit_tiny.onnx"
CALIB = MODELS / "digits_calib.npz"


def _eval():
    data = np.load(MODELS / "digits_eval.npz")
    return data["input"], data["labels"]


def _record(result, name):
    return next(r for r in result.pipeline.records if r.name == name)


@pytest.mark.parametrize("options, settings", [
    ({"lowrank": "0.9"}, {"energy": 0.9}),
    ({"lowrank": 0.9, "lowrank_method": "plain"}, {"energy": 0.9, "method": "plain"}),
    ({"lowrank": "auto"}, {"min_cosine": 0.99}),
    ({"lowrank": "auto", "lowrank_min_cosine": 0.97}, {"min_cosine": 0.97}),
    ({"lowrank": "auto", "lowrank_min_cosine": 0.0}, {"min_cosine": 0.0}),  # the pass refuses it; was read as unset
    ({"lowrank_rank": 16}, {"rank": 16}),
    ({"lowrank_params": 0.8}, {"params": 0.8}),
    ({"lowrank_params": 0.8, "lowrank_refit": "oneshot"}, {"params": 0.8, "refit": "oneshot"}),
])
def test_flags_become_one_step(options, settings):
    (step,) = family_steps(options)
    assert step.name == "split-lowrank" and step.options == settings


@pytest.mark.parametrize("options", [{"lowrank": "most"}, {"lowrank": 0.9, "lowrank_rank": 8}])
def test_bad_flag_values_are_rejected(options):
    with pytest.raises(ConfigError):
        family_steps(options)


def test_pruning_runs_before_low_rank():
    assert [s.name for s in family_steps({"lowrank_rank": 8, "prune": 0.3})] == ["prune-magnitude", "split-lowrank"]


def test_vit_with_cleanup_and_calibrated_budget():
    # Measured: 30% of the ViT's splittable weights removed keeps 97.2% accuracy (97.8% before); bound 95%.
    x, labels = _eval()
    result = run(VIT, lowrank_params=0.7, calibration_data=CALIB, validate=False)
    record = _record(result, "split-lowrank")
    assert record.status == "applied" and record.stats["params_saved"] > 15000
    split = [row for row in record.details if row["split"]]
    assert all(row["method"] == "whitened" and row["output_error"] <= row["plain_output_error"] for row in split)
    accuracy = (run_ort(result.model, {"input": x})[0].argmax(1) == labels).mean()
    assert accuracy >= 0.95


def test_vit_auto_meets_the_cosine_floor_on_unseen_data():
    x, _ = _eval()
    result = run(VIT, lowrank="auto", lowrank_min_cosine=0.995, calibration_data=CALIB, validate=False)
    record = _record(result, "split-lowrank")
    assert record.status == "applied" and record.stats["check_cosine"] >= 0.995
    y0, y1 = run_ort(VIT, {"input": x})[0], run_ort(result.model, {"input": x})[0]
    cosine = np.mean(np.sum(y0 * y1, 1) / (np.linalg.norm(y0, axis=1) * np.linalg.norm(y1, axis=1)))
    assert cosine >= 0.99  # measured 0.998 on the 360 eval samples


def test_prune_then_low_rank():
    x, labels = _eval()
    result = run(VIT, prune=0.2, lowrank_rank=32, validate=False)
    assert _record(result, "prune-magnitude").status == "applied"
    assert _record(result, "split-lowrank").status == "applied"
    assert (run_ort(result.model, {"input": x})[0].argmax(1) == labels).mean() >= 0.9


def test_low_rank_then_quantize():
    quantization = pytest.importorskip("onnxslim.passes.quantization.quantize_static")
    from onnxslim.core.pass_base import PassContext
    from onnxslim.data import open_reader
    from onnxslim.io import load
    from onnxslim.passes.lowrank.split_lowrank import Config, SplitLowRank

    x, labels = _eval()
    context = PassContext(calibration=open_reader(CALIB, load(VIT)))
    passes = [SplitLowRank(Config(params=0.8), context=context), quantization.QuantizeStatic(context=context)]
    result = run(VIT, passes=passes, validate=False)
    assert _record(result, "split-lowrank").status == "applied"
    quantized = _record(result, "quantize-static")
    assert quantized.status == "applied"
    nodes = {row.get("node") for row in quantized.details if row.get("weight")}
    assert any(str(n).endswith("_lowrank_a") for n in nodes) and any(str(n).endswith("_lowrank_b") for n in nodes)
    assert (run_ort(result.model, {"input": x})[0].argmax(1) == labels).mean() >= 0.9
