"""Constant MatMul/Gemm/1x1-Conv weights split into two thin factors."""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Literal

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassContext, PassResult
from onnxslim.core.stats import unreached_weights
from onnxslim.errors import ConfigError
from onnxslim.input_shapes import batch_axis_is_dynamic
from onnxslim.passes._names import Names
from onnxslim.passes.lowrank import data_split, downstream, factorize, metrics, plan, refit, search
from onnxslim.passes.lowrank.allocate import Layer, max_rank
from onnxslim.passes.lowrank.calibration import Probe, input_covariances
from onnxslim.passes.lowrank.report import report_row
from onnxslim.passes.lowrank.rewrite import split_group
from onnxslim.passes.lowrank.sites import Group, find_groups

logger = logging.getLogger(__name__)

DEFAULT_ENERGY = 0.95
METRIC_SAMPLES = 1024
"""Fitted calibration samples (spread over the set) that the downstream output metrics are measured on."""


@dataclasses.dataclass(frozen=True)
class Config:
    energy: float | None = None
    """Keep this fraction of each layer's singular-value energy (the default mode, 0.95)."""
    rank: int | None = None
    """The same rank for every layer."""
    params: float | None = None
    """Keep this fraction of the splittable weights' parameters, allocated over the layers."""
    min_cosine: float | None = None
    """Largest cut whose mean output cosine on the calibration data stays >= this (needs calibration)."""
    method: Literal["auto", "plain", "whitened"] = "auto"
    """``whitened``: activation-aware (needs calibration); ``auto``: whitened when calibration is given."""
    allocation: Literal["auto", "sensitivity", "error"] = "auto"
    """Budget cost per layer: measured cosine sensitivity (needs calibration) or relative error alone."""
    margin: float = 0.2
    """Split only where r * (K + N) <= (1 - margin) * K * N."""
    min_params: int = 4096
    rank_multiple: int = 8
    """Ranks chosen by energy or budget are multiples of this (friendlier GEMM shapes)."""
    ops: tuple[str, ...] = ("MatMul", "Gemm", "Conv")
    damping: float = 0.1
    """Added to the activation covariance's diagonal, as a fraction of its mean eigenvalue, before whitening."""
    holdout: float = 0.2
    """Fraction of the calibration samples held out of the covariances; the cosine measurements
    (sensitivity, cosine floor) run on them (0: measure on the fitted samples)."""
    check_samples: int = 256
    """At most this many held-out samples are used for the cosine measurements."""
    mask_input: str | None = "auto"
    """Graph input whose zeros mark padding rows of [batch, seq, K] activations (left out of the
    covariances); "auto": a 2-D input named like *mask*; None or "none": every row counts."""
    refit: Literal["none", "oneshot", "sequential"] = "sequential"
    """After the ranks are chosen, refit each split layer's factors to the original layer output given
    the split model's own inputs (with data): ``sequential`` stage by stage in topological order,
    ``oneshot`` from the fully split model once; layers with no split layer upstream keep theirs."""
    refit_samples: int = 512
    """Fitted calibration samples (spread over the set) that the refit runs on."""
    downstream: bool = True
    """Whitened, with data: weight each layer's output error by what reads it (``downstream.py``):
    value projections by the attention output weight, query / key projections by the other side's
    per-head Gram, FFN up projections by the activation's slope and the down weight; the
    factorization, its sensitivity and the refit then minimize ``||X (W - A) M^(1/2)||``."""
    downstream_damping: float = 1.0
    """Added to the output metric's diagonal, as a fraction of its mean eigenvalue (1: half-way between
    the consumers' metric and the isotropic one; chosen on held-out calibration samples)."""
    search: int = 0
    """Budget mode with a refit: up to this many rounds of a local search that moves rank steps
    between split layers by their measured cost / gain on the calibration cosine with the refit
    factors (``search.py``), then refits the moved ranks; kept where that cosine rises."""
    randomized: bool = False
    """Fixed-rank plain mode: randomized SVD when the rank is at most a quarter of min(K, N)
    (off by default: measured slower than the Gram-matrix SVD on 2 cores)."""

    def __post_init__(self):
        modes = [n for n in ("energy", "rank", "params", "min_cosine") if getattr(self, n) is not None]
        if len(modes) > 1:
            raise ValueError(f"give one of energy, rank, params, min_cosine (got {', '.join(modes)})")
        for name in ("energy", "params", "min_cosine"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
        if self.rank_multiple < 1 or self.min_params < 0 or self.damping < 0:
            raise ValueError("rank_multiple must be >= 1, min_params and damping >= 0")
        if not 0.0 <= self.holdout < 1.0 or self.check_samples < 1:
            raise ValueError(f"holdout must be in [0, 1) and check_samples >= 1 (got {self.holdout}, {self.check_samples})")
        if self.refit not in ("none", "oneshot", "sequential") or self.refit_samples < 1:
            raise ValueError(f"refit must be none, oneshot or sequential and refit_samples >= 1 "
                             f"(got {self.refit!r}, {self.refit_samples})")
        if self.search < 0 or self.downstream_damping < 0:
            raise ValueError(f"search and downstream_damping must be >= 0 (got {self.search}, {self.downstream_damping})")
        unknown = set(self.ops) - {"MatMul", "Gemm", "Conv"}
        if unknown:
            raise ValueError(f"ops must be among MatMul, Gemm, Conv (got {', '.join(sorted(unknown))})")

    @property
    def needs_data(self) -> bool:
        return self.min_cosine is not None or self.method == "whitened" or self.allocation == "sensitivity"


def _nothing_split(skipped: list[dict], candidates: int) -> str:
    """The details warning of a run that split no weight: its most common reasons."""
    if not skipped:
        return "no weight split: no MatMul/Gemm/1x1 Conv weight large enough to consider"
    reasons: dict[str, int] = {}
    for row in skipped:
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    top = sorted(reasons.items(), key=lambda item: -item[1])[:2]
    return f"no weight split ({candidates} candidates): " + "; ".join(f"{count} x {reason}" for reason, count in top)


class SplitLowRank(Pass):
    """Split constant weights into two thin factors: ``X @ W`` -> ``(X @ U) @ V``.

    W (K x N) read by MatMul (either side, any batch dims), Gemm (B input; transA/transB,
    alpha/beta and bias kept) or a 1x1 Conv (group 1) becomes U (K x r) and V (r x N) when
    ``r * (K + N)`` saves the margin. Ranks come from energy, a fixed rank, a parameter budget or
    a cosine floor; with calibration data the factorization is whitened by the input covariance
    (minimizes the layer's output error, weighted by what reads it: ``downstream``), budgets follow measured per-layer sensitivity, and the
    factors of layers behind other split ones are refit to the original outputs given the split
    model's own inputs (``refit``).
    An initializer read by several nodes is split once; nodes inside subgraphs are not touched.
    """

    name = "split-lowrank"
    Config = Config
    lossy = True
    float_weights = True

    def __init__(self, config: Config | None = None, *, context: PassContext | None = None):
        super().__init__(config, context=context)
        self._splittable = True
        if self.config.needs_data and self.context.calibration is None:
            raise ConfigError("min_cosine, method=whitened and allocation=sensitivity need calibration data "
                              "(--calibration-data)", where=f"pass {self.name}")

    def call(self, model: ir.Model) -> PassResult:
        cfg = self.config
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        groups, skipped = find_groups(model.graph, ops=tuple(cfg.ops), opset=opset, min_params=cfg.min_params)
        self._splittable = batch_axis_is_dynamic(model)  # else the data is held out and taken by whole batches
        fit, check = self._data()
        covariances = self._covariances(model, groups, fit)
        whiten = cfg.method == "whitened" or (cfg.method == "auto" and bool(covariances))
        if whiten or cfg.min_cosine is not None or self._sensitivity:
            skipped += [{"weight": g.name, "reason": "weight is not an initializer (run fold-constants first)"}
                        for g in groups if not g.weight.is_initializer()]
            groups = [g for g in groups if g.weight.is_initializer()]
        output = self._output_metrics(model, groups, fit) if whiten and covariances and cfg.downstream else {}
        layers = [self._layer(g, covariances.get(g.name) if whiten else None, output.get(g.name)) for g in groups]
        refine = self._refiner(model, groups, layers, fit, covariances, output) if whiten else None
        chosen = self._plan(model, groups, layers, fit, check, refine)
        chosen.stats["layers_weighted"] = len(output)
        return self._apply(model, groups, layers, chosen, covariances, whiten, skipped)

    @property
    def _sensitivity(self) -> bool:
        cfg = self.config
        wants = cfg.params is not None or cfg.min_cosine is not None
        return wants and (cfg.allocation == "sensitivity" or (cfg.allocation == "auto" and self.context.calibration is not None))

    def _data(self) -> tuple[Iterable | None, list | None]:
        """(fit part, held-out check batches) of the calibration data."""
        if self.context.calibration is None:
            return None, None
        return data_split.split(self.context.calibration, self.config.holdout, self.config.check_samples,
                                splittable=self._splittable)

    def _covariances(self, model: ir.Model, groups: list[Group], fit: Iterable | None) -> dict[str, np.ndarray]:
        if fit is None or not groups:
            return {}
        mask = data_split.mask_input(model.graph, self.config.mask_input)
        if mask is None and (self.config.mask_input or "none").lower() not in ("none", "", "auto"):
            logger.warning("mask input %r is not a graph input: every row counts", self.config.mask_input)
        return input_covariances(model, groups, fit, mask=mask)

    def _output_metrics(self, model: ir.Model, groups: list[Group], fit) -> dict[str, np.ndarray]:
        """Downstream output metric per weight name, from its consumers and ``METRIC_SAMPLES`` fitted samples."""
        links = downstream.find_links(model.graph, groups)
        mask = data_split.mask_input(model.graph, self.config.mask_input)
        stats = metrics.collect(model, links, data_split.spread(fit, METRIC_SAMPLES, splittable=self._splittable), mask=mask)
        out = metrics.build(groups, links, stats)
        logger.debug("output metrics for %d of %d weights", len(out), len(groups))
        return out

    def _refiner(self, model: ir.Model, groups: list[Group], layers: list[Layer], fit,
                 covariances: dict[str, np.ndarray], output: dict[str, np.ndarray]) -> plan.Refine | None:
        """Output-aware refit of the chosen ranks' factors on ``refit_samples`` fitted samples (None: off)."""
        cfg = self.config
        if cfg.refit == "none" or fit is None:
            return None
        mask = data_split.mask_input(model.graph, cfg.mask_input)
        batches = data_split.by_length(data_split.spread(fit, cfg.refit_samples, splittable=self._splittable), mask,
                                       splittable=self._splittable)
        initial = [layer.factorization for layer in layers]

        def refine(ranks: list[int | None]) -> list:
            return refit.refit(model, groups, initial, ranks, batches, mask=mask, damping=cfg.damping, mode=cfg.refit,
                               covariances=covariances, residual=True, metrics=output,
                               metric_damping=cfg.downstream_damping)
        return refine

    def _layer(self, group: Group, covariance: np.ndarray | None, metric: np.ndarray | None = None) -> Layer:
        cfg, (k, n) = self.config, group.shape
        if covariance is not None:
            fact = factorize.whitened(group.matrix, covariance, damping=cfg.damping, metric=metric,
                                      metric_damping=cfg.downstream_damping)
        else:
            fast = cfg.rank is not None and cfg.randomized and cfg.rank * 4 <= min(k, n)
            fact = factorize.plain(group.matrix, rank=cfg.rank, randomized=fast)
        return Layer(k, n, fact, max_rank(k, n, cfg.margin))

    def _plan(self, model: ir.Model, groups: list[Group], layers: list[Layer], fit, check,
              refine: plan.Refine | None) -> plan.Plan:
        """Ranks per layer (and their refit factors); cosines are measured on the held-out ``check`` batches."""
        cfg = self.config
        if cfg.params is None and cfg.min_cosine is None:
            chosen = plan.by_rank(layers, cfg.rank) if cfg.rank is not None else \
                plan.by_energy(layers, cfg.energy or DEFAULT_ENERGY, cfg.rank_multiple)
            return self._refit(chosen, refine)
        mask = data_split.mask_input(model.graph, cfg.mask_input)
        probe = (Probe(model, groups, data_split.by_length(check, mask, splittable=self._splittable))
                 if self._sensitivity or cfg.min_cosine else None)
        fitted = None
        if probe is not None and fit is not self.context.calibration:
            fitted = Probe(model, groups, data_split.by_length(
                data_split.take(fit, cfg.check_samples, splittable=self._splittable), mask, splittable=self._splittable))
        drops = plan.measure_sensitivity(groups, layers, probe, cfg.rank_multiple) if self._sensitivity else None
        if cfg.min_cosine is not None:
            probes = [probe] + ([fitted] if fitted else [])
            chosen = self._refit(plan.by_cosine(groups, layers, probes, cfg.min_cosine, cfg.rank_multiple, refine), refine)
        else:
            chosen = self._refit(self._budget(groups, layers, refine, [probe, fitted]), refine)
        chosen.drops = drops
        if probe is not None:
            final = plan.replaced(groups, layers, chosen.ranks, chosen.factorizations)
            chosen.stats["check_cosine"] = round(probe.cosine(final), 6)
            if fitted is not None:
                chosen.stats["fit_cosine"] = round(fitted.cosine(final), 6)
        return chosen

    def _budget(self, groups: list[Group], layers: list[Layer], refine: plan.Refine | None, probes: list) -> plan.Plan:
        """Ranks for the parameter budget; with a refit and ``search``, improved by the local rank search,
        its moves judged by the mean cosine on the held-out and fitted calibration probes."""
        cfg, probes = self.config, [p for p in probes if p is not None]
        chosen = plan.by_budget(layers, cfg.params, cfg.rank_multiple)
        if refine is None or not cfg.search or not probes:
            return chosen
        chosen.factorizations = refine(chosen.ranks)

        def score(ranks, facts):
            final = plan.replaced(groups, layers, ranks, facts)
            return float(np.mean([p.cosine(final) for p in probes]))

        def marginal(ranks, facts):  # single steps on the fitted samples only (half the runs)
            return probes[-1].cosine(plan.replaced(groups, layers, ranks, facts))
        return self._search(chosen, layers, refine, score, marginal)

    def _search(self, chosen: plan.Plan, layers: list[Layer], refine: plan.Refine, score, marginal) -> plan.Plan:
        """Local rank search from the allocated, refit plan; the moved ranks are refit again (kept if better)."""
        cfg = self.config
        budget = int(cfg.params * sum(layer.params for layer in layers))
        ranks, before, after = search.local_search(layers, chosen.ranks, chosen.factorizations, cfg.rank_multiple,
                                                   budget, score, cfg.search, marginal)
        chosen.stats.update(search_gain=round(after - before, 6), search_moves=sum(
            a != b for a, b in zip(ranks, chosen.ranks)))
        if ranks != chosen.ranks:
            facts = refine(ranks)
            refit_score = score(ranks, facts)
            chosen.stats["search_refit_gain"] = round(refit_score - after, 6)
            chosen.ranks, chosen.factorizations = ranks, facts if refit_score >= after else chosen.factorizations
        return chosen

    def _refit(self, chosen: plan.Plan, refine: plan.Refine | None) -> plan.Plan:
        if refine is not None and chosen.factorizations is None:
            chosen.factorizations = refine(chosen.ranks)
        chosen.stats["refit"] = self.config.refit if refine is not None else "none"
        return chosen

    def _apply(self, model, groups, layers, chosen, covariances, whiten, skipped) -> PassResult:
        names, details = Names(model.graph), []
        before = after = 0
        for index, (group, layer, rank) in enumerate(zip(groups, layers, chosen.ranks)):
            if rank is None:
                skipped.append({"weight": group.name, "reason": chosen.reasons[index]})
                continue
            refit = chosen.factorizations is not None and chosen.factorizations[index] is not layer.factorization
            layer = dataclasses.replace(layer, factorization=chosen.factorizations[index]) if refit else layer
            u, v = layer.factorization.factors(rank, group.array.dtype)
            split_group(model.graph, group, u, v, names)
            row = report_row(group, layer, rank, covariances.get(group.name), whiten)
            row["refit"] = refit
            if chosen.drops:
                row["sensitivity_drop"] = round(chosen.drops[index], 6)
            details.append(row)
            before, after = before + row["params_before"], after + row["params_after"]
        if details:
            ir.passes.common.RemoveUnusedNodesPass()(model)
        itemsize = {row["weight"]: g.array.itemsize for g in groups for row in details if row["weight"] == g.name}
        saved_bytes = sum(row["params_saved"] * itemsize[row["weight"]] for row in details)
        stats = {"weights_split": len(details), "candidates": len(groups), "params_before": before,
                 "params_after": after, "params_saved": before - after, "bytes_saved": saved_bytes,
                 "layers_refit": sum(bool(row.get("refit")) for row in details), **chosen.stats}
        details += [{**row, "split": False} for row in skipped]
        if not stats["weights_split"]:  # asked for and did nothing: say why where the CLI prints it
            details.append({"warning": _nothing_split(skipped, len(groups)) + unreached_weights(model)})
        return PassResult(model, modified=bool(stats["weights_split"]), stats=stats, details=details)
