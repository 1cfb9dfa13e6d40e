"""N:M pruning and per-layer overrides: ``NAME=0`` leaves a layer dense, another amount prunes it
(first/last layers included); each layer's reported target is the pattern's sparsity, 1 - n/m."""

from onnxslim.passes.pruning.prune_nm import PruneNM, PruneNMConfig
from tests.helpers import check_full, make_model
from tests.passes.pruning.test_prune_magnitude_nm import MODEL, sparsity, weights

LAYERS = {"c": "w1", "d": "w2", "h": "w3", "y": "w4"}


def run(**settings):
    model = make_model(MODEL, initializers=weights())
    result = PruneNM(PruneNMConfig(**settings))(model)
    check_full(model)
    return model, result, {row["layer"]: row for row in result.details if "layer" in row}


def test_override_zero_leaves_the_layer_dense():
    model, result, rows = run(amount=0.5, overrides=("d=0",))
    assert sparsity(model, "w2") == 0 and sparsity(model, "w3") == 0.5
    assert rows["d"]["skipped"] == "override d=0: left dense"
    assert sparsity(model, "w1") == 0 and sparsity(model, "w4") == 0  # first/last still protected
    assert result.stats["layers_pruned"] == 1


def test_override_zero_keeps_a_first_layer_dense_and_another_amount_prunes_it():
    model, _, rows = run(overrides=("c=0",))
    assert sparsity(model, "w1") == 0 and "left dense" in rows["c"]["skipped"]
    model, _, rows = run(overrides=("c=0.3",))  # any amount but 0 means "prune this layer N:M"
    assert sparsity(model, "w1") == 0.5 and rows["c"]["target"] == 0.5
    assert sparsity(model, "w4") == 0 and rows["y"]["skipped"] == "first or last layer"


def test_target_is_the_pattern_sparsity_not_the_amount():
    model, _, rows = run(amount=0.5, n=1, m=4, skip_first_last=False)
    for layer, weight in LAYERS.items():
        assert rows[layer]["target"] == 0.75 and rows[layer]["sparsity"] == 0.75 == sparsity(model, weight)
