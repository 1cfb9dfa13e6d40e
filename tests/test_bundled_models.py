"""`onnxslim MODEL OUT` on every bundled model: same outputs, not larger, accuracy kept."""

import numpy as np
import onnx
import pytest

import onnxslim
from tests.helpers import MODELS, run_ort

BUNDLED = [
    ("digits_cnn", "digits_eval.npz"),
    ("resnet_mini", "digits16_eval.npz"),
    ("mobilenet_mini", "digits16_eval.npz"),
    ("vit_tiny", "digits_eval.npz"),
]


@pytest.mark.parametrize("name, data", BUNDLED)
def test_bundled_model_outputs_match_and_size_does_not_grow(name, data, tmp_path):
    src, dst = MODELS / f"{name}.onnx", tmp_path / f"{name}.onnx"
    result = onnxslim.run(src, dst, validation={"data": str(MODELS / data)})
    assert result.passed and result.pipeline.ok
    assert dst.stat().st_size <= src.stat().st_size
    assert result.pipeline.after.nodes <= result.pipeline.before.nodes

    arrays = np.load(MODELS / data)
    feeds = {"input": arrays["input"]}
    (expected,), (actual,) = run_ort(src, feeds), run_ort(dst, feeds)
    assert np.abs(expected - actual).max() <= 1e-4
    assert (expected.argmax(1) == actual.argmax(1)).all()
    if "labels" in arrays.files:
        accuracy = (actual.argmax(1) == arrays["labels"]).mean()
        assert accuracy == (expected.argmax(1) == arrays["labels"]).mean() and accuracy > 0.9

    proto = onnx.load(str(dst))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_batchnorm_folded_in_resnet():
    model = onnxslim.optimize(MODELS / "resnet_mini.onnx", validate=False)
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops and "Identity" not in ops
