"""The flow shared by the weight-masking passes (magnitude, N:M): score, mask, store, refit."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import PassContext, PassResult
from onnxslim.passes.pruning._calib import input_energies, row_scales
from onnxslim.passes.pruning._common import PruneConfig, sparsity_row, sparsity_stats, uses_activations
from onnxslim.passes.pruning._layers import Layer, find_layers, plan_amounts, replace_weight
from onnxslim.passes.pruning._refit import RefitTarget, refit_layers

MaskFn = Callable[[dict[str, np.ndarray], dict[str, float]], tuple[dict[str, np.ndarray], dict[str, str]]]
"""(scores per layer as [out, reduction], amount per layer) -> (keep masks, {layer: why it was skipped})."""


def score_layers(model: ir.Model, layers: list[Layer], config: PruneConfig, context: PassContext) -> dict[str, np.ndarray]:
    """|W| per weight, times the norm of its input activation (Wanda) when activations are used."""
    scores = {layer.name: np.abs(layer.rows().astype(np.float64)) for layer in layers}
    if layers and uses_activations(config, context):
        energies = input_energies(model, layers, context.calibration)
        for layer in layers:
            scores[layer.name] = scores[layer.name] * row_scales(layer, energies[layer.name])
    return scores


def mask_and_refit(model: ir.Model, config: PruneConfig, context: PassContext, make_masks: MaskFn, *,
                   target: float | None = None) -> PassResult:
    """Masks, stores and (with ``reconstruct``) refits the planned layers.

    ``target``: the sparsity every pruned layer aims at when it does not follow the amounts (N:M:
    ``1 - n/m``), reported as each layer's ``target``; None: the layer's amount."""
    layers, details = find_layers(model)
    amounts, skipped = plan_amounts(layers, amount=config.amount, skip=config.skip,
                                    skip_first_last=config.skip_first_last, overrides=config.amounts)
    details += skipped
    targets = [layer for layer in layers if layer.name in amounts]
    masks, reasons = make_masks(score_layers(model, targets, config, context), amounts)
    details += [{"layer": name, "skipped": why} for name, why in reasons.items()]
    reference = model.clone() if config.reconstruct else None
    rows, changed = [], []
    for layer in (t for t in targets if t.name in masks):
        before = layer.array()
        after = layer.from_rows(np.where(masks[layer.name], layer.rows(), 0), before.shape).astype(before.dtype)
        if not np.array_equal(after, before):
            replace_weight(layer.weight, after)
            changed.append(layer)
        goal = amounts[layer.name] if target is None else target
        rows.append(sparsity_row(layer.name, layer.node.op_type, before, after, goal))
    stats = sparsity_stats(rows + [r for r in details if "skipped" in r])
    if reference is not None and changed:
        refit = refit_layers(model, reference, [RefitTarget(l.node.outputs[0].name, masked=True) for l in changed],
                             context.calibration, damping=config.damping, max_rows=config.max_rows)
        _merge_refit(rows, refit)
        stats["layers_refit"] = sum(1 for r in refit if r["refit"] == "done")
    return PassResult(model, modified=bool(changed), stats=stats, details=rows + details)


def _merge_refit(rows: list[dict], refit: list[dict]) -> None:
    by_layer = {r["layer"]: r for r in rows}
    for entry in refit:
        row = by_layer.get(entry["layer"])
        if row is not None:
            row.update({k: v for k, v in entry.items() if k != "layer"})
        else:
            rows.append(entry)


def lowest_mask(scores: np.ndarray, count: int) -> np.ndarray:
    """Keep-mask with the ``count`` lowest scores removed (ties broken by position)."""
    keep = np.ones(scores.size, dtype=bool)
    if count > 0:
        keep[np.argsort(scores, axis=None, kind="stable")[:count]] = False
    return keep.reshape(scores.shape)
