"""Calibration data the model rejects at run time (token ids past the embedding table) or NaN inputs:
one DataError line and exit 2, with no raw ONNX Runtime log line, from whichever of split-lowrank's
runs meets it first (covariances, held-out probes, refit). It used to roll the pass back and exit 0."""

import numpy as np
import pytest

from onnxslim.core.manager import PassManager
from onnxslim.core.pass_base import PassContext
from onnxslim.data import DataBatch
from onnxslim.errors import DataError
from onnxslim.io import save
from onnxslim.passes.lowrank.calibration import Probe
from onnxslim.passes.lowrank.metrics import _slope_gram
from onnxslim.passes.lowrank.refit import Activations
from onnxslim.passes.lowrank.sites import find_groups
from onnxslim.passes.lowrank.split_lowrank import Config, SplitLowRank
from onnxslim.runtime.session import make_session
from tests.helpers import assert_cli_rejects_data, make_model, rng

EMBEDDING = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[N, 4] ids) => (float[N, 4, 32] y) {
    e = Gather (table, ids)
    a = MatMul (e, w1)
    b = Relu (a)
    y = MatMul (b, w2)
}
"""
ROWS = 50
SMALL = 256  # min_params: the 32 x 32 weights are candidates


def _model():
    r = rng(0)
    return make_model(EMBEDDING, initializers={"table": r.standard_normal((ROWS, 32)).astype(np.float32),
                                               "w1": r.standard_normal((32, 32)).astype(np.float32),
                                               "w2": r.standard_normal((32, 32)).astype(np.float32)})


def _ids(count: int = 10, bad: tuple[int, ...] = (), value: int = 999_999) -> dict:
    ids = rng(1).integers(0, ROWS, (count, 4)).astype(np.int64)
    ids[list(bad), 0] = value
    return {"ids": ids}


def _run(config: Config, calibration):
    return PassManager([SplitLowRank(config, context=PassContext(calibration=calibration))]).run(_model())


@pytest.mark.parametrize("config", [Config(min_cosine=0.99, min_params=SMALL),  # --lowrank auto
                                    Config(energy=0.9, refit="sequential", min_params=SMALL),
                                    Config(params=0.5, min_params=SMALL)])
def test_ids_past_the_table_are_a_data_error_not_a_rollback(config):
    with pytest.raises(DataError, match=r"rejected by the model: .*Gather.*idx=999999"):
        _run(config, [DataBatch(_ids()), DataBatch(_ids(bad=(8,)))])  # sample 18: fitted, not held out


def test_a_bad_sample_only_in_the_held_out_part_is_a_data_error():
    # holdout 0.2: every fifth sample (index 4, 9) is held out of the covariances; the probes run it
    with pytest.raises(DataError, match="idx=999999"):
        _run(Config(min_cosine=0.99, min_params=SMALL), [DataBatch(_ids(bad=(4,)))])


def test_the_same_pass_applies_on_good_data():
    _, pipeline = _run(Config(energy=0.5, refit="sequential", min_params=SMALL), [DataBatch(_ids(count=16))])
    assert pipeline.records[0].status == "applied", pipeline.records[0]


def test_nan_inputs_are_a_data_error():
    model = make_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 32] x) => (float[N, 32] y) {
            y = MatMul (x, w)
        }""", initializers={"w": rng(2).standard_normal((32, 32)).astype(np.float32)})
    x = rng(3).standard_normal((8, 32)).astype(np.float32)
    x[5, 2] = np.inf
    split = SplitLowRank(Config(energy=0.9, min_params=SMALL), context=PassContext(calibration=[DataBatch({"x": x})]))
    with pytest.raises(DataError, match="'x' contains NaN or infinite"):
        PassManager([split]).run(model)


def test_runs_with_replaced_weights_fail_as_the_pass_s_error():
    model = _model()
    groups, _ = find_groups(model.graph, ops=("MatMul",), opset=17, min_params=SMALL)
    bad, low = _ids(count=2, bad=(1,)), {"w1": np.zeros((32, 32), np.float32)}
    with pytest.raises(DataError, match="idx=999999"):  # the model as given: the data's fault
        Probe(model, groups, [bad])
    probe = Probe(model, groups, [_ids(count=2)])
    probe.batches = [bad]  # as if the model as given had run these
    with pytest.raises(RuntimeError, match="low-rank model fails on calibration data") as caught:
        probe.cosine(low)
    assert not isinstance(caught.value, DataError)
    activations = Activations(model, groups, None)
    keys = [next(iter(activations.uses))]
    with pytest.raises(DataError, match="idx=999999"):
        activations.rows(bad, {}, keys)
    with pytest.raises(RuntimeError, match="low-rank model fails") as caught:
        activations.rows(bad, low, keys)
    assert not isinstance(caught.value, DataError)


def test_the_activation_slope_subgraph_failing_is_the_pass_s_error():
    session = make_session(_model())  # stands in for the pass's elementwise subgraph; ids + 0.01 stay the ids
    with pytest.raises(RuntimeError, match="activation-slope model fails") as caught:
        _slope_gram(session, "ids", _ids(count=2, bad=(0,))["ids"], None)
    assert not isinstance(caught.value, DataError)


@pytest.mark.parametrize("flags", [["--lowrank", "auto"], ["--lowrank", "0.9", "--lowrank-refit", "sequential"]])
def test_the_cli_prints_one_line_exits_2_and_writes_nothing(tmp_path, capfd, flags):
    shapes = {"table": (ROWS, 64), "w1": (64, 64), "w2": (64, 64)}  # 64 x 64: the default min_params
    weights = {k: rng(i).standard_normal(s).astype(np.float32) for i, (k, s) in enumerate(shapes.items())}
    model = make_model(EMBEDDING.replace("32", "64"), initializers=weights)
    save(model, tmp_path / "model.onnx")
    np.savez(tmp_path / "bad.npz", **_ids(count=16, bad=(15,)))
    assert_cli_rejects_data(capfd, tmp_path / "model.onnx", tmp_path / "bad.npz", tmp_path / "out.onnx", *flags)
