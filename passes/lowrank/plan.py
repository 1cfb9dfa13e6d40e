"""Turns the configured mode (energy, rank, parameter budget, cosine floor) into one rank per layer."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
from onnxslim.passes.lowrank.allocate import Layer, allocate, energy_rank, probe_ranks
from onnxslim.passes.lowrank.calibration import Probe
from onnxslim.passes.lowrank.factorize import Factorization
from onnxslim.passes.lowrank.sites import Group

logger = logging.getLogger(__name__)

_AUTO_STEPS = 10
_REFIT_STEPS = 3
_REFIT_SPAN = 0.08
"""With a refit, the cosine floor's bisection goes on below the budget found without one, over this span."""

Refine = Callable[[list], list]
"""Ranks -> factorizations refit for them (one per layer)."""
_MIN_DROP = 1e-7


@dataclasses.dataclass
class Plan:
    ranks: list[int | None]
    reasons: list[str]
    """Why a layer is left unsplit ("" where it is split)."""
    stats: dict[str, float] = dataclasses.field(default_factory=dict)
    drops: list[float] | None = None
    """Measured cosine drop of each layer halved alone (sensitivity modes)."""
    factorizations: list[Factorization] | None = None
    """Refit factorizations to split with (None: each layer's own)."""


def by_energy(layers: list[Layer], energy: float, multiple: int) -> Plan:
    ranks, reasons = [], []
    for layer in layers:
        rank = energy_rank(layer, energy, multiple)
        fits = rank <= layer.max_rank
        ranks.append(rank if fits else None)
        reasons.append("" if fits else f"rank {rank} for energy {energy} would not save the margin (max {layer.max_rank})")
    return Plan(ranks, reasons)


def by_rank(layers: list[Layer], rank: int) -> Plan:
    ranks, reasons = [], []
    for layer in layers:
        r = min(rank, layer.factorization.computed_rank)
        fits = r <= layer.max_rank
        ranks.append(r if fits else None)
        reasons.append("" if fits else f"rank {r} would not save the margin (max {layer.max_rank})")
    return Plan(ranks, reasons)


def by_budget(layers: list[Layer], keep: float, multiple: int) -> Plan:
    ranks = allocate(layers, keep, multiple)
    return Plan(ranks, ["" if r is not None else "left whole by the budget allocation" for r in ranks])


def replaced(groups: list[Group], layers: list[Layer], ranks: list[int | None],
             factorizations: list[Factorization] | None = None) -> dict[str, np.ndarray]:
    """Stored-layout approximations of the layers given a rank (from ``factorizations`` when given)."""
    out = {}
    for index, (group, layer, rank) in enumerate(zip(groups, layers, ranks)):
        if rank is not None:
            chosen = factorizations[index] if factorizations else layer.factorization
            u, v = chosen.factors(rank, np.float64)
            out[group.name] = group.to_stored(u @ v)
    return out


def measure_sensitivity(groups: list[Group], layers: list[Layer], probe: Probe, multiple: int) -> list[float]:
    """Measures each layer's cosine drop, alone, at a few ranks; returns the drop at the middle probe."""
    middles = []
    for group, layer in zip(groups, layers):
        ranks = probe_ranks(layer, multiple)[::-1]  # smallest error first
        if not ranks:
            middles.append(0.0)
            continue
        drops = [max(1.0 - probe.cosine(replaced([group], [layer], [r])), _MIN_DROP) for r in ranks]
        errors = [layer.factorization.relative_error(r) ** 2 for r in ranks]
        layer.measured = (np.array([0.0, *errors]), np.maximum.accumulate([0.0, *drops]))
        middles.append(drops[len(drops) // 2])
        logger.debug("sensitivity %s: ranks %s drop cosine by %s", group.name, ranks, drops)
    return middles


def by_cosine(groups: list[Group], layers: list[Layer], probes: list[Probe], floor: float, multiple: int,
              refine: Refine | None = None) -> Plan:
    """The smallest parameter budget whose allocation keeps the cosine >= ``floor``, and each output's
    SNR at the level validation pairs with that cosine (``Probe.floor_score``), on every probe
    (bisection; the probes run on held-out calibration samples and on fitted ones: a small held-out
    set alone would let the bisection fit its noise). With ``refine`` (a refit), the bisection first
    runs without it, then a few refit steps search below the budget found."""
    def measure(budget: float, refit: bool) -> tuple[float, list, list | None]:
        ranks = allocate(layers, budget, multiple)
        facts = refine(ranks) if refit else None
        cosine = min(probe.floor_score(replaced(groups, layers, ranks, facts)) for probe in probes)
        logger.debug("budget %.4f%s: calibration cosine %.5f", budget, " (refit)" if refit else "", cosine)
        return cosine, ranks, facts

    low, high = 0.0, 1.0
    best: tuple[list, list | None] = ([None] * len(layers), None)
    for _ in range(_AUTO_STEPS):
        middle = (low + high) / 2
        cosine, ranks, facts = measure(middle, False)
        low, high, best = (low, middle, (ranks, facts)) if cosine >= floor else (middle, high, best)
    if refine is not None and any(r is not None for r in best[0]):
        cosine, ranks, facts = measure(high, True)
        best = (ranks, facts) if cosine >= floor else best
        low = max(0.0, high - _REFIT_SPAN)
        for _ in range(_REFIT_STEPS):
            middle = (low + high) / 2
            cosine, ranks, facts = measure(middle, True)
            low, high, best = (low, middle, (ranks, facts)) if cosine >= floor else (middle, high, best)
    ranks, facts = best
    plan = Plan(ranks, ["" if r is not None else "left whole to keep the cosine floor" for r in ranks])
    plan.stats = {"budget_kept": round(high, 4)}
    plan.factorizations = facts if facts is not None or refine is None else [layer.factorization for layer in layers]
    return plan
