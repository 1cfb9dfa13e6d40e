"""Calibration data the model rejects at run time (token ids past the embedding table) or NaN inputs:
one DataError line and exit 2, with no raw ONNX Runtime log line. Pruning used to roll back and exit 0
with the model unchanged (reconstruct's runs), or prune on NaN activations and write the result."""

import numpy as np
import pytest

from onnxslim.core.manager import PassManager
from onnxslim.core.pass_base import PassContext
from onnxslim.data import DataBatch
from onnxslim.errors import DataError
from onnxslim.io import save
from onnxslim.passes.pruning._calib import stream_captures
from onnxslim.passes.pruning.prune_channels import PruneChannels, PruneChannelsConfig
from onnxslim.passes.pruning.prune_magnitude import PruneMagnitude, PruneMagnitudeConfig
from onnxslim.passes.pruning.scan import scan_prune
from tests.helpers import assert_cli_rejects_data, make_model, rng

# token embeddings, then three projections: the middle one's channels are prunable
EMBEDDING = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[N, 4] ids) => (float[N, 4, 8] y) {
    e = Gather (table, ids)
    a = MatMul (e, w1)
    b = Relu (a)
    c = MatMul (b, w2)
    d = Relu (c)
    y = MatMul (d, w3)
}
"""
ROWS = 50


def _model():
    r = rng(0)
    return make_model(EMBEDDING, initializers={"table": r.standard_normal((ROWS, 32)).astype(np.float32),
                                               "w1": r.standard_normal((32, 32)).astype(np.float32),
                                               "w2": r.standard_normal((32, 32)).astype(np.float32),
                                               "w3": r.standard_normal((32, 8)).astype(np.float32)})


def _ids(value: int | None = None, count: int = 4) -> dict:
    ids = rng(1).integers(0, ROWS, (count, 4)) if value is None else np.full((count, 4), value, np.int64)
    return {"ids": ids.astype(np.int64)}


def _pass(method: str, importance: str, calibration):
    context = PassContext(calibration=calibration)
    if method == "channel":
        return PruneChannels(PruneChannelsConfig(amount=0.5, reconstruct=True, importance=importance), context=context)
    return PruneMagnitude(PruneMagnitudeConfig(amount=0.5, reconstruct=True, importance=importance), context=context)


@pytest.mark.parametrize("method", ["channel", "magnitude"])
@pytest.mark.parametrize("importance", ["magnitude", "activation"])  # the first run over the data: refit's, scoring's
def test_ids_past_the_table_are_a_data_error_not_a_rollback(method, importance):
    prune = _pass(method, importance, [DataBatch(_ids()), DataBatch(_ids(999_999))])
    with pytest.raises(DataError, match=r"rejected by the model: .*Gather.*idx=999999"):
        PassManager([prune]).run(_model())


def test_the_same_passes_apply_on_good_data():
    model, pipeline = PassManager([_pass("channel", "magnitude", [DataBatch(_ids())])]).run(_model())
    assert pipeline.records[0].status == "applied" and model.graph.initializers["w2"].const_value.shape == (32, 16)


def test_nan_inputs_are_a_data_error():
    model = make_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 16] x) => (float[N, 4] y) {
            a = MatMul (x, w1)
            b = Relu (a)
            c = MatMul (b, w2)
            y = MatMul (c, w3)
        }""", initializers={name: rng(2).standard_normal(shape).astype(np.float32)
                            for name, shape in (("w1", (16, 16)), ("w2", (16, 16)), ("w3", (16, 4)))})
    x = rng(3).standard_normal((4, 16)).astype(np.float32)
    x[1, 2] = np.nan
    prune = PruneChannels(PruneChannelsConfig(amount=0.5), context=PassContext(calibration=[DataBatch({"x": x})]))
    with pytest.raises(DataError, match="'x' contains NaN"):
        PassManager([prune]).run(model)


def test_a_pruned_copy_failing_on_the_data_is_the_pass_s_error():
    # reconstruct runs the unpruned model on each batch first: a failure of the pruned copy alone is the pass's bug
    with pytest.raises(RuntimeError, match="pruned model fails on calibration data the unpruned model ran") as caught:
        next(stream_captures(_model(), ["b"], [_ids(999)], candidate=True))
    assert not isinstance(caught.value, DataError)
    with pytest.raises(DataError, match="idx=999"):
        next(stream_captures(_model(), ["b"], [_ids(999)]))


def test_the_sensitivity_scan_reports_rejected_data():
    with pytest.raises(DataError, match="idx=-999"):
        scan_prune(_model(), [DataBatch(_ids()), DataBatch(_ids(-999))], amounts=(0.5,))


@pytest.mark.parametrize("flags", [["--prune", "0.5", "--prune-method", "channel", "--reconstruct"],
                                   ["--prune", "0.5", "--prune-method", "magnitude", "--reconstruct",
                                    "--prune-importance", "magnitude"]])
def test_the_cli_prints_one_line_exits_2_and_writes_nothing(tmp_path, capfd, flags):
    save(_model(), tmp_path / "model.onnx")
    ids = _ids(count=8)["ids"]
    ids[-1, 0] = 999_999
    np.savez(tmp_path / "bad.npz", ids=ids)
    assert_cli_rejects_data(capfd, tmp_path / "model.onnx", tmp_path / "bad.npz", tmp_path / "out.onnx", *flags)
