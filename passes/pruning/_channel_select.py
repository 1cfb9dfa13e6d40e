"""Which channel components to remove: dependency groups, importance, per-group amounts."""

from __future__ import annotations

import collections
from typing import Mapping

import numpy as np

from onnxslim.passes.pruning._channel_graph import BLOCKED, ChannelGraph
from onnxslim.passes.pruning._layers import Layer



def dependency_groups(g: ChannelGraph) -> list[tuple[list[str], set[int]]]:
    """[(producer output names, component roots)]: producers that share any component form one group."""
    parent = {name: name for name in g.producers}

    def find(name):
        while parent[name] != name:
            name = parent[name]
        return name

    owner: dict[int, str] = {}
    for name in g.producers:
        for unit in g.tracks[name].units:
            root = g.find(unit)
            if root == BLOCKED:
                continue
            if root in owner:
                parent[find(name)] = find(owner[root])
            else:
                owner[root] = name
    members = collections.defaultdict(list)
    for name in g.producers:
        members[find(name)].append(name)
    return [(names, {g.find(u) for n in names for u in g.tracks[n].units}) for names in members.values()]


def magnitude_scores(g: ChannelGraph) -> dict[int, float]:
    """Per component: the sum over its producers of the output row's L2 norm / that layer's mean row norm."""
    scores: dict[int, float] = collections.defaultdict(float)
    for name, layer in g.producers.items():
        norms = np.linalg.norm(layer.rows().astype(np.float64), axis=1)
        mean = float(norms.mean()) or 1.0
        for unit, value in zip(g.tracks[name].units, norms / mean):
            scores[g.find(unit)] += float(value)
    return scores


def activation_scores(g: ChannelGraph, energies: Mapping[str, np.ndarray]) -> dict[int, float]:
    """Per component: sum over consumers of E[x_c^2] * ||W[:, c]||^2 (the output energy the channel carries).

    A grouped Conv's input channel c meets only its own group's output rows: ``||W[:, c]||`` is taken
    over that slice (skipping grouped readers left channels read only by them at score 0, so the
    selection fell back to their index and removed live channels)."""
    scores: dict[int, float] = collections.defaultdict(float)
    for layer, name in g.consumers:
        if name not in energies:
            continue
        contribution = energies[name] * input_column_energy(layer)
        mean = float(contribution.mean()) or 1.0
        for unit, value in zip(g.tracks[name].units, contribution / mean):
            scores[g.find(unit)] += float(value)
    return scores


def input_column_energy(layer: Layer) -> np.ndarray:
    """Per input channel of ``layer``: the sum of squares of the weights that read it (one column of
    ``W`` for Gemm/MatMul; for a Conv with ``group`` groups, input channel c's slice ``W[rows of its
    group, c % (C / group)]`` over the kernel)."""
    if layer.kind != "conv":
        return (layer.rows().astype(np.float64) ** 2).sum(0)
    w = layer.array().astype(np.float64)
    per_row = (w**2).reshape(w.shape[0], w.shape[1], -1).sum(-1)  # [out, in / group]
    groups = layer.group
    return per_row.reshape(groups, w.shape[0] // groups, w.shape[1]).sum(1).reshape(-1)


def select(g: ChannelGraph, groups, scores: Mapping[int, float], amounts: Mapping[str, float],
           round_to: int = 1, explicit: Mapping[str, float] | None = None) -> tuple[set[int], list[dict]]:
    """Roots to remove, and one report row per group.

    ``amounts``: per producer output name; ``explicit``: per layer name, the amounts an override set."""
    removed: set[int] = set()
    rows = []
    for names, roots in groups:
        layers = sorted({g.producers[n].name for n in names})
        free = sorted((r for r in roots if r != BLOCKED), key=lambda r: (scores.get(r, 0.0), r))
        amount, remark = group_amount(g, names, roots, amounts, explicit or {})
        row = {"group": layers, "channels": max(len(g.tracks[n].units) for n in names), "amount": amount, **remark}
        if not free:
            rows.append({**row, "skipped": _reason(g, names)})
            continue
        count = _rounded(len(free), min(int(amount * len(free)), len(free) - 1), round_to)
        chosen, problem = _choose(g, names, free, count)
        if problem:
            rows.append({**row, "skipped": problem})
            continue
        removed |= chosen
        rows.append({**row, "removed": len(chosen), "blocked": BLOCKED in roots})
    return removed, rows


def group_amount(g: ChannelGraph, names: list[str], roots: set[int], amounts: Mapping[str, float],
                 explicit: Mapping[str, float]) -> tuple[float, str | None]:
    """The amount of one dependency group, and a note (or, for a conflict, a warning) for its report row.

    Coupled channels are removed together, so one amount holds for the group. An override naming
    any member (a producer, or a depthwise Conv its channels run through) sets it: the user asked
    for that layer, and the group's other members only follow (taking the minimum with the default
    made ``--prune 0 --prune-overrides one_member=0.5`` remove nothing). Overrides of members that
    disagree: the smallest, with a warning. No override: the members' (equal) default.
    """
    members = {g.producers[n].name for n in names}
    members |= {layer.name for layer, out in g.followers if roots & ({g.find(u) for u in g.tracks[out].units} - {BLOCKED})}
    named = {m: explicit[m] for m in sorted(members) if m in explicit}
    if not named:
        return min(amounts[n] for n in names), {}
    amount = min(named.values())
    if len(set(named.values())) > 1:
        listed = ", ".join(f"{m}={a:g}" for m, a in named.items())
        # a "warning" in a details row reaches the run's warnings (api.run), printed by the CLI
        return amount, {"warning": f"conflicting overrides in one dependency group ({listed}): the smallest, "
                                   f"{amount:g}, applies"}
    if len(named) < len(members):
        return amount, {"note": f"override of {', '.join(named)} applies to its whole dependency group"}
    return amount, {}


def _rounded(free: int, count: int, round_to: int) -> int:
    """``count`` lowered so that the channels kept are a multiple of ``round_to`` (when that keeps any)."""
    kept = -(-(free - count) // round_to) * round_to
    return max(free - kept, 0) if kept < free else count if round_to == 1 else 0


def _reason(g: ChannelGraph, names: list[str]) -> str:
    """Why a group's channels are blocked: the first reason recorded for one of its units."""
    for name in names:
        for unit in g.tracks[name].units:
            if unit in g.reasons:
                return g.reasons[unit]
    return "channels coupled to a blocked tensor"


def _choose(g: ChannelGraph, names: list[str], free: list[int], count: int) -> tuple[set[int], str | None]:
    mine = set(free)
    constraints = [(v, n) for v, n in g.constraints if any(g.find(u) in mine for u in g.tracks[v].units)]
    if not constraints:
        chosen = set(free[:count])
    else:
        value, parts = constraints[0]
        units = [g.find(u) for u in g.tracks[value].units]
        size = len(units) // parts
        rank = {r: i for i, r in enumerate(free)}
        chosen = set()
        for part in range(parts):
            segment = sorted({u for u in units[part * size:(part + 1) * size] if u in mine}, key=rank.get)
            chosen |= set(segment[:count // parts])
    for value, parts in constraints:
        units = [g.find(u) for u in g.tracks[value].units]
        size = len(units) // parts
        per_part = {sum(u in chosen for u in units[p * size:(p + 1) * size]) for p in range(parts)}
        if len(per_part) > 1:
            return set(), f"grouped convolution ({parts} groups) cannot lose the same number of channels per group"
    for name, track in g.tracks.items():
        if track.units and all(g.find(u) in chosen for u in track.units):
            return set(), f"would remove every channel of {name}"
    return chosen, None
