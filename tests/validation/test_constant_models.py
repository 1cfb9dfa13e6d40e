"""A model without inputs (all constants) is validated, one evaluation per batch, and the graph
libraries' own warnings stay out of the terminal."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx.helper as oh

from tests.validation.conftest import run_json


def _constant_model(path):
    weight = onnx.numpy_helper.from_array(np.arange(-3, 3, dtype=np.float32).reshape(2, 3), "c")
    graph = oh.make_graph([oh.make_node("Relu", ["c"], ["r"]), oh.make_node("Identity", ["r"], ["y"])], "g", [],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])], initializer=[weight])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)], ir_version=8), str(path))
    return path


def test_model_without_inputs_is_validated_not_reported_as_no_samples(tmp_path, capsys, caplog):
    src = _constant_model(tmp_path / "constant.onnx")
    out = tmp_path / "out.onnx"
    with caplog.at_level(logging.WARNING):
        code, report = run_json([src, out], tmp_path, capsys)
    assert code == 0 and report["validation"]["passed"] is True
    assert report["validation"]["samples"] == 4  # the default four random batches, each one evaluation
    assert not [r for r in caplog.records if r.name.startswith(("onnx_ir", "onnxscript"))]
    from onnxruntime import InferenceSession

    (value,) = InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {})
    np.testing.assert_array_equal(value, np.maximum(np.arange(-3, 3, dtype=np.float32).reshape(2, 3), 0))
    code, report = run_json(["validate", src, out], tmp_path, capsys)
    assert code == 0 and report["samples"] == 4
