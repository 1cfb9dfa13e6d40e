"""Low rank at its boundaries: rank grids and budgets, sites that are not split, the rank search,
data splitting and the cosine floor.

Pinned by a mutation audit: each test fails when the condition it names is dropped or loosened.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.passes.lowrank import plan as lowrank_plan
from onnxslim.passes.lowrank.allocate import Layer, max_rank, rank_grid
from onnxslim.passes.lowrank.data_split import _samples, mask_input
from onnxslim.passes.lowrank.factorize import Factorization
from onnxslim.passes.lowrank.search import _marginals
from onnxslim.passes.lowrank.sites import find_groups
from onnxslim.passes.lowrank.split_lowrank import Config as SplitConfig, SplitLowRank
from tests.helpers import make_model, rng


def _layer(k: int, n: int, decay: float, margin: float = 0.2) -> Layer:
    s = np.exp(-np.arange(min(k, n)) / decay)
    fact = Factorization(np.eye(k)[:, :len(s)], s, np.eye(len(s), n), float(np.sum(s**2)), whitened=False)
    return Layer(k, n, fact, max_rank(k, n, margin))


def test_rank_grid_reaches_max_rank_when_it_is_a_multiple():
    """32 x 32 at margin 0.5: max rank 8, a multiple of 4, is a candidate.
    (mutation: ``np.arange(multiple, top + 1, multiple)`` -> ``np.arange(multiple, top, multiple)``)"""
    layer = _layer(32, 32, 6.0, margin=0.5)
    assert layer.max_rank == 8
    assert rank_grid(layer, 4).tolist() == [4, 8]
    assert rank_grid(layer, 16).tolist() == list(range(1, 9))  # no multiple fits: every rank


def test_fill_takes_a_raise_that_uses_exactly_the_room_left():
    """A rank raise that costs exactly the budget left still fits.
    (mutation: ``0 < extra <= room`` -> ``0 < extra < room`` in _fill)"""
    from onnxslim.passes.lowrank.allocate import _fill

    options = [([None, 4, 8], np.array([1.0, 0.25, 0.5]), np.array([0.0, 2.0, 1.0]))]
    assert _fill(options, [1], budget=0.5) == [2]
    assert _fill(options, [1], budget=0.375) == [1]


def _groups(text, opset=17, ops=("MatMul", "Gemm", "Conv")):
    model = make_model(text, initializers={"w": rng(0).standard_normal((8, 8)).astype(np.float32)})
    return find_groups(model.graph, ops=ops, opset=opset, min_params=0)


def test_sites_weight_that_is_a_graph_output_is_not_split():
    """The weight is itself a model output: replacing it by factors would change that output.
    (mutation: ``if weight.is_graph_output():`` -> ``if False:``)"""
    groups, skipped = _groups("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 8] y, float[8, 8] w) { y = MatMul (x, w) }""")
    assert groups == [] and [r["reason"] for r in skipped] == ["weight is a graph output"]


def test_sites_weight_used_on_both_sides_is_not_split():
    """x @ W and W @ z read W in two layouts: one factorization cannot serve both.
    (mutation: ``len({use.layout for use in uses}) > 1`` -> ``False``)"""
    groups, skipped = _groups("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x, float[8, M] z) => (float[N, 8] y, float[8, M] v) {
            y = MatMul (x, w)
            v = MatMul (w, z)
        }""")
    assert groups == [] and [r["reason"] for r in skipped] == ["weight used in mixed layouts"]


@pytest.mark.parametrize("opset, split", [(10, False), (11, True)])
def test_sites_gemm_is_split_from_opset_11(opset, split):
    """The split Gemm has no C input, optional only from opset 11.
    (mutation: ``opset < 11`` -> ``opset < 7``)"""
    groups, skipped = _groups(f"""<ir_version: 6, opset_import: ["" : {opset}]>
        g (float[N, 8] x) => (float[N, 8] y) {{
            c = Constant <value = float[8] {{0, 0, 0, 0, 0, 0, 0, 0}}> ()
            y = Gemm (x, w, c)
        }}""", opset=opset)
    assert bool(groups) == split
    if not split:
        assert [r["reason"] for r in skipped] == ["Gemm without C needs opset 11"]


def test_sites_grouped_one_by_one_conv_is_not_split():
    """A grouped 1x1 Conv is block-diagonal, not one K x N matrix.
    (mutation: ``node.attributes.get_int("group", 1) != 1`` -> ``False``)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8, 4, 4] x) => (float[N, 8, 4, 4] y) { y = Conv <group = 2> (x, w) }""",
                       initializers={"w": rng(0).standard_normal((8, 4, 1, 1)).astype(np.float32)})
    groups, skipped = find_groups(model.graph, ops=("Conv",), opset=17, min_params=0)
    assert groups == [] and [r["reason"] for r in skipped] == ["grouped convolution"]


def test_sites_overridable_weight_is_not_split():
    """A weight that is also a graph input may be fed by the application: not a constant to factor.
    (mutation: dropping ``not value.is_graph_input() and`` in _const)"""
    groups, _ = _groups("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x, float[8, 8] w) => (float[N, 8] y) { y = MatMul (x, w) }""")
    assert groups == []


def _score(ranks, facts):
    return sum(r or 0 for r in ranks) / 100.0


def test_search_never_steps_a_rank_down_to_zero():
    """One step down from rank 4 with step 4 would be rank 0 (no factor at all): not a move.
    (mutation: ``rank - step >= step`` -> ``rank - step >= 0``)"""
    layer = _layer(32, 32, 6.0, margin=0.5)
    down, up = _marginals([layer], [4], [layer.factorization], 4, _score, _score([4], None))
    assert down == {} and list(up) == [0]


def test_search_never_raises_a_rank_past_the_margin():
    """Rank 8 is the largest that saves the margin (max_rank 8): no step up to 12.
    (mutation: ``rank + step <= min(layer.max_rank, computed_rank)`` -> ``<= computed_rank``)"""
    layer = _layer(32, 32, 6.0, margin=0.5)
    down, up = _marginals([layer], [8], [layer.factorization], 4, _score, _score([8], None))
    assert up == {} and list(down) == [0]


def test_search_keeps_the_ranks_when_a_move_scores_no_better():
    """A move the marginals favour but the score does not improve is not taken (no churn at equal score).
    (mutation: ``if value > best:`` -> ``>=`` in local_search)"""
    from onnxslim.passes.lowrank.search import local_search

    layers = [_layer(32, 32, 6.0), _layer(32, 32, 6.0)]
    facts = [layer.factorization for layer in layers]
    budget = sum(layer.split_params(8) for layer in layers)
    ranks, before, after = local_search(layers, [8, 8], facts, 4, budget, lambda r, f: 0.9, rounds=2,
                                        marginal=lambda r, f: 0.02 * r[0] + 0.001 * r[1])
    assert ranks == [8, 8] and before == after == 0.9


def test_split_margin_zero_is_allowed():
    """margin 0: split whenever the factors are no larger than the weight; only margin < 0 or >= 1 is refused.
    (mutation: ``not 0.0 <= self.margin < 1.0`` -> ``not 0.0 < self.margin < 1.0``)"""
    assert SplitConfig(margin=0.0).margin == 0.0
    with pytest.raises(ValueError, match="margin"):
        SplitConfig(margin=1.0)


def test_split_search_keeps_its_factors_when_the_refit_scores_worse():
    """After the rank search moves ranks, the refit factors are taken only if they score at least as
    well as the search's own. (mutation: ``facts if refit_score >= after else chosen.factorizations`` -> ``facts``)"""
    layers = [_layer(32, 32, 6.0), _layer(32, 32, 6.0)]
    own = [layer.factorization for layer in layers]
    refit = ["refit", "refit"]

    def score(ranks, facts):
        return 0.0 if facts is refit else 0.5 + 0.02 * ranks[0] + 0.001 * ranks[1]

    chosen = lowrank_plan.Plan([8, 8], ["", ""], factorizations=own)
    pass_ = SplitLowRank(SplitConfig(params=0.5, search=1, rank_multiple=4))
    result = pass_._search(chosen, layers, lambda ranks: refit, score, None)
    assert result.ranks != [8, 8] and result.factorizations is own
    assert result.stats["search_refit_gain"] < 0


def test_data_split_inputs_that_disagree_on_samples_are_not_split():
    """Two inputs with 3 and 4 rows: no sample count, so the batch is not cut.
    (mutation: ``sizes.pop() if len(sizes) == 1`` -> ``>= 1``)"""
    assert _samples({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}) is None
    assert _samples({"a": np.zeros((3, 2)), "b": np.zeros((3, 5)), "t": np.float32(1.0)}) == 3


def test_data_split_auto_mask_is_a_two_dimensional_input():
    """"auto" takes a [batch, seq] input named like a mask; a rank-3 "mask" is no token mask.
    (mutation: ``and len(shape) == 2`` -> ``and True``)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, S, 8] x, float[N, S, 1] attention_mask) => (float[N, S, 8] y) { y = Mul (x, attention_mask) }""")
    assert mask_input(model.graph, "auto") is None
    model2 = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, S, 8] x, int64[N, S] attention_mask) => (float[N, S, 8] y) { y = Identity (x) }""")
    assert mask_input(model2.graph, "auto") == "attention_mask"


def _short_layer(k, n, computed, margin=0.0):
    s = np.exp(-np.arange(computed) / 6.0)
    fact = Factorization(np.eye(k)[:, :computed], s, np.eye(computed, n), float(np.sum(s**2)), whitened=False)
    return Layer(k, n, fact, max_rank(k, n, margin))


def test_plan_energy_rank_equal_to_max_rank_splits():
    """by_energy: a rank equal to max_rank still saves the margin.
    (mutation: ``fits = rank <= layer.max_rank`` -> ``<``)"""
    layer = _layer(32, 32, 6.0, margin=0.5)  # max rank 8
    energy = float(np.sum(layer.factorization.s[:8] ** 2) / layer.factorization.total_energy) - 1e-9
    assert layer.factorization.rank_for_energy(energy) == 8
    assert lowrank_plan.by_energy([layer], energy, 1).ranks == [8]


def test_plan_fixed_rank_above_the_computed_rank_is_capped():
    """--lowrank-rank 1000 on a layer with 4 computed singular values: rank 4, not "left whole".
    (mutation: ``min(rank, layer.factorization.computed_rank)`` -> ``rank``)"""
    layer = _short_layer(32, 32, computed=4)
    assert lowrank_plan.by_rank([layer], 1000).ranks == [4]


class _ConstantProbe:
    def __init__(self, value):
        self.value = value

    def cosine(self, replaced):
        return self.value(replaced) if callable(self.value) else self.value

    floor_score = cosine


def _groups_and_layers():
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 32] x) => (float[N, 32] y) { y = MatMul (x, w) }""",
                       initializers={"w": np.eye(32, dtype=np.float32)})
    groups, _ = find_groups(model.graph, ops=("MatMul",), opset=17, min_params=0)
    return groups, [_layer(32, 32, 6.0)]


def test_plan_cosine_floor_is_inclusive():
    """A cosine exactly at --lowrank-min-cosine meets the floor: the layer is split.
    (mutation: ``if cosine >= floor`` -> ``>`` in by_cosine's bisection)"""
    groups, layers = _groups_and_layers()
    chosen = lowrank_plan.by_cosine(groups, layers, [_ConstantProbe(0.99)], 0.99, 4)
    assert chosen.ranks[0] is not None


def test_plan_refit_below_the_floor_is_not_taken():
    """With a refit, a refit allocation whose cosine falls below the floor is discarded.
    (mutation: ``best = (ranks, facts) if cosine >= floor else best`` -> always the refit's)"""
    groups, layers = _groups_and_layers()
    zero = [Factorization(np.zeros((32, 32)), np.ones(32), np.zeros((32, 32)), 32.0, whitened=False)]
    probe = _ConstantProbe(lambda replaced: 0.0 if not any(np.any(a) for a in replaced.values()) else 1.0)
    chosen = lowrank_plan.by_cosine(groups, layers, [probe], 0.99, 4, refine=lambda ranks: zero)
    assert chosen.factorizations[0] is layers[0].factorization


def test_plan_sensitivity_is_the_drop_at_the_middle_probe():
    """measure_sensitivity returns each layer's cosine drop at its middle probe rank.
    (mutation: ``drops[len(drops) // 2]`` -> ``drops[0]``)"""
    from onnxslim.passes.lowrank.allocate import probe_ranks

    groups, layers = _groups_and_layers()
    probe = _ConstantProbe(lambda replaced: 1.0 - 0.001 * (32 - int(np.count_nonzero(next(iter(replaced.values()))))))
    ranks = probe_ranks(layers[0], 4)[::-1]
    assert len(ranks) >= 2
    (middle,) = lowrank_plan.measure_sensitivity(groups, layers, probe, 4)
    assert middle == pytest.approx(0.001 * (32 - ranks[len(ranks) // 2]))
