"""Refit-aware local rank search (``search``): from the budget allocation and its refit, rank steps
move between split layers by their measured cost / gain, within the budget, kept only where the
score rises."""

import numpy as np
import pytest
from onnxslim.passes.lowrank import search
from onnxslim.passes.lowrank.allocate import Layer, max_rank
from onnxslim.passes.lowrank.factorize import Factorization
from onnxslim.passes.lowrank.split_lowrank import Config

from tests.helpers import check_full, rng
from tests.passes.lowrank.test_activation_aware import activations, calibration
from tests.passes.lowrank.test_refit import chain, run
from tests.passes.lowrank.test_split_structure import low_rank


def layer(k: int, n: int) -> Layer:
    fact = Factorization(np.eye(k), np.ones(min(k, n)), np.eye(min(k, n), n), float(min(k, n)), whitened=True)
    return Layer(k, n, fact, max_rank(k, n, 0.2))


def params(layers, ranks):
    return sum(l.params if r is None else l.split_params(r) for l, r in zip(layers, ranks))


def test_steps_move_from_the_cheap_layer_to_the_one_that_gains_within_the_budget():
    layers = [layer(32, 32), layer(32, 32), layer(32, 32)]
    worth = np.array([3.0, 1.0, 0.2])  # what a rank step is worth in each layer: 0 gains most, 2 costs least
    score = lambda ranks, facts: -float(np.sum(worth * np.exp(-np.array(ranks) / 8.0)))
    start = [8, 8, 16]
    budget = params(layers, start)
    ranks, before, after = search.local_search(layers, start, [l.factorization for l in layers], 4, budget, score, 1)
    assert ranks == [12, 8, 12] and after > before == score(start, None)
    assert params(layers, ranks) <= budget
    ranks, _, after = search.local_search(layers, start, [l.factorization for l in layers], 4, budget - 1, score, 1)
    assert params(layers, ranks) <= budget - 1  # no slack: each receiver step is paid by a donor step


def test_layers_left_whole_stay_whole():
    layers = [layer(32, 32), layer(32, 32)]
    score = lambda ranks, facts: (ranks[0] or 0) - (0.1 if ranks[1] is not None else 0.0)
    ranks, before, after = search.local_search(layers, [4, None], [l.factorization for l in layers], 4,
                                               params(layers, [4, None]), score, 2)
    assert ranks == [4, None] and after == before  # splitting layer 1 would pay, but is not a move


def test_no_move_when_nothing_gains_and_the_ranks_are_kept():
    layers = [layer(32, 32), layer(32, 32)]
    calls = []

    def flat(ranks, facts):
        calls.append(ranks)
        return 0.5
    ranks, before, after = search.local_search(layers, [8, 8], [l.factorization for l in layers], 4, 10**6, flat, 3)
    assert ranks == [8, 8] and before == after == 0.5
    assert len(calls) < 2 + 4 + 2  # one round of marginals, no trial, then stop


def test_a_move_that_scores_worse_is_not_kept():
    layers = [layer(32, 32), layer(32, 32)]
    marginal = lambda ranks, facts: ranks[0] - 0.5 * ranks[1]  # predicts that 1 -> 0 pays ...
    score = lambda ranks, facts: -abs(ranks[0] - 8)  # ... but the judge disagrees
    ranks, before, after = search.local_search(layers, [8, 8], [l.factorization for l in layers], 4, 10**6,
                                               score, 2, marginal)
    assert ranks == [8, 8] and after == before


def test_pass_with_search_keeps_the_budget_and_does_not_lower_its_score():
    w1, w2 = rng(4).standard_normal((48, 48)).astype(np.float32) / 5, low_rank((48, 48), 4, seed=3)
    data = calibration(activations(rows=1024, seed=0))
    results = {}
    for rounds in (0, 2):
        model = chain(w1, w2)
        results[rounds] = run(model, data, params=0.5, search=rounds)
        check_full(model)
        assert results[rounds].stats["params_after"] <= 0.5 * 2 * 48 * 48
    base, searched = results[0].stats, results[2].stats
    assert "search_gain" in searched and "search_gain" not in base and searched["search_gain"] >= 0
    assert searched["check_cosine"] + searched["fit_cosine"] >= base["check_cosine"] + base["fit_cosine"] - 1e-9
    with pytest.raises(ValueError, match="search"):
        Config(search=-1)
