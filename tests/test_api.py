import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim.errors import ConfigError
from tests.helpers import MODELS, run_ort

RESNET = MODELS / "resnet_mini.onnx"


def test_optimize_accepts_proto_and_ir_and_leaves_them_alone():
    proto = onnx.load(str(RESNET))
    before = proto.SerializeToString()
    out = onnxslim.optimize(proto, validate=False)
    assert isinstance(out, onnx.ModelProto) and proto.SerializeToString() == before
    assert len(out.graph.node) < len(proto.graph.node)

    model = ir.serde.deserialize_model(proto)
    nodes = len(model.graph)
    onnxslim.optimize(model, validate=False)
    assert len(model.graph) == nodes


def test_recipe_options_and_explicit_arguments(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[options]\nsimplify = false\nvalidation = { random_samples = 2, atol = 0.5 }\n\n[[pass]]\nname = "fuse-batchnorm"\n')
    result = onnxslim.run(RESNET, recipe=recipe)
    assert [r.name for r in result.pipeline.records] == ["fuse-batchnorm"]
    assert result.validation.samples == 4  # 2 random batches of 2
    result = onnxslim.run(RESNET, recipe=recipe, simplify=True, validation={"random_samples": 3})
    assert result.pipeline.records[0].name == "fold-constants" and result.validation.samples == 6


def test_unknown_recipe_option_is_an_error(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[options]\nturbo = true\n")
    with pytest.raises(ConfigError, match="turbo"):
        onnxslim.run(RESNET, recipe=recipe)


def test_save_is_atomic_and_supports_external_data(tmp_path):
    model = onnxslim.load(RESNET)
    dst = onnxslim.save(model, tmp_path / "ext.onnx", external_data=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size > 2_000_000
    assert dst.stat().st_size < 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ext.onnx", "ext.onnx.data"]
    # Round trip through the external-data file: same outputs.
    x = np.load(MODELS / "digits16_eval.npz")["input"][:4]
    np.testing.assert_array_equal(run_ort(dst, {"input": x})[0], run_ort(RESNET, {"input": x})[0])
    reloaded = onnxslim.optimize(dst, tmp_path / "again.onnx", validate=False)
    assert reloaded.graph.node


def test_inspect_reports_symbolic_dims():
    summary = onnxslim.inspect(RESNET)
    assert summary["inputs"][0] == {"name": "input", "dtype": "FLOAT", "shape": ["batch", 1, 16, 16]}
    assert summary["opsets"] == {"ai.onnx": 17}


def test_calibrated_pipeline_validates_on_calibration_data_when_no_data_is_given():
    calib = str(MODELS / "digits_calib.npz")
    result = onnxslim.run(MODELS / "digits_cnn.onnx", quantize="static", calibration_data=calib,
                          validation={"latency_runs": 3})
    assert result.validation.data.endswith("digits_calib.npz") and result.notes
    assert result.validation.samples == 128 and result.passed
