"""Refit-aware local search over the ranks at a fixed parameter budget.

The budget allocation prices each layer's cut by its sensitivity measured alone, before the refit;
the refit then changes what each cut costs. Starting from the allocated ranks and their refit
factors, one round measures, on the calibration probes, what taking one rank step from each split
layer costs and what giving it one step gains (per parameter); steps then move from the cheapest
donors to the receivers that gain most, as long as the gain per parameter exceeds the cost, within
the budget. The combined move is kept only where the measured score rises (else the single best
move is tried); the search stops at the first round that gains nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from onnxslim.passes.lowrank.allocate import Layer

logger = logging.getLogger(__name__)

Score = Callable[[list, list], float]
"""(ranks, factorizations) -> calibration cosine of the model split with them."""


def local_search(layers: list[Layer], ranks: list[int | None], facts: list, step: int, budget: int,
                 score: Score, rounds: int, marginal: Score | None = None) -> tuple[list[int | None], float, float]:
    """(ranks after the search, score before, score after); total parameters stay <= ``budget``.
    ``marginal`` (default: ``score``) measures the single steps; ``score`` judges the moves."""
    ranks, first = list(ranks), score(ranks, facts)
    best, marginal = first, marginal or score
    for _ in range(rounds):
        down, up = _marginals(layers, ranks, facts, step, marginal, marginal(ranks, facts))
        slack = budget - _params(layers, ranks)
        for move in (_combined(down, up, slack), _combined(down, up, slack, single=True)):
            trial = [move.get(i, r) for i, r in enumerate(ranks)]
            if not move or _params(layers, trial) > budget:
                continue
            value = score(trial, facts)
            logger.debug("rank search: move %s scores %.5f (from %.5f)", move, value, best)
            if value > best:
                ranks, best = trial, value
                break
        else:
            break
    return ranks, first, best


Step = tuple[float, int, int]
"""(score change per parameter, new rank, parameters freed or needed)."""


def _marginals(layers, ranks, facts, step, score, base) -> tuple[dict[int, Step], dict[int, Step]]:
    """Per split layer: score lost per parameter freed by one step down / gained per parameter by one
    step up (layers left whole stay whole: measured on MiniLM, letting them pay by being split at
    their largest rank added 30% to the search's time and never paid)."""
    down, up = {}, {}
    for i, (layer, rank) in enumerate(zip(layers, ranks)):
        if rank is None:
            continue
        if rank - step >= step:
            freed = layer.split_params(step)
            down[i] = ((base - score(_with(ranks, i, rank - step), facts)) / freed, rank - step, freed)
        if rank + step <= min(layer.max_rank, facts[i].computed_rank):
            needed = layer.split_params(step)
            up[i] = ((score(_with(ranks, i, rank + step), facts) - base) / needed, rank + step, needed)
    return down, up


def _combined(down: dict[int, Step], up: dict[int, Step], slack: int, single: bool = False) -> dict[int, int]:
    """New ranks: receivers (best gain per parameter first) each paid for by the budget's ``slack``
    and the cheapest donors, while the gain exceeds the donors' cost; ``single``: the best receiver only."""
    donors = sorted(down, key=lambda i: down[i][0])
    move: dict[int, int] = {}
    for j in sorted(up, key=lambda i: up[i][0], reverse=True):
        if j in move:
            continue
        needed, taken = up[j][2] - slack, []
        for i in donors:
            if needed <= 0:
                break
            if i != j and i not in move:
                taken.append(i)
                needed -= down[i][2]
        lost = sum(down[i][0] * down[i][2] for i in taken)
        if needed > 0 or up[j][0] * up[j][2] <= lost:
            break
        slack = -needed
        move[j] = up[j][1]
        move.update({i: down[i][1] for i in taken})
        if single:
            break
    return move


def _with(ranks: list, index: int, rank: int) -> list:
    return [rank if i == index else r for i, r in enumerate(ranks)]


def _size(layer: Layer, rank: int | None) -> int:
    return layer.params if rank is None else layer.split_params(rank)


def _params(layers: list[Layer], ranks: list) -> int:
    return sum(_size(layer, r) for layer, r in zip(layers, ranks))
