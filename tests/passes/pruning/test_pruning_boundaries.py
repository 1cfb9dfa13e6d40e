"""Pruning at its boundaries: settings refused, layers that are not prunable, protections, the
global amount, the sensitivity scan's proposals.

Pinned by a mutation audit: each test fails when the condition it names is dropped or loosened.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.data import DataBatch
from onnxslim.passes.pruning._common import PruneConfig, sparsity_stats
from onnxslim.passes.pruning._layers import find_layers
from onnxslim.passes.pruning.prune_channels import PruneChannelsConfig, edge_layers
from onnxslim.passes.pruning.prune_magnitude import PruneMagnitude, PruneMagnitudeConfig
from onnxslim.passes.pruning.scan import ScanPoint, ScanResult, Scorer, UnitScan, propose_amounts, scan_sensitivity
from tests.helpers import make_model, rng


def test_pr_negative_damping_is_refused():
    """A negative ridge term would make the refit's normal equations indefinite: refused up front.
    (mutation: dropping ``self.damping < 0 or`` in PruneConfig.__post_init__)"""
    with pytest.raises(ValueError, match="damping"):
        PruneConfig(damping=-0.01)
    with pytest.raises(ValueError, match="max_rows"):
        PruneConfig(max_rows=0)


def test_pr_sparsity_stats_of_nothing_pruned():
    """No layer pruned: ratio 1.0 (nothing shrank), not 0.0 (which reads as "compressed to nothing").
    (mutation: ``... if before else 1.0`` -> ``else 0.0``)"""
    stats = sparsity_stats([{"layer": "a", "op": "Conv", "skipped": "first or last layer"}])
    assert stats == {"layers_pruned": 0, "layers_skipped": 1, "params_pruned": 0, "sparsity": 0.0,
                     "deflate_bytes_before": 0, "deflate_bytes_after": 0, "deflate_ratio": 1.0}


def test_pr_weight_from_a_constant_node_is_skipped_with_the_fix():
    """A weight made by a Constant node is not pruned, and the row says to run fold-constants first.
    (mutation: the Constant-node check in weight_skip_reason removed: a vaguer reason)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 4] y) {
            w = Constant <value = float[8, 4] {""" + ", ".join(["0.5"] * 32) + """}> ()
            y = MatMul (x, w)
        }""")
    layers, skipped = find_layers(model)
    assert layers == [] and skipped[0]["skipped"] == "weight comes from a Constant node (run fold-constants first)"


def _two_matmuls(shared_input=False):
    inputs = "float[N, 8] x, float[8, 4] w" if shared_input else "float[N, 8] x"
    return make_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g ({inputs}) => (float[N, 4] y, float[N, 4] z) {{
            y = MatMul (x, w)
            z = MatMul (x, {"w" if not shared_input else "v"})
        }}""", initializers={"w": rng(0).standard_normal((8, 4)).astype(np.float32),
                             **({"v": rng(1).standard_normal((8, 4)).astype(np.float32)} if shared_input else {})})


def test_pr_weight_that_is_a_graph_input_is_not_pruned():
    """An initializer that is also a graph input is an overridable default: the application may feed another.
    (mutation: ``if value.is_graph_input():`` -> ``if False:`` in weight_skip_reason)"""
    layers, skipped = find_layers(_two_matmuls(shared_input=True))
    assert [layer.weight.name for layer in layers] == ["v"]
    assert skipped[0]["skipped"] == "weight is also a graph input (overridable)"


def test_pr_weight_read_by_two_layers_is_not_pruned():
    """A weight two MatMuls read cannot be pruned (or refit) for one of them.
    (mutation: ``len(value.uses()) != 1`` -> ``> 2``)"""
    layers, skipped = find_layers(_two_matmuls())
    assert layers == [] and {row["skipped"] for row in skipped} == {"weight is shared by several nodes"}


def test_pr_gemm_with_trans_a_is_not_a_layer():
    """Gemm(transA=1): its rows are not output channels as the pruning methods read them: skipped.
    (mutation: ``and _attr_int(node, "transA", 0)`` -> ``and False`` in as_layer)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[8, N] x) => (float[N, 4] y) {
            y = Gemm <transA = 1> (x, w)
        }""", initializers={"w": rng(0).standard_normal((8, 4)).astype(np.float32)})
    layers, skipped = find_layers(model)
    assert layers == [] and skipped[0]["skipped"] == "Gemm with transA"


@pytest.mark.parametrize("entry", ["conv1=1.0", "=0.5", "conv1", "conv1=x", "conv1=-0.1"])
def test_pr_bad_override_entries_are_refused(entry):
    """NAME=AMOUNT with a name and 0 <= AMOUNT < 1 (1.0 would remove every weight of the layer).
    (mutations: ``not 0.0 <= value < 1.0`` -> ``<= 1.0``; dropping ``not name or``)"""
    from onnxslim.passes.pruning._layers import parse_overrides

    with pytest.raises(ValueError, match="NAME=AMOUNT"):
        parse_overrides([entry])


def test_pc_round_to_zero_is_refused():
    """round_to=0 (keep a multiple of 0 channels) is refused; 1 disables the rounding.
    (mutation: ``self.round_to < 1`` -> ``< 0``)"""
    with pytest.raises(ValueError, match="round_to"):
        PruneChannelsConfig(round_to=0)
    assert PruneChannelsConfig(round_to=1).round_to == 1


def test_pc_override_on_the_last_layer_lifts_its_protection():
    """skip_first_last protects the last layer unless an override (or skip) names it.
    (mutation: dropping ``matches(layer.name, config.amounts) or`` in edge_layers)"""
    layers, _ = find_layers(make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 4] y) {
            h = MatMul (x, w1)
            y = MatMul (h, w2)
        }""", initializers={"w1": rng(0).standard_normal((8, 8)).astype(np.float32),
                            "w2": rng(1).standard_normal((8, 4)).astype(np.float32)}))
    assert edge_layers(layers, PruneChannelsConfig()) == ("h", "y")
    assert edge_layers(layers, PruneChannelsConfig(overrides=("y=0.25",))) == ("h", None)
    assert edge_layers(layers, PruneChannelsConfig(overrides=("h=0.25",))) == (None, "y")


def test_pc_a_single_layer_is_first_but_not_also_last():
    """One prunable layer: it is the first layer (spared when uncoupled), not also removed as the last.
    (mutation: ``if len(layers) > 1 else None`` -> ``> 0``)"""
    layers, _ = find_layers(make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 4] y) {
            y = MatMul (x, w1)
        }""", initializers={"w1": rng(0).standard_normal((8, 4)).astype(np.float32)}))
    assert edge_layers(layers, PruneChannelsConfig()) == ("y", None)


def test_pm_global_scope_never_removes_more_than_the_amount():
    """Global scope: 0.5 of 7 weights is 3 removed (rounded down, as per layer), never 4.
    (mutation: ``int(self.config.amount * flat.size)`` -> ``round(...)``)"""
    pruner = PruneMagnitude(PruneMagnitudeConfig(scope="global", amount=0.5))
    scores = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([[4.0, 5.0], [6.0, 7.0]])}
    masks, _ = pruner._masks(scores, {"a": 0.5, "b": 0.5})
    assert sum(int((~m).sum()) for m in masks.values()) == 3
    assert masks["a"].tolist() == [False, False, False] and masks["b"].all()


def test_scan_amount_zero_is_refused():
    """A scan amount of 0 prunes nothing (a wasted run per unit): amounts must be in (0, 1).
    (mutation: ``not 0 < a < 1`` -> ``not 0 <= a < 1``)"""
    with pytest.raises(ValueError, match=r"amounts must be in \(0, 1\)"):
        scan_sensitivity(None, [], amounts=(0.0, 0.5))


def test_scan_accuracy_needs_two_dimensional_scores():
    """Labels with a 1-D first output (not class scores): no accuracy, rather than an argmax over axis 1.
    (mutation: dropping ``or first.ndim != 2`` in Scorer._accuracy)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N] y) {
            axes = Constant <value = int64[1] {1}> ()
            y = ReduceSum <keepdims = 0> (x, axes)
        }""")
    batch = DataBatch({"x": rng(0).standard_normal((4, 8)).astype(np.float32)}, np.array([0, 1, 0, 1]))
    assert Scorer(model, [batch]).baseline_accuracy is None


def test_scan_proposal_may_use_the_whole_cosine_budget():
    """A step whose loss equals what is left of max_cosine_loss is taken (the budget is inclusive).
    (mutation: ``loss + d_loss <= max_cosine_loss`` -> ``<``)"""
    scan = ScanResult("channel", [0.5], 1000, None, [UnitScan("a", ["a"], 100, [ScanPoint(0.5, 0.75, None, 50)])])
    proposal = propose_amounts(scan, max_cosine_loss=0.25)
    assert proposal.amounts == {"a": 0.5} and proposal.params_removed == 50


def _unit(*points):
    return UnitScan("a", ["a"], 100, [ScanPoint(amount, cosine, None, removed) for amount, cosine, removed in points])


def test_scan_proposal_prefers_the_larger_step_at_equal_cost():
    """Two steps with the same loss per parameter: the larger one is taken first.
    (mutation: tie-break ``-d_params`` -> ``d_params``)"""
    scan = ScanResult("channel", [0.3, 0.5], 1000, None, [_unit((0.3, 1.0, 30), (0.5, 1.0, 50))])
    assert propose_amounts(scan, target_reduction=0.02).amounts == {"a": 0.5}


def test_scan_proposal_stops_once_the_target_is_reached():
    """Exactly the target removed: no further (lossier) step.
    (mutation: ``removed < target_reduction * scan.params`` -> ``<=``)"""
    scan = ScanResult("channel", [0.3, 0.5], 1000, None, [_unit((0.3, 1.0, 30), (0.5, 0.999, 50))])
    proposal = propose_amounts(scan, target_reduction=0.03)
    assert proposal.amounts == {"a": 0.3} and proposal.params_removed == 30


def test_scan_target_reduction_of_one_is_refused():
    """target_reduction must be in (0, 1): removing every parameter is no target.
    (mutation: ``not 0 < target_reduction < 1`` -> ``<= 1``)"""
    scan = ScanResult("channel", [0.5], 1000, None, [_unit((0.5, 0.9, 50))])
    with pytest.raises(ValueError, match="target_reduction"):
        propose_amounts(scan, target_reduction=1.0)


def test_scan_cosine_of_all_zero_outputs_is_one():
    """Outputs that are zero in both models agree: cosine 1, not 0 (0/0).
    (mutation: ``out=np.ones(len(rows))`` -> ``np.zeros`` in Scorer.score)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 8] y) {
            zero = Constant <value = float {0.0}> ()
            y = Mul (x, zero)
        }""")
    batch = DataBatch({"x": rng(0).standard_normal((4, 8)).astype(np.float32)})
    assert Scorer(model, [batch]).score(model) == (1.0, None)
