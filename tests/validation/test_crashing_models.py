"""Models that crash ONNX Runtime instead of raising: float16 models are first loaded in a child.

ONNX Runtime 1.32's CPU provider dies with SIGSEGV creating an optimized session on a float16
``Transpose(perm=[1, 0, 2]) -> MatMul(constant)`` (torch's attention and GRU
exports, converted by a tool that does not avoid it): ``onnxslim validate`` exited 139, no report.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim import api
from onnxslim.errors import ModelLoadError
from onnxslim.runtime import isolated
from onnxslim.validation import harness
from tests.passes.quantization.test_convert_fp16_ort_crash import _Float16Everything, _loads_in_a_child, _model

SHAPES = {"x": (4, 2, 32)}


def test_a_float16_model_that_crashes_onnxruntime_fails_validation_with_the_reason(tmp_path):
    crashing = _Float16Everything()(_model()).model
    if _loads_in_a_child(crashing, tmp_path) >= 0:
        pytest.skip("this onnxruntime build does not crash on the float16 Transpose -> MatMul pattern")
    report = api.validate(_model(), crashing, lossy=True, input_shapes=SHAPES)
    assert not report.passed
    assert report.providers[0].failure == ("the optimized model cannot run: ONNX Runtime crashed (SIGSEGV) creating "
                                           "a CPU session with its default graph optimizations")


def test_only_float16_models_are_tried_apart_and_a_crashing_original_is_an_input_error(monkeypatch):
    tried = []
    monkeypatch.setattr(harness, "session_failure", lambda path: tried.append(path) or "ONNX Runtime crashed (SIGSEGV)")
    assert api.validate(_model(), _model(), input_shapes=SHAPES).passed and tried == []  # float32: loaded in-process as before
    half = _Float16Everything()(_model()).model
    with pytest.raises(ModelLoadError, match="original model: cannot be validated: ONNX Runtime crashed"):
        api.validate(half, half, lossy=True, input_shapes=SHAPES)
    assert len(tried) == 1


def test_float16_compute_is_recognized():
    assert not isolated.computes_in_float16(_model())
    assert isolated.computes_in_float16(_Float16Everything()(_model()).model)
