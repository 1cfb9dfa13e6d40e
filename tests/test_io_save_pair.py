"""Saving over a model stored with external data: the model and its data file are two files, so a
process killed between their renames must leave no model rather than the old one reading the new data."""

import os

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim import io
from tests.helpers import MODELS, run_ort

FEEDS = {"input": np.load(MODELS / "digits16_eval.npz")["input"][:4]}


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (the test inspects the files at that moment)."""


def _perturbed(model: ir.Model) -> ir.Model:
    model = model.clone()
    for value in model.graph.initializers.values():
        array = value.const_value.numpy()
        if array.dtype == np.float32 and array.size > 64:
            value.const_value = ir.tensor(array * 2.0, name=value.name)
    return model


@pytest.fixture
def first_output(tmp_path):
    out = tmp_path / "out.onnx"
    io.save(io.load(MODELS / "resnet_mini.onnx"), out, external_data=True)
    assert (tmp_path / "out.onnx.data").exists()
    return out


def test_a_save_killed_before_the_model_rename_leaves_no_wrong_pair(tmp_path, monkeypatch, first_output):
    expected = run_ort(first_output, FEEDS)
    replace = os.replace
    seen = {}

    def replace_then_die_before_the_model(source, target):
        if os.fspath(target) == os.fspath(first_output):  # the last step: the model's rename
            seen["model there"] = first_output.exists()
            if first_output.exists():  # it must still be the old model with the old weights
                seen["outputs"] = run_ort(first_output, FEEDS)
            raise Killed
        return replace(source, target)

    monkeypatch.setattr(os, "replace", replace_then_die_before_the_model)
    with pytest.raises(Killed):
        io.save(_perturbed(io.load(first_output)), first_output, external_data=True)
    monkeypatch.undo()
    assert "model there" in seen
    if seen["model there"]:
        for before, after in zip(expected, seen["outputs"]):
            np.testing.assert_array_equal(after, before)


def test_saving_over_an_external_data_output_replaces_both_and_leaves_no_temp_files(tmp_path, first_output):
    first_output.chmod(0o640)
    model = _perturbed(io.load(first_output))
    io.save(model, first_output, external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.data"]
    assert first_output.stat().st_mode & 0o777 == 0o640  # the replaced file's permissions are kept
    for saved, wanted in zip(run_ort(first_output, FEEDS), run_ort(model, FEEDS)):
        np.testing.assert_allclose(saved, wanted, rtol=1e-6, atol=1e-6)
