"""Turns the configured mode (energy, rank, parameter budget, cosine floor) into one rank per layer."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from onnxslim.passes.lowrank.allocate import Layer, allocate, energy_rank, probe_ranks
from onnxslim.passes.lowrank.calibration import Probe
from onnxslim.passes.lowrank.sites import Group

logger = logging.getLogger(__name__)

_AUTO_STEPS = 10
_MIN_DROP = 1e-7


@dataclasses.dataclass
class Plan:
    ranks: list[int | None]
    reasons: list[str]
    """Why a layer is left unsplit ("" where it is split)."""
    stats: dict[str, float] = dataclasses.field(default_factory=dict)
    drops: list[float] | None = None
    """Measured cosine drop of each layer halved alone (sensitivity modes)."""


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


def replaced(groups: list[Group], layers: list[Layer], ranks: list[int | None]) -> dict[str, np.ndarray]:
    """Stored-layout approximations of the layers given a rank."""
    out = {}
    for group, layer, rank in zip(groups, layers, ranks):
        if rank is not None:
            u, v = layer.factorization.factors(rank, np.float64)
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


def by_cosine(groups: list[Group], layers: list[Layer], probes: list[Probe], floor: float, multiple: int) -> Plan:
    """The smallest parameter budget whose allocation keeps the cosine >= ``floor`` on every probe
    (bisection; the probes run on held-out calibration samples and on fitted ones: a small held-out
    set alone would let the bisection fit its noise)."""
    low, high = 0.0, 1.0
    best: list[int | None] = [None] * len(layers)
    best_cosine = 1.0
    for _ in range(_AUTO_STEPS):
        middle = (low + high) / 2
        ranks = allocate(layers, middle, multiple)
        approx = replaced(groups, layers, ranks)
        cosine = min(probe.cosine(approx) for probe in probes)
        logger.debug("budget %.4f: calibration cosine %.5f", middle, cosine)
        if cosine >= floor:
            high, best, best_cosine = middle, ranks, cosine
        else:
            low = middle
    plan = Plan(best, ["" if r is not None else "left whole to keep the cosine floor" for r in best])
    plan.stats = {"budget_kept": round(high, 4)}
    logger.debug("cosine floor %s: budget %.4f, held-out cosine %.5f", floor, high, best_cosine)
    return plan
