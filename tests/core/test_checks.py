"""check_model on models with large weights: checked without re-encoding them, still strict."""

import os

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim.core.checks import ModelCheckError, check_model
from tests.helpers import make_model

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 64] x) => (float[N, 128] y) {
    y = MatMul (x, w)
}
"""


def _model(weight: np.ndarray):
    return make_model(MODEL, initializers={"w": weight})


def test_a_valid_model_with_large_weights_passes_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_model(_model(np.ones((64, 128), np.float32)))
    assert os.listdir(tmp_path) == []


def test_a_large_weight_of_the_wrong_type_is_caught_by_the_runtime_load():
    model = _model(np.ones((64, 128), np.float32))
    value = model.graph.initializers["w"]
    value.const_value = ir.tensor(np.ones((64, 128), np.int32), name="w")  # MatMul(float, int32): no kernel
    value.dtype = ir.DataType.INT32
    with pytest.raises(ModelCheckError, match="onnxruntime cannot load it"):
        check_model(model)
    check_model(model, runtime=False)  # the onnx checker alone does not infer types


def test_a_dangling_input_is_caught_by_the_onnx_checker():
    model = _model(np.ones((64, 128), np.float32))
    model.graph.node(0).replace_input_with(0, ir.Value(name="ghost"))
    with pytest.raises(ModelCheckError, match="onnx checker"):
        check_model(model)
