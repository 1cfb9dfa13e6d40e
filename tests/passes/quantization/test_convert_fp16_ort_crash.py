"""convert-fp16 on the pattern that crashes ONNX Runtime 1.32's CPU provider, and the manager's
check in a child process that catches such crashes.

torch's ``nn.MultiheadAttention`` and GRU exports (batch-first too) read a ``Transpose(perm=[1, 0, 2])``
with a MatMul of constant weight. In float16, creating a CPU session at the default optimization
level died with SIGSEGV: ``onnxslim m.onnx o.onnx --fp16`` exited 139 with no report, and with
``--no-validate`` it wrote a model that crashed whoever loaded it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim.core.manager import ROLLED_BACK, PassManager
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.passes.quantization.convert_fp16 import ConvertFp16
from onnxslim.runtime import isolated
from tests.helpers import make_model, rng, run_ort

SEQUENCE_FIRST = """<ir_version: 8, opset_import: ["" : 17]>
g (float[S, B, 32] x) => (float[B, S, 5] y) {
    t = Transpose <perm = [1, 0, 2]> (x)
    h = MatMul (t, w)
    y = Relu (h)
}"""


def _model() -> ir.Model:
    return make_model(SEQUENCE_FIRST, initializers={"w": (rng(0).standard_normal((32, 5)) * 0.3).astype(np.float32)})


def _loads_in_a_child(model: ir.Model, folder) -> int:
    path = folder / "m.onnx"
    ir.save(model, path)
    code = ("import sys, onnxruntime as ort; o = ort.SessionOptions(); o.log_severity_level = 3; "
            "ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])")
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, check=False).returncode


def test_the_transpose_feeding_a_constant_matmul_stays_float32_and_the_model_loads(tmp_path):
    model = _model()
    original = model.clone()
    result = ConvertFp16()(model)
    transpose = next(node for node in result.model.graph if node.op_type == "Transpose")
    matmul = next(node for node in result.model.graph if node.op_type == "MatMul")
    assert transpose.outputs[0].dtype == ir.DataType.FLOAT and matmul.outputs[0].dtype == ir.DataType.FLOAT16
    kept = [row for row in result.details if row.get("node") == transpose.name]
    assert kept and "SIGSEGV" in kept[0]["kept_float32"]
    assert _loads_in_a_child(result.model, tmp_path) == 0
    x = {"x": rng(1).standard_normal((6, 2, 32)).astype(np.float32)}
    expected, actual = run_ort(original, x)[0], run_ort(result.model, x)[0]
    assert np.linalg.norm(actual - expected) / np.linalg.norm(expected) < 1e-2


class _Float16Everything(Pass):
    """Converts the model with nothing kept float32: the pattern ONNX Runtime crashes on."""

    name = "float16-everything"
    lossy = True
    isolated_check = True

    def call(self, model):
        from onnxruntime.transformers.float16 import convert_float_to_float16

        from onnxslim.passes.quantization.ort_tools import replace_contents, to_proto

        replace_contents(model, convert_float_to_float16(to_proto(model), keep_io_types=True, op_block_list=[]))
        return PassResult(model, modified=True)


def test_a_pass_whose_model_crashes_onnxruntime_is_rolled_back_with_the_crash_named(tmp_path):
    crashing = _Float16Everything()(_model()).model
    if _loads_in_a_child(crashing, tmp_path) >= 0:
        pytest.skip("this onnxruntime build does not crash on the float16 Transpose -> MatMul pattern")
    model, report = PassManager([_Float16Everything()]).run(_model())
    assert report.records[0].status == ROLLED_BACK
    assert report.records[0].reason == ("ONNX Runtime crashed (SIGSEGV) creating a CPU session with its default "
                                        "graph optimizations")
    assert [v.const_value.dtype for v in model.graph.initializers.values()] == [ir.DataType.FLOAT]


def test_the_child_process_failure_is_said_in_words(monkeypatch):
    outcomes = iter([subprocess.CompletedProcess([], -6, "", ""),
                     subprocess.CompletedProcess([], 1, "", "Traceback...\nonnxruntime...Fail: [ONNXRuntimeError] bad\n"),
                     subprocess.CompletedProcess([], 0, "", "")])
    monkeypatch.setattr(isolated.subprocess, "run", lambda *a, **k: next(outcomes))
    assert isolated.session_failure(_model()) == ("ONNX Runtime crashed (SIGABRT) creating a CPU session with its "
                                                  "default graph optimizations")
    assert isolated.session_failure(_model()).endswith("optimized CPU session: onnxruntime...Fail: [ONNXRuntimeError] bad")
    assert isolated.session_failure(_model()) is None
