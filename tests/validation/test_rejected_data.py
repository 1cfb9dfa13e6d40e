"""Validation data that the readers accept but ONNX Runtime rejects at run time (token ids past an
embedding table): one line on stderr, exit 2, nothing written, and no raw ORT log line beside it."""

import numpy as np
import pytest

from onnxslim.cli import main
from onnxslim.errors import DataError
from onnxslim.io import save
from onnxslim.runtime import run_batches
from tests.helpers import make_model, rng

EMBEDDING = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[N, 4] ids) => (float[N, 4, 6] y) {
    e = Gather (table, ids)
    y = MatMul (e, w)
}
"""


def _model():
    return make_model(EMBEDDING, initializers={"table": rng(0).standard_normal((50, 8)).astype(np.float32),
                                               "w": rng(1).standard_normal((8, 6)).astype(np.float32)})


def _bad_data(path):
    ids = rng(2).integers(0, 50, (6, 4)).astype(np.int64)
    ids[-1, -1] = 999_999
    np.savez(path, ids=ids)
    return path


@pytest.mark.parametrize("command", ["validate", "optimize"])
def test_a_batch_ort_rejects_is_one_line_and_exit_2(tmp_path, capfd, command):
    save(_model(), tmp_path / "model.onnx")
    data, out = _bad_data(tmp_path / "bad.npz"), tmp_path / "out.onnx"
    args = ["validate", str(tmp_path / "model.onnx"), str(tmp_path / "model.onnx")] if command == "validate" else \
        [str(tmp_path / "model.onnx"), str(out)]
    code = main([*args, "--data", str(data)])
    err = capfd.readouterr().err  # file descriptor level: ORT writes its log to the C stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and not out.exists()
    # the batch is named by its file and samples (it named neither)
    assert len(lines) == 1 and lines[0].startswith(f"onnxslim: error: {data} (samples 0-5): original model: "
                                                   "onnxruntime cannot run"), err
    assert "Gather" in lines[0] and "idx=999999" in lines[0], err
    assert "[E:onnxruntime" not in err and "\x1b[" not in err


def test_run_batches_raises_without_writing_to_stderr(tmp_path, capfd):
    data = dict(np.load(_bad_data(tmp_path / "bad.npz")))
    with pytest.raises(DataError, match=r"batch 0: Non-zero status code .*idx=999999"):
        run_batches(_model(), [data])
    assert capfd.readouterr().err == ""
