"""Structured channel pruning: remove whole output channels and the inputs that read them."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import PassResult
from onnxslim.core.stats import graph_stats
from onnxslim.passes.pruning._calib import channel_energy, stream_captures
from onnxslim.passes.pruning._channel_apply import apply_removal, kept_positions
from onnxslim.passes.pruning._channel_graph import ChannelGraph
from onnxslim.passes.pruning._channel_select import activation_scores, dependency_groups, magnitude_scores, select
from onnxslim.passes.pruning._common import PruneConfig, PrunePass, uses_activations
from onnxslim.passes.pruning._layers import find_layers, matches, plan_amounts
from onnxslim.passes.pruning._refit import RefitTarget, refit_layers


@dataclasses.dataclass(frozen=True)
class PruneChannelsConfig(PruneConfig):
    amount: float = 0.3
    """Fraction of the removable channels of each dependency group to remove."""
    round_to: int = 8
    """Keep a multiple of this many channels per group, never removing more than ``amount``: ONNX Runtime's
    blocked CPU convolutions are slower on odd counts (ResNet-mini, 30%: 45/90 channels ran 1.04x the
    original's time, 48/96 ran 0.72x). 1 disables the rounding."""

    def __post_init__(self):
        super().__post_init__()
        if self.round_to < 1:
            raise ValueError(f"round_to must be >= 1, got {self.round_to}")


class PruneChannels(PrunePass):
    """Remove the least important output channels of Conv/Gemm/MatMul layers, shrinking the tensors.

    Before: ``Conv(W[64, C]) -> BN -> Relu -> Conv(V[O, 64])``. After: ``Conv(W[45, C]) -> BN(45) ->
    Relu -> Conv(V[O, 45])``: the producer's rows, the per-channel parameters on the way (bias,
    BatchNormalization, depthwise Conv, per-channel Add/Mul constants) and the consumers' input
    columns go together. Channels coupled through residual Add/Mul, Concat, Split, depthwise and
    grouped Conv, and Flatten/Reshape into a Gemm form dependency groups that are pruned as one;
    channels that reach a graph output or an op the analysis does not understand are kept, and a
    group with no removable channel is reported with the reason. One amount holds per group: an
    override naming any member sets it. Importance: weight magnitude, or activation-weighted with
    calibration data; ``reconstruct`` refits the consumers by least squares (judged on held-out rows).
    """

    name = "prune-channels"
    Config = PruneChannelsConfig

    def call(self, model: ir.Model) -> PassResult:
        before = graph_stats(model)
        layers, details = find_layers(model)
        amounts, skipped = plan_amounts(layers, amount=self.config.amount, skip=self.config.skip,
                                        skip_first_last=False, overrides=self.config.amounts)
        first, last = edge_layers(layers, self.config)
        if last is not None:
            del amounts[last]
            skipped.append({"layer": last, "op": layers[-1].node.op_type, "skipped": "first or last layer"})
        graph = ChannelGraph(model, prunable=lambda layer: layer.name in amounts)
        scores = self._scores(model, graph)
        by_output = {out: amounts[layer.name] for out, layer in graph.producers.items()}
        groups, first_rows = spare_uncoupled_first(graph, dependency_groups(graph), first)
        explicit = {name: value for name, value in amounts.items() if matches(name, self.config.amounts)}
        removed, group_rows = select(graph, groups, scores, by_output, self.config.round_to, explicit)
        group_rows += first_rows
        kept = kept_positions(graph, removed)
        layer_rows = _layer_rows(graph, kept)
        stats = {"groups_pruned": sum(1 for r in group_rows if r.get("removed")),
                 "groups_skipped": sum(1 for r in group_rows if "skipped" in r),
                 "channels_removed": sum(r.get("removed", 0) for r in group_rows)}
        if not kept:
            return PassResult(model, modified=False, stats=stats, details=group_rows + details + skipped)
        reference = model.clone() if self.config.reconstruct else None
        apply_removal(graph, kept)
        ir.passes.common.RemoveUnusedNodesPass()(model)
        if reference is not None:
            refit = refit_layers(model, reference, _refit_targets(graph, kept), self.context.calibration,
                                 damping=self.config.damping, max_rows=self.config.max_rows)
            layer_rows += refit
            stats["layers_refit"] = sum(1 for r in refit if r["refit"] == "done")
        after = graph_stats(model)
        stats.update(params_removed=before.params - after.params, bytes_saved=before.param_bytes - after.param_bytes)
        return PassResult(model, modified=True, stats=stats, details=group_rows + layer_rows + details + skipped)

    def _scores(self, model: ir.Model, graph: ChannelGraph) -> dict[int, float]:
        if not graph.producers or not uses_activations(self.config, self.context):
            return magnitude_scores(graph)
        names = sorted({name for _, name in graph.consumers})
        energies: dict[str, np.ndarray] = {}
        for values in stream_captures(model, names, self.context.calibration):
            for name in names:
                energies[name] = energies.get(name, 0) + channel_energy(values[name], graph.tracks[name].axis)
        return activation_scores(graph, energies)


def edge_layers(layers, config: PruneChannelsConfig) -> tuple[str | None, str | None]:
    """Names of the first and last layers that ``skip_first_last`` protects (an override or --prune-first-last lifts it)."""
    if not config.skip_first_last or not layers:
        return None, None
    protect = lambda layer: None if matches(layer.name, config.amounts) or matches(layer.name, config.skip) else layer.name  # noqa: E731
    last = protect(layers[-1]) if len(layers) > 1 else None
    return protect(layers[0]), last


def spare_uncoupled_first(graph: ChannelGraph, groups, first: str | None):
    """Drops the first layer's dependency group when that layer is its only producer.

    The first layer's *input* channels are the network input and are never removed anyway. Its
    *output* channels are spared when they feed only its own consumers (a plain stem: few weights,
    much sensitivity). When residual Adds tie them to later layers, the group is the whole stage:
    sparing it would freeze every layer of that stage, so it is pruned like any other group (what
    Torch-Pruning does by default; NNCF's ``prune_first_conv=False`` freezes the stage instead).
    """
    if first is None:
        return groups, []
    kept, rows = [], []
    for names, roots in groups:
        layers = {graph.producers[n].name for n in names}
        if layers == {first}:
            rows.append({"group": [first], "channels": max(len(graph.tracks[n].units) for n in names),
                         "skipped": "first layer, not coupled to other layers"})
        else:
            kept.append((names, roots))
    return kept, rows


def _layer_rows(graph: ChannelGraph, kept: dict[str, np.ndarray]) -> list[dict]:
    rows: dict[str, dict] = {}
    for out, layer in graph.producers.items():
        if out in kept:
            rows.setdefault(layer.name, {"layer": layer.name, "op": layer.node.op_type})["out_channels"] = [
                len(graph.tracks[out].units), len(kept[out])]
    for layer, source in graph.consumers:
        if source in kept:
            rows.setdefault(layer.name, {"layer": layer.name, "op": layer.node.op_type})["in_channels"] = [
                len(graph.tracks[source].units), len(kept[source])]
    return list(rows.values())


def _refit_targets(graph: ChannelGraph, kept: dict[str, np.ndarray]) -> list[RefitTarget]:
    """Consumers that lost inputs and depthwise Convs that lost channels, in graph order; their surviving
    outputs are the targets (a depthwise refit absorbs part of the error of the layer feeding it)."""
    sliced = {layer.node.outputs[0].name for layer, source in graph.consumers if source in kept}
    sliced |= {edit.node.outputs[0].name for edit in graph.edits if edit.kind == "group" and edit.sources[0] in kept}
    order = [node.outputs[0].name for node in graph.model.graph if node.outputs and node.outputs[0].name in sliced]
    return [RefitTarget(name, kept_out=kept.get(name)) for name in order]
