"""Output-aware refit of the factors: each split layer fitted to the original layer output given
the split model's own inputs (sequential stages or one shot), with data."""

import numpy as np
import pytest
from onnxslim.passes.lowrank import factorize, refit
from onnxslim.passes.lowrank.sites import find_groups
from onnxslim.passes.lowrank.split_lowrank import Config, SplitLowRank

from onnxslim.core.pass_base import PassContext
from tests.helpers import check_full, make_model, rng, run_ort
from tests.passes.lowrank.test_activation_aware import activations, calibration
from tests.passes.lowrank.test_split_structure import low_rank

# Two layers; the second reads the first's (perturbed) output and adds it back (a residual).
CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 48] x) => (float[N, 48] y) {
    h = MatMul (x, w1)
    a = Tanh (h)
    o = MatMul (a, w2)
    ob = Add (o, b2)
    y = Add (ob, h)
}
"""


def chain(w1, w2):
    return make_model(CHAIN, initializers={"w1": w1, "w2": w2, "b2": np.full(48, 0.1, np.float32)})


def run(model, data, **settings):
    settings = {"min_params": 0, "rank_multiple": 1, **settings}
    return SplitLowRank(Config(**settings), context=PassContext(calibration=data))(model)


def output_error(original, model, x):
    y0, y1 = run_ort(original, {"x": x})[0], run_ort(model, {"x": x})[0]
    return float(np.linalg.norm(y1 - y0) / np.linalg.norm(y0))


@pytest.mark.parametrize("mode", ["sequential", "oneshot"])
def test_refit_lowers_the_final_output_error_on_unseen_inputs(mode):
    # w2 has exact rank 4: split at 16 it keeps spare rank with which the refit cancels part of
    # w1's error, carried to the output through w2's input and the residual.
    w1, w2 = rng(4).standard_normal((48, 48)).astype(np.float32) / 5, low_rank((48, 48), 4, seed=3)
    data, unseen = calibration(activations(rows=1024, seed=0)), activations(rows=512, seed=9)
    errors = {}
    for setting in ("none", mode):
        model = chain(w1, w2)
        original = model.clone()
        result = run(model, data, rank=16, refit=setting)
        check_full(model)
        errors[setting] = output_error(original, model, unseen)
        assert result.stats["refit"] == setting and result.stats["layers_refit"] == (0 if setting == "none" else 1)
        rows = {row["weight"]: row for row in result.details}
        assert rows["w2"].get("refit", False) == (setting != "none") and not rows["w1"].get("refit", False)
    assert errors[mode] < 0.93 * errors["none"], errors  # measured 0.068 -> 0.059 (both modes)


def test_exact_ranks_stay_exact_after_refit():
    model = chain(low_rank((48, 48), 6, seed=1), low_rank((48, 48), 6, seed=2))
    original, x = model.clone(), activations(rows=256, seed=3)
    result = run(model, calibration(activations(rows=512)), rank=6, refit="sequential")
    assert result.stats["layers_refit"] == 1
    np.testing.assert_allclose(run_ort(model, {"x": x})[0], run_ort(original, {"x": x})[0], atol=1e-4, rtol=1e-4)


def test_refit_equals_whitening_when_the_inputs_are_unperturbed():
    w, x = rng(5).standard_normal((48, 40)), activations(rows=512).astype(np.float64)
    c = x.T @ x
    a, b = factorize.whitened(w, c, damping=0.1), factorize.refit(w, c, c, damping=0.1)
    np.testing.assert_allclose(np.matmul(*b.factors(8, np.float64)), np.matmul(*a.factors(8, np.float64)), atol=1e-8)
    np.testing.assert_allclose(np.matmul(*b.factors(48, np.float64)), w, atol=1e-8)  # full rank: W itself


def test_stages_follow_the_graph_and_the_residual_is_found():
    model = chain(*(rng(6).standard_normal((2, 48, 48)).astype(np.float32)))
    groups, _ = find_groups(model.graph, ops=("MatMul",), opset=17, min_params=0)
    names = [g.name for g in groups]
    assert [[names[i] for i in stage] for stage in refit.stages(model.graph, groups, [1, 0])] == [["w1"], ["w2"]]
    assert refit.residual_of(groups[names.index("w2")].uses[0]).name == "h"
    assert refit.residual_of(groups[names.index("w1")].uses[0]) is None


def test_refit_settings_are_validated():
    with pytest.raises(ValueError, match="refit"):
        Config(refit="twice")
    with pytest.raises(ValueError, match="refit_samples"):
        Config(refit_samples=0)
    model = chain(*(rng(7).standard_normal((2, 48, 48)).astype(np.float32)))
    result = SplitLowRank(Config(rank=8, min_params=0, refit="sequential"))(model)  # no data: plain, no refit
    assert result.modified and result.stats.get("refit", "none") == "none"


def test_cosine_floor_searches_below_its_budget_with_the_refit():
    w1, w2 = rng(4).standard_normal((48, 48)).astype(np.float32) / 5, low_rank((48, 48), 4, seed=3)
    data = calibration(activations(rows=1024, seed=0))
    results = {}
    for setting in ("none", "sequential"):
        model = chain(w1, w2)
        results[setting] = run(model, data, min_cosine=0.995, refit=setting)
        assert results[setting].stats["check_cosine"] >= 0.995 and results[setting].stats["fit_cosine"] >= 0.995
    refit_stats, plain_stats = results["sequential"].stats, results["none"].stats
    assert refit_stats["refit"] == "sequential" and plain_stats["refit"] == "none"
    # measured: 1,920 -> 1,824 parameters kept (budget 0.417 -> 0.397), both above the floor
    assert refit_stats["budget_kept"] < plain_stats["budget_kept"]
    assert refit_stats["params_after"] < plain_stats["params_after"] and refit_stats["layers_refit"] == 1
