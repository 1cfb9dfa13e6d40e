"""The API's errors are typed (OnnxSlimError subclasses naming what they concern), and its report
says which tool, input and output it describes."""

import numpy as np
import onnx
import pytest

import onnxslim
from onnxslim.errors import ConfigError, ModelLoadError
from tests.helpers import MODELS, make_model

DIGITS = MODELS / "digits_cnn.onnx"


# 6. untyped errors


def test_a_single_pass_name_is_one_pass():
    result = onnxslim.run(DIGITS, passes="remove-noops", simplify=False, validate=False)
    assert [r.name for r in result.pipeline.records] == ["remove-noops"]


@pytest.mark.parametrize("passes", [[3], [("remove-noops", 3)], 3])
def test_a_pass_spec_of_another_type_is_a_config_error(passes):
    with pytest.raises(ConfigError, match=r"^passes: expected a pass name"):
        onnxslim.optimize(DIGITS, passes=passes, validate=False)


def test_a_proto_without_its_external_data_names_the_tensor_and_the_file(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir(), (tmp_path / "elsewhere").mkdir()
    path = tmp_path / "model" / "ext.onnx"
    onnx.save(onnx.load(DIGITS), path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    proto = onnx.load(path, load_external_data=False)
    monkeypatch.chdir(tmp_path / "elsewhere")  # the relative location no longer finds the data
    with pytest.raises(ModelLoadError, match=r"tensor '[^']+': external data file 'w.bin' not found") as caught:
        onnxslim.optimize(proto, tmp_path / "out.onnx")
    assert str(tmp_path / "elsewhere") in str(caught.value)
    assert not (tmp_path / "out.onnx").exists()
    monkeypatch.chdir(tmp_path / "model")  # where the data is: it runs
    onnxslim.optimize(proto, validate=False)


# 8. the report


def test_the_report_names_the_version_the_input_and_the_absolute_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.onnx").write_bytes(DIGITS.read_bytes())
    payload = onnxslim.run("in.onnx", "out.onnx", validate=False).to_dict()
    assert payload["onnxslim_version"] == onnxslim.__version__
    assert payload["input"] == str(tmp_path / "in.onnx") and payload["input_given"] == "in.onnx"
    assert payload["output"] == str(tmp_path / "out.onnx")
    in_memory = onnxslim.run(onnx.load(DIGITS), validate=False).to_dict()
    assert in_memory["input"] == "<onnx.ModelProto>" and in_memory["input_given"] is None


OPSET_11 = """
<ir_version: 6, opset_import: ["" : 11]>
g (float[N, 3, 8, 8] x) => (float[N, 8, 8, 8] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
    y = Relu (c)
}
"""


def test_an_opset_conversion_is_a_warning_of_the_report(tmp_path):
    r = np.random.default_rng(0)
    weights = {"w": r.standard_normal((8, 3, 3, 3)).astype(np.float32), "b": r.standard_normal(8).astype(np.float32)}
    model = make_model(OPSET_11, initializers=weights)
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, x=r.standard_normal((8, 3, 8, 8)).astype(np.float32))
    result = onnxslim.run(model, passes=["quantize-static"], calibration_data=calibration, validate=False)
    assert result.model.opset_imports[""] == 13
    assert "pass quantize-static: opset converted 11 -> 13 (per-channel int8 weights)" in result.to_dict()["warnings"]
