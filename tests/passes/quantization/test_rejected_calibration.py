"""Calibration data the model rejects at run time (token ids past the embedding table) is one
DataError line and exit 2, from whichever run meets it first, with no raw ONNX Runtime log line;
it used to roll quantize-static back and exit 0 with a float model when smoothing's run met it."""

import numpy as np
import pytest

from onnxslim.core.manager import PassManager
from onnxslim.core.pass_base import PassContext
from onnxslim.data import DataBatch
from onnxslim.errors import DataError
from onnxslim.io import save
from onnxslim.passes.quantization import mixed_precision, sensitivity
from onnxslim.passes.quantization.calibrate import run_batch, run_candidate
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from onnxslim.runtime.session import make_session
from tests.helpers import assert_cli_rejects_data, make_model, rng

# MiniLM in three nodes: token embeddings, GELU's trailing "* 0.5" (a smoothing site), a projection
EMBEDDING = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[N, 4] ids) => (float[N, 4, 6] y) {
    e = Gather (table, ids)
    h = Mul (e, half)
    y = MatMul (h, w)
}
"""
ROWS = 50


def _model():
    r = rng(0)
    return make_model(EMBEDDING, initializers={"table": r.standard_normal((ROWS, 8)).astype(np.float32),
                                               "half": np.array(0.5, np.float32),
                                               "w": r.standard_normal((8, 6)).astype(np.float32)})


def _ids(value: int | None = None, count: int = 4) -> dict:
    ids = rng(1).integers(0, ROWS, (count, 4)) if value is None else np.full((count, 4), value, np.int64)
    return {"ids": ids.astype(np.int64)}


@pytest.mark.parametrize("smoothing_alpha", [0.75, 0.0])  # the run that decides smoothing's divisors, or none
def test_ids_past_the_table_are_a_data_error_not_a_rollback(smoothing_alpha):
    calibration = [DataBatch(_ids()), DataBatch(_ids(999_999))]
    quantize = QuantizeStatic(QuantizeStaticConfig(smoothing_alpha=smoothing_alpha),
                              context=PassContext(calibration=calibration))
    with pytest.raises(DataError, match=r"rejected by the model: .*Gather.*idx=999999"):
        PassManager([quantize]).run(_model())


def test_the_cli_prints_one_line_exits_2_and_writes_nothing(tmp_path, capfd):
    save(_model(), tmp_path / "model.onnx")
    np.savez(tmp_path / "bad.npz", **_ids(999_999))
    assert_cli_rejects_data(capfd, tmp_path / "model.onnx", tmp_path / "bad.npz", tmp_path / "out.onnx", "--quantize", "static")


def test_every_run_of_the_float_model_over_calibration_data_is_a_data_error():
    model, bad = _model(), [_ids(), _ids(-999)]
    with pytest.raises(DataError, match="idx=-999"):
        mixed_precision.run_outputs(model, bad)
    with pytest.raises(DataError, match="idx=-999"):
        sensitivity.rank_tensors(model, {"h": (np.float32(0.01), np.uint8(128))}, bad)


def test_a_quantized_copy_failing_on_accepted_data_is_the_pass_s_error():
    # the float model ran these feeds first: a failure of the pass's own model is its bug (rolled back), not the data's
    with pytest.raises(RuntimeError, match="quantized model fails") as caught:
        mixed_precision.run_outputs(_model(), [_ids(999)], candidate=True)
    assert not isinstance(caught.value, DataError)


def test_runs_over_calibration_data_leave_no_onnxruntime_log_line(capfd):
    session = make_session(_model())
    assert run_batch(session, ["y"], _ids())[0].shape == (4, 4, 6)
    for run, error in ((run_batch, DataError), (run_candidate, RuntimeError)):
        with pytest.raises(error):
            run(session, ["y"], _ids(999))
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("flags", [["--quantize", "static"], ["--lowrank", "auto"],
                                   ["--prune", "0.3", "--prune-method", "channel", "--reconstruct"]])
def test_calibration_data_without_samples_is_exit_2_before_any_pass(tmp_path, capsys, flags):
    # it was a KeyError and a rollback (quantize), ranks cut to 8 against nothing (low rank), a skipped refit
    from onnxslim.cli import main
    from tests.helpers import MODELS

    data = tmp_path / "none.npz"
    np.savez(data, input=np.zeros((0, 1, 16, 16), np.float32))
    out = tmp_path / "out.onnx"
    code = main([str(MODELS / "resnet_mini.onnx"), str(out), *flags, "--calibration-data", str(data), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "none.npz: no samples" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
