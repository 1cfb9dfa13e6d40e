"""Calibration activations, streamed: one ONNX Runtime session, one batch in memory at a time.

Runs of the user's model are ``run_batch`` (a batch it rejects is the data's fault: DataError, exit 2);
runs of a pruned copy are ``run_candidate`` (the original already ran that batch: the pass's fault, rolled back).
"""

from __future__ import annotations

from functools import partial
from typing import Iterable, Iterator, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.passes.pruning._layers import Layer
from onnxslim.runtime.data_runs import run_batch, run_candidate
from onnxslim.runtime.session import make_session


def stream_captures(model: ir.Model, names: Sequence[str], calibration: Iterable, *,
                    candidate: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Per calibration batch, {name: value} for the requested intermediate (or input/output) tensors.

    ``candidate``: ``model`` is a pruned copy whose original already ran each batch first."""
    inputs = {v.name for v in model.graph.inputs}
    outputs = {v.name for v in model.graph.outputs}
    extra = [n for n in dict.fromkeys(names) if n not in inputs and n not in outputs]
    wanted = [n for n in dict.fromkeys(names) if n not in inputs]
    session = make_session(model, extra_outputs=extra)
    run = partial(run_candidate, made="pruned", original="unpruned") if candidate else run_batch
    try:
        for batch in calibration:
            feeds = batch.inputs if hasattr(batch, "inputs") else batch
            values = dict(zip(wanted, run(session, wanted, feeds))) if wanted else {}
            values.update({n: feeds[n] for n in names if n in inputs})
            yield values
    finally:
        del session


def channel_energy(array: np.ndarray, axis: int) -> np.ndarray:
    """Sum of squares per index of ``axis`` (float64)."""
    moved = np.moveaxis(array.astype(np.float64, copy=False), axis, 0)
    return np.square(moved).reshape(moved.shape[0], -1).sum(axis=1)


def input_energies(model: ir.Model, layers: Sequence[Layer], calibration: Iterable) -> dict[str, np.ndarray]:
    """{layer name: per-input-channel sum of squares of the layer's data input over the calibration data}."""
    names = {layer.name: layer.node.inputs[0].name for layer in layers}
    totals: dict[str, np.ndarray] = {}
    for values in stream_captures(model, list(names.values()), calibration):
        for layer in layers:
            x = values[names[layer.name]]
            energy = channel_energy(x, 1 if layer.kind == "conv" else -1)
            totals[layer.name] = totals.get(layer.name, 0) + energy
    return totals


def row_scales(layer: Layer, energy: np.ndarray) -> np.ndarray:
    """[out, reduction] activation norms matching ``layer.rows()`` (Wanda's ||X_j|| per weight)."""
    rows = layer.rows()
    norms = np.sqrt(energy)
    if layer.kind != "conv":
        return np.broadcast_to(norms[None, :], rows.shape)
    w = layer.array()
    out, per_group, spatial = w.shape[0], w.shape[1], int(np.prod(w.shape[2:]))
    groups = layer.group
    scale = np.empty(rows.shape, dtype=np.float64)
    per_out = out // groups
    for g in range(groups):
        cols = np.repeat(norms[g * per_group:(g + 1) * per_group], spatial)
        scale[g * per_out:(g + 1) * per_out] = cols[None, :]
    return scale
