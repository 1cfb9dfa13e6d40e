"""Pruning sensitivity scan: output cosine (and task accuracy) vs amount, one layer or dependency group at a time.

Each *unit* (a dependency group for ``channel``, a layer for ``magnitude``) is pruned alone, at
each amount, with the real pass on a copy of the model; the copy runs on the calibration data
and is compared with the unpruned model's outputs (mean per-sample cosine of all outputs; top-1
accuracy of the first output when the batches carry labels). ``propose_amounts`` then picks
per-unit amounts for a target: the greedy choice of the cheapest cosine loss per parameter
removed, assuming the losses of units add up (first order), and ``scan_prune`` checks the
proposal by pruning with all of it at once. No file I/O, no printing: the results are plain
dataclasses (``to_dict()`` for JSON).
"""

from __future__ import annotations

import dataclasses
import itertools
from functools import partial
from typing import Iterable, Literal, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import PassContext
from onnxslim.core.stats import graph_stats
from onnxslim.passes.pruning._channel_graph import BLOCKED, ChannelGraph
from onnxslim.passes.pruning._channel_select import dependency_groups
from onnxslim.passes.pruning._layers import find_layers, plan_amounts
from onnxslim.passes.pruning.prune_channels import PruneChannels, PruneChannelsConfig, edge_layers, spare_uncoupled_first
from onnxslim.passes.pruning.prune_magnitude import PruneMagnitude, PruneMagnitudeConfig
from onnxslim.runtime.data_runs import run_batch, run_candidate
from onnxslim.runtime.session import make_session

Method = Literal["channel", "magnitude"]
DEFAULT_AMOUNTS = (0.1, 0.3, 0.5, 0.7)


@dataclasses.dataclass
class ScanPoint:
    amount: float
    cosine: float
    accuracy: float | None
    params_removed: int


@dataclasses.dataclass
class UnitScan:
    name: str
    """The first layer's name (a dependency group is named after its first producer)."""
    layers: list[str]
    params: int
    """Weights of the unit's layers before pruning."""
    points: list[ScanPoint]


@dataclasses.dataclass
class Proposal:
    amounts: dict[str, float]
    """Per layer; layers not listed stay unpruned."""
    overrides: list[str]
    """The same as ``NAME=AMOUNT`` entries for ``--prune-overrides`` (with ``--prune 0``)."""
    params_removed: int
    param_reduction: float
    predicted_cosine_loss: float
    measured_cosine: float | None = None
    measured_accuracy: float | None = None


@dataclasses.dataclass
class ScanResult:
    method: str
    amounts: list[float]
    params: int
    baseline_accuracy: float | None
    units: list[UnitScan]
    proposal: Proposal | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Scorer:
    """Runs candidate models on the (materialized) calibration batches against the reference outputs."""

    def __init__(self, model: ir.Model, calibration: Iterable, max_batches: int | None = None):
        self.batches = list(itertools.islice(calibration, max_batches))
        if not self.batches:
            raise ValueError("the sensitivity scan needs at least one calibration batch")
        labels = [getattr(b, "labels", None) for b in self.batches]
        self.labels = None if any(l is None for l in labels) else np.concatenate(labels)
        self.reference, first = self._outputs(model, candidate=False)
        self.baseline_accuracy = self._accuracy(first)

    def _outputs(self, model: ir.Model, *, candidate: bool) -> tuple[np.ndarray, np.ndarray]:
        """([samples, features] of all outputs joined, the first output) over all batches.

        ``candidate``: a pruned copy, on batches the unpruned model ran (a failure is the pass's, not the data's)."""
        session = make_session(model)
        run = partial(run_candidate, made="pruned", original="unpruned") if candidate else run_batch
        rows, firsts = [], []
        for batch in self.batches:
            outs = run(session, None, batch.inputs if hasattr(batch, "inputs") else batch)
            count = len(outs[0]) if outs[0].ndim else 1
            rows.append(np.concatenate([o.reshape(count, -1) if o.ndim and len(o) == count else
                                        np.broadcast_to(o.reshape(1, -1), (count, o.size)) for o in outs], 1))
            firsts.append(outs[0])
        del session
        return np.concatenate(rows).astype(np.float64), np.concatenate(firsts)

    def _accuracy(self, first: np.ndarray) -> float | None:
        if self.labels is None or first.ndim != 2 or len(first) != len(self.labels):
            return None
        return float(np.mean(first.argmax(1) == self.labels))

    def score(self, model: ir.Model) -> tuple[float, float | None]:
        """(mean per-sample cosine vs the reference, top-1 accuracy or None)."""
        rows, first = self._outputs(model, candidate=True)
        norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(self.reference, axis=1)
        cosine = np.divide(np.sum(rows * self.reference, 1), norms, out=np.ones(len(rows)), where=norms > 0)
        return float(np.mean(cosine)), self._accuracy(first)


def scan_units(model: ir.Model, method: Method, *, skip: Sequence[str] = (), skip_first_last: bool = True) -> list[UnitScan]:
    """The units the pass would prune (empty ``points``): channel dependency groups, or layers."""
    layers, _ = find_layers(model)
    amounts, _ = plan_amounts(layers, amount=0.5, skip=skip, skip_first_last=False, overrides={})
    first, last = edge_layers(layers, PruneChannelsConfig(skip=tuple(skip), skip_first_last=skip_first_last))
    amounts.pop(last, None)
    if method == "magnitude":
        amounts.pop(first, None)
        return [UnitScan(l.name, [l.name], int(l.array().size), []) for l in layers if l.name in amounts]
    graph = ChannelGraph(model, prunable=lambda layer: layer.name in amounts)
    groups, _ = spare_uncoupled_first(graph, dependency_groups(graph), first)
    units = []
    for names, roots in groups:
        if roots - {BLOCKED}:
            producers = [graph.producers[n] for n in names]
            units.append(UnitScan(producers[0].name, [p.name for p in producers],
                                  sum(int(p.array().size) for p in producers), []))
    return units


def prune_copy(model: ir.Model, method: Method, amounts: dict[str, float], batches: list, *,
               importance: str, round_to: int) -> tuple[ir.Model, int]:
    """A pruned copy with per-layer ``amounts`` (all others untouched), and the parameters it lost."""
    copy = model.clone()
    overrides = tuple(f"{name}={amount}" for name, amount in amounts.items())
    context = PassContext(calibration=batches)
    if method == "channel":
        config = PruneChannelsConfig(amount=0.0, overrides=overrides, skip_first_last=False, importance=importance,
                                     round_to=round_to)
        result = PruneChannels(config, context=context)(copy)
        return result.model, int(result.stats.get("params_removed", 0))
    config = PruneMagnitudeConfig(amount=0.0, overrides=overrides, skip_first_last=False, importance=importance)
    result = PruneMagnitude(config, context=context)(copy)
    return result.model, int(result.stats.get("params_pruned", 0))


def scan_sensitivity(model: ir.Model, calibration: Iterable, *, method: Method = "channel",
                     amounts: Sequence[float] = DEFAULT_AMOUNTS, skip: Sequence[str] = (), skip_first_last: bool = True,
                     importance: str = "auto", round_to: int = 8, max_batches: int | None = None) -> ScanResult:
    """Prunes each unit alone at each amount and measures the outputs; run it on the cleaned-up model
    (as the pipeline's pruning pass sees it). Cost: units x amounts pruned copies and calibration runs."""
    if method not in ("channel", "magnitude"):
        raise ValueError(f"method must be 'channel' or 'magnitude', got {method!r}")
    if not amounts or any(not 0 < a < 1 for a in amounts):
        raise ValueError(f"amounts must be in (0, 1), got {list(amounts)}")
    scorer = Scorer(model, calibration, max_batches)
    units = scan_units(model, method, skip=skip, skip_first_last=skip_first_last)
    for unit in units:
        for amount in sorted(amounts):
            pruned, removed = prune_copy(model, method, {n: amount for n in unit.layers}, scorer.batches,
                                         importance=importance, round_to=round_to)
            cosine, accuracy = scorer.score(pruned)
            unit.points.append(ScanPoint(amount, round(cosine, 6), accuracy, removed))
    return ScanResult(method, sorted(amounts), graph_stats(model).params, scorer.baseline_accuracy, units)


def propose_amounts(scan: ScanResult, *, target_reduction: float | None = None, max_cosine_loss: float = 0.01) -> Proposal:
    """Per-unit amounts: greedily take the step (a unit to one of its scanned amounts) with the least
    cosine loss per parameter removed, while the summed loss stays within ``max_cosine_loss``, until
    ``target_reduction`` of the model's parameters is removed (None: as many as the budget allows)."""
    if max_cosine_loss < 0 or (target_reduction is not None and not 0 < target_reduction < 1):
        raise ValueError("max_cosine_loss must be >= 0 and target_reduction in (0, 1)")
    chosen = {i: -1 for i in range(len(scan.units))}
    loss, removed = 0.0, 0

    def state(i: int, j: int) -> tuple[float, int]:
        return (0.0, 0) if j < 0 else (max(1 - scan.units[i].points[j].cosine, 0.0), scan.units[i].points[j].params_removed)

    while target_reduction is None or removed < target_reduction * scan.params:
        best = None
        for i, unit in enumerate(scan.units):
            now_loss, now_params = state(i, chosen[i])
            for j in range(chosen[i] + 1, len(unit.points)):
                step_loss, step_params = state(i, j)
                d_loss, d_params = max(step_loss - now_loss, 0.0), step_params - now_params
                if d_params > 0 and loss + d_loss <= max_cosine_loss:
                    key = (d_loss / d_params, -d_params)
                    if best is None or key < best[0]:
                        best = (key, i, j, d_loss, d_params)
        if best is None:
            break
        _, i, j, d_loss, d_params = best
        chosen[i], loss, removed = j, loss + d_loss, removed + d_params
    amounts = {layer: scan.units[i].points[j].amount for i, j in chosen.items() if j >= 0 for layer in scan.units[i].layers}
    return Proposal(amounts, [f"{name}={amount:g}" for name, amount in amounts.items()], removed,
                    round(removed / max(scan.params, 1), 4), round(loss, 6))


def scan_prune(model: ir.Model, calibration: Iterable, *, method: Method = "channel",
               amounts: Sequence[float] = DEFAULT_AMOUNTS, target_reduction: float | None = None,
               max_cosine_loss: float = 0.01, skip: Sequence[str] = (), skip_first_last: bool = True,
               importance: str = "auto", round_to: int = 8, max_batches: int | None = None) -> ScanResult:
    """``scan_sensitivity`` + ``propose_amounts``, then the proposal applied at once and measured."""
    scan = scan_sensitivity(model, calibration, method=method, amounts=amounts, skip=skip, skip_first_last=skip_first_last,
                            importance=importance, round_to=round_to, max_batches=max_batches)
    proposal = propose_amounts(scan, target_reduction=target_reduction, max_cosine_loss=max_cosine_loss)
    if proposal.amounts:
        scorer = Scorer(model, calibration, max_batches)
        pruned, removed = prune_copy(model, method, proposal.amounts, scorer.batches, importance=importance,
                                     round_to=round_to)
        proposal.measured_cosine, proposal.measured_accuracy = scorer.score(pruned)
        proposal.params_removed, proposal.param_reduction = removed, round(removed / max(scan.params, 1), 4)
    scan.proposal = proposal
    return scan
