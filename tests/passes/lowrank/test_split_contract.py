"""split-lowrank: what it leaves alone, rank choice, idempotence, settings."""

import numpy as np
import pytest

from onnxslim.core.pass_base import PassContext
from onnxslim.errors import ConfigError
from onnxslim.passes.lowrank.split_lowrank import Config, SplitLowRank
from tests.helpers import make_model, op_types, rng
from tests.passes.lowrank.test_split_structure import MATMUL_RIGHT, low_rank, split

UNSPLITTABLE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[B, 48, 6, 6] x, float[N, 48] z) => (float[B, 40, 4, 4] y, float[N, 40] y2, float[48, 40] y3) {
    y = Conv <kernel_shape = [3, 3]> (x, k)
    y2 = MatMul (z, w)
    y3 = Add (w, w)
}
"""


def test_non_matching_graph_is_left_unchanged():
    weights = {"k": rng(0).standard_normal((40, 48, 3, 3)).astype(np.float32), "w": low_rank((48, 40), 4)}
    model = make_model(UNSPLITTABLE, initializers=weights)
    result = split(model, rank=4)
    assert not result.modified and op_types(model) == ["Conv", "MatMul", "Add"]
    reasons = {row["weight"]: row["reason"] for row in result.details if "warning" not in row}
    assert reasons == {"k": "not a 1x1 convolution", "w": "weight also read by nodes that are not split"}
    # nothing split: a details warning the CLI prints (it said so only in the JSON details)
    assert [row["warning"] for row in result.details if "warning" in row] == [
        "no weight split (0 candidates): 1 x not a 1x1 convolution; 1 x weight also read by nodes that are not split"]


def test_split_only_where_it_saves_the_margin():
    # A full-rank random weight needs nearly all its rank for 95% energy: no split.
    model = make_model(MATMUL_RIGHT, initializers={"w": rng(0).standard_normal((48, 40)).astype(np.float32)})
    result = split(model, energy=0.95)
    assert not result.modified and "would not save the margin" in result.details[0]["reason"]
    # rank 17 saves 1 - 17*88/1920 = 22% >= 20%; rank 18 saves 17.5% < the 20% margin.
    assert split(make_model(MATMUL_RIGHT, initializers={"w": low_rank((48, 40), 30)}), rank=17).modified
    assert not split(make_model(MATMUL_RIGHT, initializers={"w": low_rank((48, 40), 30)}), rank=18).modified


def test_energy_picks_the_numerical_rank_and_rounds_to_the_multiple():
    w = low_rank((48, 40), 5) + 1e-4 * rng(5).standard_normal((48, 40)).astype(np.float32)
    assert split(make_model(MATMUL_RIGHT, initializers={"w": w}), energy=0.999).details[0]["rank"] == 5
    assert split(make_model(MATMUL_RIGHT, initializers={"w": w}), energy=0.999, rank_multiple=4).details[0]["rank"] == 8


def test_min_params_skips_small_weights():
    result = split(make_model(MATMUL_RIGHT, initializers={"w": low_rank((48, 40), 5)}), rank=5, min_params=4096)
    assert not result.modified and "min_params" in result.details[0]["reason"]


@pytest.mark.parametrize("settings", [{"rank": 5}, {"energy": 0.5}])
def test_second_run_changes_nothing(settings):
    model = make_model(MATMUL_RIGHT, initializers={"w": low_rank((48, 40), 5)})
    assert split(model, **settings).modified
    again = split(model, **settings)
    assert not again.modified and {row["reason"] for row in again.details if "warning" not in row} == {"already a low-rank factor"}


@pytest.mark.parametrize("settings", [{"rank": 4, "energy": 0.9}, {"energy": 1.5}, {"rank": 0}, {"margin": 1.0},
                                      {"ops": ("Add",)}, {"holdout": 1.0}, {"holdout": -0.1}, {"check_samples": 0}])
def test_bad_settings_are_rejected(settings):
    with pytest.raises(ValueError):
        Config(**settings)


@pytest.mark.parametrize("settings", [{"min_cosine": 0.99}, {"method": "whitened"}, {"params": 0.5, "allocation": "sensitivity"}])
def test_data_aware_settings_need_calibration(settings):
    with pytest.raises(ConfigError, match="calibration"):
        SplitLowRank(Config(**settings))
    SplitLowRank(Config(**settings), context=PassContext(calibration=[]))  # fine with data
