"""The --prune flag group, and pruning of the bundled trained models (accuracy on their eval split)."""

import numpy as np
import pytest

import onnxslim
from onnxslim.errors import ConfigError
from onnxslim.passes.pruning.flags import to_steps
from tests.helpers import MODELS, check_full, run_ort

ORIGINAL_DIGITS_ACCURACY = 0.992  # models/README.md


def test_flags_become_one_step_per_method():
    (step,) = to_steps({"prune": 0.3, "prune_method": "channel", "prune_skip": "a,b", "reconstruct": True})
    assert step.name == "prune-channels"
    assert step.options == {"amount": 0.3, "skip": "a,b", "reconstruct": True}
    (step,) = to_steps({"prune": 0.5, "prune_method": "nm", "prune_pattern": "1:4", "prune_first_last": True})
    assert step.name == "prune-nm" and step.options == {"amount": 0.5, "n": 1, "m": 4, "skip_first_last": False}
    assert to_steps({"prune": 0.5})[0].name == "prune-magnitude"


@pytest.mark.parametrize("options", [{"prune_method": "channel"}, {"prune": 0.5, "prune_pattern": "2:4"},
                                     {"prune": 0.5, "prune_pattern": "x", "prune_method": "nm"},
                                     {"prune": 0.5, "prune_method": "channel", "prune_scope": "global"}])
def test_inconsistent_flags_are_config_errors(options):
    with pytest.raises(ConfigError):
        to_steps(options)


def _accuracy(model, data):
    archive = np.load(MODELS / data)
    return float(np.mean(run_ort(model, {"input": archive["input"]})[0].argmax(1) == archive["labels"]))


@pytest.mark.parametrize("options", [
    {"prune": 0.5},
    {"prune": 0.3, "prune_method": "channel"},
])
def test_digits_with_reconstruction_stays_within_one_point(options):
    result = onnxslim.api.run(MODELS / "digits_cnn.onnx", validate=False, reconstruct=True,
                              calibration_data=MODELS / "digits_calib.npz", **options)
    record = result.pipeline.records[-1]
    assert record.status == "applied", record.reason
    assert record.stats["layers_refit"] >= 2
    check_full(result.model)
    assert _accuracy(result.model, "digits_eval.npz") >= ORIGINAL_DIGITS_ACCURACY - 0.01


def test_resnet_channel_pruning_shrinks_every_coupled_group():
    result = onnxslim.api.run(MODELS / "resnet_mini.onnx", validate=False, prune=0.3, prune_method="channel")
    record = result.pipeline.records[-1]
    assert record.status == "applied", record.reason
    assert record.after.params < 0.6 * record.before.params
    stages = sorted((row["channels"], row["removed"]) for row in record.details if row.get("removed") and len(row["group"]) == 3)
    # Both residual stages (2 convs + stem or projection, coupled by Adds) lose 30% rounded to a multiple of 8 kept:
    # the stem is pruned by default because it is coupled to the 64-wide stage (sparing it would freeze the stage).
    assert stages == [(64, 16), (128, 32)]
    assert not [row for row in record.details if "skipped" in row and "group" in row]
    check_full(result.model)


def test_digits_first_layer_is_spared_when_not_coupled():
    result = onnxslim.api.run(MODELS / "digits_cnn.onnx", validate=False, prune=0.3, prune_method="channel")
    rows = [row for row in result.pipeline.records[-1].details if "group" in row]
    assert {"group": ["/features/features.0/Conv"], "channels": 16,
            "skipped": "first layer, not coupled to other layers"} in rows
    assert sum(1 for row in rows if row.get("removed")) == 3
    first = [n for n in result.model.graph if n.op_type == "Conv"][0]
    assert first.inputs[1].const_value.shape[0] == 16


def test_mobilenet_channel_pruning_with_reconstruction_keeps_accuracy():
    result = onnxslim.api.run(MODELS / "mobilenet_mini.onnx", validate=False, prune=0.3, prune_method="channel",
                              reconstruct=True, calibration_data=MODELS / "digits16_calib.npz")
    record = result.pipeline.records[-1]
    assert record.status == "applied", record.reason
    assert record.stats["groups_pruned"] >= 8
    assert _accuracy(result.model, "digits16_eval.npz") >= 0.97  # original 98.9%


@pytest.mark.parametrize("extra, message", [(["--reconstruct"], "reconstruct needs calibration data"),
                                            (["--prune-importance", "activation"], "importance 'activation' needs")])
def test_data_hungry_settings_without_calibration_data_exit_2(tmp_path, capsys, extra, message):
    from onnxslim.cli import main

    code = main([str(MODELS / "digits_cnn.onnx"), str(tmp_path / "out.onnx"), "--prune", "0.3", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "prune-" in err
    assert not (tmp_path / "out.onnx").exists()
