"""Validation data that does not fit ``--input-shape`` is the data's fault (exit 2 naming the file),
not the optimized (pinned) model's; a batch ONNX Runtime rejects is named by file and samples."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.data import open_reader
from onnxslim.errors import DataError
from onnxslim.io import save
from onnxslim.runtime import run_batches
from tests.helpers import make_model, rng
from tests.validation.conftest import run_cli

DYNAMIC = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, H, W] x) => (float[N, 3, H, W] y) { y = Relu(x) }"""


def _x(n, width=5):
    return rng(n).standard_normal((n, 3, 4, width)).astype(np.float32)


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model.onnx"
    save(make_model(DYNAMIC), path)
    return path


def _data(tmp_path, kind):
    """(data path, --input-shape, words the error must contain)."""
    if kind == "batch":  # 10 samples, batches of 8: the last one (2) was refused by the pinned model only
        np.savez(tmp_path / "ten.npz", x=_x(10))
        return tmp_path / "ten.npz", "x:8,3,4,5", ["ten.npz", "10 samples do not fill batches of 8"]
    folder = tmp_path / "lines"  # a pinned width, files of another width
    folder.mkdir()
    np.save(folder / "a.npy", _x(1)[0])
    np.save(folder / "b.npy", _x(1, width=7)[0])
    return folder, "x:1,3,4,5", ["b.npy", "dim 3 is 7, --input-shape gives 5"]


@pytest.mark.parametrize("kind", ["batch", "width"])
def test_data_that_does_not_fit_the_pins_is_exit_2_naming_the_file(tmp_path, capsys, model_path, kind):
    # was exit 1: "the optimized model does not run where the original does", blamed on a pass
    data, pin, words = _data(tmp_path, kind)
    out = tmp_path / "out.onnx"
    code, _, err = run_cli([model_path, out, "--input-shape", pin, "--data", data], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and all(w in lines[0] for w in words), err
    assert not out.exists()


def test_a_batch_ort_rejects_is_named_by_file_and_samples(tmp_path):
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, H, W] x) => (float[M, 7] y) { s = Constant<value_ints=[-1, 7]>()
        y = Reshape(x, s) }""")
    np.savez(tmp_path / "d.npz", x=_x(6, width=3))  # 36 values per sample: no Reshape to [-1, 7]
    reader = open_reader(tmp_path / "d.npz", model, batch_size=4)
    with pytest.raises(DataError, match=r"d\.npz \(samples 0-3\): onnxruntime cannot run the model on batch 0"):
        run_batches(model, reader)


def test_latency_and_capture_keep_a_pinned_batch(tmp_path):
    # the latency check cut every batch to one sample: a model pinned to batch 8 refused it
    # (internal error, exit 3) after quantizing, and nothing was written
    import onnxslim
    from tests.helpers import MODELS

    result = onnxslim.run(MODELS / "digits_cnn.onnx", tmp_path / "q.onnx", input_shapes={"input": [8, 1, 8, 8]},
                          quantize="dynamic", validation={"data": str(MODELS / "digits_eval.npz"), "latency_runs": 2})
    assert result.passed and result.validation.latency is not None and result.output is not None


def test_paddle_s_minus_one_batch_is_a_batch_axis():
    # ch_ppocr_mobile_v2.0_cls declares x[-1, 3, 48, 192]: latency ran on whole batches of 32
    import onnx_ir as ir

    from onnxslim.input_shapes import batch_axis_is_dynamic

    model = make_model(DYNAMIC)
    model.graph.inputs[0].shape = ir.Shape([-1, 3, 4, 5])
    assert batch_axis_is_dynamic(model)
    model.graph.inputs[0].shape = ir.Shape([1, 3, 4, 5])
    assert not batch_axis_is_dynamic(model)


def test_a_data_file_s_own_problem_does_not_blame_the_model(tmp_path):
    # read while validating, a file that cannot fill the fixed batch was reported as
    # "000.npy: original model: 1 samples do not fill batches of 4"
    import onnxslim

    path = tmp_path / "model.onnx"
    save(make_model(DYNAMIC.replace("float[N, 3, H, W] x", "float[4, 3, H, W] x")), path)
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "000.npy", _x(1))
    with pytest.raises(DataError) as caught:
        onnxslim.validate(path, path, data=str(folder))
    assert "original model" not in str(caught.value) and "000.npy" in str(caught.value), caught.value
