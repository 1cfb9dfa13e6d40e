"""Rank choice per layer: by energy, a fixed rank, or a parameter budget spread over the layers.

The budget allocation solves a multiple-choice knapsack by Lagrangian relaxation: for a price
``lam`` per parameter, each layer picks the option (unsplit, or a rank on its grid) that
minimizes ``cost(rank) + lam * params(rank)``; ``lam`` is bisected until the total fits; what the
relaxation leaves of the budget is then spent greedily on rank raises of the split layers.
``cost`` is the layer's predicted loss: its output cosine drop measured on calibration data at a
few ranks and interpolated (or the squared relative error without data).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from onnxslim.passes.lowrank.factorize import Factorization

_BISECTION_STEPS = 80


@dataclasses.dataclass
class Layer:
    k: int
    n: int
    factorization: Factorization
    max_rank: int
    """Largest rank that still saves the configured margin of parameters (0: never worth splitting)."""
    measured: tuple[np.ndarray, np.ndarray] | None = None
    """(squared relative errors, cosine drops) measured on calibration data at a few probe ranks."""

    @property
    def params(self) -> int:
        return self.k * self.n

    def split_params(self, rank: int) -> int:
        return rank * (self.k + self.n)

    def costs(self, ranks: np.ndarray) -> np.ndarray:
        """Predicted loss at each rank: the measured cosine drop interpolated over the squared error
        (extrapolated along the last measured slope), or the squared relative error without measurements."""
        squared = self.factorization.errors()[ranks] ** 2
        if self.measured is None:
            return squared
        points, drops = self.measured
        slope = (drops[-1] - drops[-2]) / max(points[-1] - points[-2], 1e-12) if len(points) > 1 else 0.0
        beyond = drops[-1] + max(slope, drops[-1] / max(points[-1], 1e-12)) * (squared - points[-1])
        return np.where(squared <= points[-1], np.interp(squared, points, drops), beyond)


def max_rank(k: int, n: int, margin: float) -> int:
    """Largest r with r * (K + N) <= (1 - margin) * K * N."""
    return int(math.floor((1.0 - margin) * k * n / (k + n)))


def rank_grid(layer: Layer, multiple: int) -> np.ndarray:
    """Candidate ranks: multiples of ``multiple`` up to ``max_rank`` (every rank when that leaves none)."""
    top = min(layer.max_rank, layer.factorization.computed_rank)
    grid = np.arange(multiple, top + 1, multiple)
    return grid if len(grid) else np.arange(1, top + 1)


def energy_rank(layer: Layer, energy: float, multiple: int) -> int:
    """Smallest rank keeping ``energy``, rounded up to ``multiple`` (may exceed max_rank: then no split)."""
    rank = layer.factorization.rank_for_energy(energy)
    rounded = int(math.ceil(rank / multiple) * multiple)
    return min(rounded, layer.factorization.computed_rank)


PROBE_FRACTIONS = (0.15, 0.3, 0.5, 0.7)
"""Parameter fractions at which each layer's sensitivity is measured."""


def probe_ranks(layer: Layer, multiple: int) -> list[int]:
    """Grid ranks closest to keeping PROBE_FRACTIONS of the layer's parameters, largest error first."""
    grid = rank_grid(layer, multiple)
    if not len(grid):
        return []
    targets = [f * layer.params / (layer.k + layer.n) for f in PROBE_FRACTIONS]
    return sorted({int(grid[np.argmin(np.abs(grid - t))]) for t in targets})


def allocate(layers: list[Layer], keep: float, multiple: int) -> list[int | None]:
    """Ranks (None: leave unsplit) whose total parameters are at most ``keep`` of the layers' total."""
    total = sum(layer.params for layer in layers)
    options = [_options(layer, multiple, total) for layer in layers]
    budget = keep  # option sizes are fractions of the total
    low, high = -12.0, 12.0  # log10 of the price of one parameter (as a fraction of the total)
    best = _choose(options, 10.0**high)
    if _size(options, best) > budget:
        return [ranks[i] for (ranks, _, _), i in zip(options, best)]  # the budget cannot be met
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if _size(options, _choose(options, 10.0**middle)) <= budget:
            high = middle
        else:
            low = middle
    chosen = _fill(options, _choose(options, 10.0**high), budget)
    return [ranks[i] for (ranks, _, _), i in zip(options, chosen)]


def _options(layer: Layer, multiple: int, total: int) -> tuple[list, np.ndarray, np.ndarray]:
    grid = rank_grid(layer, multiple)
    ranks = [None, *[int(r) for r in grid]]
    params = np.array([layer.params, *[layer.split_params(int(r)) for r in grid]], dtype=np.float64) / total
    cost = np.concatenate([[0.0], layer.costs(grid.astype(int))]) if len(grid) else np.zeros(1)
    return ranks, params, cost


def _fill(options, chosen: list[int], budget: float) -> list[int]:
    """Spends what the Lagrangian solution leaves of the budget (it only reaches points on the convex
    hull): greedily, the rank raise of a split layer with the largest predicted loss decrease per
    parameter that still fits, until none fits."""
    chosen = list(chosen)
    while True:
        room = budget - _size(options, chosen)
        best, best_rate = None, 0.0
        for index, ((_, params, cost), current) in enumerate(zip(options, chosen)):
            if current == 0:  # left whole: stays whole
                continue
            for option in range(current + 1, len(params)):
                extra, gain = params[option] - params[current], cost[current] - cost[option]
                if 0 < extra <= room and gain > best_rate * extra:
                    best, best_rate = (index, option), gain / extra
        if best is None:
            return chosen
        chosen[best[0]] = best[1]


def _choose(options, price: float) -> list[int]:
    return [int(np.argmin(cost + price * params)) for _, params, cost in options]


def _size(options, chosen: list[int]) -> float:
    return float(sum(params[i] for (_, params, _), i in zip(options, chosen)))
