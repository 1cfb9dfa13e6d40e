"""Output-aware refit of the low-rank factors, given the split model's own (perturbed) inputs.

The whitened factorization of each weight fits ``X_o U V ~= X_o W`` with ``X_o`` the ORIGINAL
model's activations; once earlier layers are split, a layer sees ``X_s != X_o`` and the errors
add up. After the ranks are chosen, each split layer is refit so that the split model's layer
output matches the original one: ``min ||X_s A - X_o W - (R_o - R_s)||`` over rank(A) <= r
(``factorize.refit``), with ``R`` the residual added to the layer's output where the graph has
one (``X @ W (+ bias) + R``: the layer then also cancels the error the residual stream carries),
from ``C_ss = X_s^T X_s``, ``C_so = X_s^T X_o`` and ``X_s^T (R_o - R_s)`` collected by streaming.
Layers with no split layer upstream see the original inputs and keep their factors. With a
downstream output metric M (``downstream.py``), the error is ``||(X_s A - target) M^(1/2)||``.

- ``sequential``: in topological stages (a stage holds the split layers whose inputs depend only
  on layers already refit; Q/K/V projections reading one activation share a stage), the model
  with the earlier stages' refit factors runs once per stage, so every layer is fitted to the
  inputs it will really see.
- ``oneshot``: ``X_s`` from the model with all initial factors, every layer refit once.

The original activations of the (few hundred) refit samples are kept in memory, as rows with
padding removed; the split model's are reduced to the products batch by batch. Given the
full-data ``C_oo`` (the whitening covariances), the few samples only estimate the shift:
``C_ss ~= C_oo + c (C_ss - C_oo)_samples`` (a control variate; the same for ``C_so``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import onnx
import onnx_ir as ir
from onnxslim.passes.lowrank import factorize
from onnxslim.passes.lowrank.calibration import lowrank_run, overridable_session
from onnxslim.passes.lowrank.data_split import inputs_of, row_weights
from onnxslim.passes.lowrank.factorize import Factorization
from onnxslim.passes.lowrank.sites import Group, Use, activation_rows
from onnxslim.runtime.data_runs import run_batch

logger = logging.getLogger(__name__)


def _key(use: Use) -> tuple:
    return use.activation.name, use.kind, use.node.attributes.get_int("transA", 0)


def _pairs(group: Group) -> set[tuple]:
    """(use key, residual name) of each use of ``group`` whose output a residual is added to."""
    return {(_key(use), r.name) for use in group.uses if (r := residual_of(use)) is not None}


class Activations:
    """One session: the model with the groups' weights overridable, their activations and the
    residuals added to their outputs as outputs."""

    def __init__(self, model: ir.Model, groups: list[Group], mask: str | None):
        proto = ir.serde.serialize_model(model)
        self.graph_inputs = {v.name for v in model.graph.inputs}
        self.uses = {_key(use): use for g in groups for use in g.uses}
        residuals = {name for g in groups for _, name in _pairs(g)}
        names = sorted(({key[0] for key in self.uses} | residuals) - self.graph_inputs)
        outputs = {o.name for o in proto.graph.output}
        proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in outputs)
        self.session = overridable_session(proto, groups)
        self.mask = mask

    def rows(self, batch, replaced: dict[str, np.ndarray], keys: Iterable[tuple], residuals: Iterable[str] = ()) -> dict:
        """Per use key: activation rows (K values each, padding rows dropped, float32); per
        ``("residual", name)``: a residual's rows (the last axis), padding rows dropped alike.
        Without ``replaced`` weights this is the model as given (a rejected batch is the data's fault)."""
        feeds = inputs_of(batch)
        keys, residuals = list(keys), list(residuals)
        wanted = sorted(({key[0] for key in keys} | set(residuals)) - self.graph_inputs)
        run = lowrank_run if replaced else run_batch
        values = {**feeds, **dict(zip(wanted, run(self.session, wanted, {**feeds, **replaced})))}
        out = {}
        for key in keys:
            use, value = self.uses[key], values[key[0]]
            weights = row_weights(value, feeds.get(self.mask)) if use.kind == "matmul_right" else None
            out[key] = _weighted(activation_rows(use, value), weights)
        for name in residuals:
            value = values[name]
            if np.ndim(value) >= 1:
                rows = np.reshape(value, (-1, np.shape(value)[-1]))
                out["residual", name] = _weighted(rows, row_weights(value, feeds.get(self.mask)))
        return out


def _weighted(rows: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    if weights is not None:
        keep = weights > 0
        rows = rows[keep] * np.sqrt(weights[keep])[:, None]
    return np.ascontiguousarray(rows, dtype=np.float32)


def residual_of(use: Use) -> ir.Value | None:
    """The tensor R in ``X @ W (+ constant bias) + R`` (a residual connection), else None."""
    if use.kind != "matmul_right":
        return None
    value = use.node.outputs[0]
    for _ in range(2):
        consumers = value.uses()
        if len(consumers) != 1 or consumers[0].node.op_type != "Add" or value.is_graph_output():
            return None
        add = consumers[0].node
        other = next((v for v in add.inputs if v is not value), None)
        if other is None:
            return None
        if ir.convenience.get_const_tensor(other) is None:
            return other
        value = add.outputs[0]
    return None


def stages(graph: ir.Graph, groups: list[Group], todo: list[int]) -> list[list[int]]:
    """``todo`` (group indices) in topological stages: a group comes after every group upstream of its inputs."""
    owner = {id(use.node): i for i, g in enumerate(groups) for use in g.uses}
    upstream = {i: _upstream_groups(_inputs(groups[i]), owner) for i in todo}
    pending, done, out = list(todo), set(range(len(groups))) - set(todo), []
    while pending:
        ready = [i for i in pending if upstream[i] - {i} <= done]
        if not ready:  # a cycle through the graph (cannot happen in a valid graph): one last stage
            ready = pending
        out.append(ready)
        done |= set(ready)
        pending = [i for i in pending if i not in ready]
    return out


def _inputs(group: Group) -> list[ir.Value]:
    """What a group's refit reads: its activations and the residuals added to its outputs."""
    return [use.activation for use in group.uses] + [r for use in group.uses if (r := residual_of(use)) is not None]


def _upstream_groups(values: list[ir.Value], owner: dict[int, int]) -> set[int]:
    seen, found, stack = set(), set(), list(values)
    while stack:
        node = stack.pop().producer()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if id(node) in owner:
            found.add(owner[id(node)])
        stack.extend(v for v in node.inputs if v is not None)
    return found


def refit(model: ir.Model, groups: list[Group], initial: list[Factorization | None], ranks: list[int | None],
          batches: list, *, mask: str | None, damping: float, mode: str, covariances: dict[str, np.ndarray] | None = None,
          residual: bool = True, metrics: dict[str, np.ndarray] | None = None,
          metric_damping: float = 0.0) -> list[Factorization | None]:
    """Refit factorizations of the split groups (the initial ones where nothing split is upstream), in
    ``mode`` order; ``metrics`` (per weight name) weight a layer's output error as in its factorization."""
    split = {i for i, r in enumerate(ranks) if r is not None}
    owner = {id(use.node): i for i, g in enumerate(groups) for use in g.uses}
    todo = [i for i in sorted(split) if _upstream_groups(_inputs(groups[i]), owner) & split - {i}]
    out = list(initial)
    if not todo or not batches:  # layers with no split layer upstream see the original inputs: kept
        return out
    session = Activations(model, groups, mask)
    keys = {_key(use) for i in todo for use in groups[i].uses}
    residuals = {name for i in todo for _, name in _pairs(groups[i])} if residual else set()
    reference = [session.rows(batch, {}, keys, residuals) for batch in batches]
    fixed = split if mode == "oneshot" else split - set(todo)
    approx = {groups[i].name: _stored(groups[i], initial[i], ranks[i]) for i in fixed}
    for stage in (stages(model.graph, groups, todo) if mode == "sequential" else [todo]):
        pairs = {pair for i in stage for pair in _pairs(groups[i])} if residual else set()
        sums = _products(session, batches, reference, approx, {_key(u) for i in stage for u in groups[i].uses}, pairs)
        for i in stage:
            out[i] = _fit(groups[i], sums, covariances, damping, (metrics or {}).get(groups[i].name), metric_damping)
        if mode == "sequential":
            approx.update({groups[i].name: _stored(groups[i], out[i], ranks[i]) for i in stage})
        logger.debug("refit stage of %d layers: %s", len(stage), [groups[i].name for i in stage])
    return out


def _fit(group: Group, sums: dict[str, dict], covariances: dict | None, damping: float,
         metric: np.ndarray | None = None, metric_damping: float = 0.0) -> Factorization:
    """``factorize.refit`` for one group from its uses' sums; with the full-data ``covariances``,
    ``C_ss`` and ``C_so`` are the full ``C_oo`` plus the refit samples' shift (a control variate:
    the few samples then only estimate how the split moved the statistics, not the statistics)."""
    uses = {_key(u) for u in group.uses}
    ss, so, oo = (sum(sums[name][k] for k in uses) for name in ("ss", "so", "oo"))
    moved = [sums["shift"].get(p) for p in _pairs(group)]
    shift = sum((m for m in moved if m is not None and m.shape == group.shape), np.zeros(group.shape))
    scale = 1.0
    if covariances is not None and group.name in covariances:
        scale = float(np.trace(covariances[group.name])) / max(float(np.trace(oo)), 1e-30)
        ss, so = (covariances[group.name] + scale * (c - oo) for c in (ss, so))
    return factorize.refit(group.matrix, ss, so, damping=damping, shift=scale * shift, metric=metric,
                           metric_damping=metric_damping)


def _products(session: Activations, batches: list, reference: list, approx: dict, keys: set, pairs: set) -> dict[str, dict]:
    """Per use key: ``X_s^T X_s``, ``X_s^T X_o``, ``X_o^T X_o``; per (use key, residual) pair:
    ``X_s^T (R_o - R_s)`` ("shift"; where the residual's rows line up with the activation's and
    have the weight's N values), over ``batches``."""
    sums: dict[str, dict] = {name: {} for name in ("ss", "so", "oo", "shift")}

    def add(name, key, value):
        sums[name][key] = sums[name].get(key, 0.0) + value.astype(np.float64)

    for batch, original in zip(batches, reference):
        split = session.rows(batch, approx, keys, {name for _, name in pairs})
        for key in keys:
            xs, xo = split[key], original[key]
            add("ss", key, xs.T @ xs)
            add("so", key, xs.T @ xo)
            add("oo", key, xo.T @ xo)
        for key, name in pairs:
            xs, moved = split[key], original.get(("residual", name))
            if moved is not None and ("residual", name) in split and moved.shape[0] == xs.shape[0]:
                moved = moved - split["residual", name]
                add("shift", (key, name), xs.T @ moved)
    return sums


def _stored(group: Group, factorization: Factorization, rank: int) -> np.ndarray:
    u, v = factorization.factors(rank, np.float64)
    return group.to_stored(u @ v)
