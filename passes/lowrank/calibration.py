"""Calibration statistics for low-rank splitting, collected with ONNX Runtime.

``input_covariances`` streams the calibration batches once and keeps only ``X^T X`` per
weight (K x K), never the activations themselves. ``Probe`` runs the model with chosen
weights swapped for their low-rank approximations (the weights become overridable inputs of
one session), to measure each layer's sensitivity and the output cosine of a whole split.

Runs of the model as given are ``run_batch`` (a batch it rejects is the data's fault: DataError, exit 2);
runs with replaced weights are ``run_candidate`` (the model as given ran that batch: the pass's fault).
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Mapping

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxslim.runtime import make_session
from onnxslim.runtime.data_runs import run_batch, run_candidate
from onnxslim.passes.lowrank.data_split import inputs_of, row_weights, weighted_gram
from onnxslim.passes.lowrank.sites import Group, activation_rows


_inputs = inputs_of


def tapped_batches(model: ir.Model, names: Iterable[str], batches: Iterable) -> Iterator[tuple[dict, dict]]:
    """Per batch, ``(feeds, values)``: ``values`` holds the feeds and the tensors ``names`` (intermediate
    ones fetched as extra outputs of one session)."""
    graph_inputs = {v.name for v in model.graph.inputs}
    outputs = {v.name for v in model.graph.outputs}
    wanted = sorted(set(names) - graph_inputs)
    session = make_session(model, extra_outputs=[n for n in wanted if n not in outputs])
    for batch in batches:
        feeds = inputs_of(batch)
        yield feeds, {**feeds, **dict(zip(wanted, run_batch(session, wanted, feeds)))}


def input_covariances(model: ir.Model, groups: list[Group], batches: Iterable, *,
                      mask: str | None = None) -> dict[str, np.ndarray]:
    """``X^T X`` (K x K, float64) over all calibration rows, per group, summed over its uses.

    With ``mask`` (a graph input, e.g. ``attention_mask``), rows of ``[batch, seq, K]``
    activations are weighted by it: padding rows (mask 0) do not count. Uses that read the same
    activation the same way (Q/K/V projections) share one product per batch.
    """
    sums = {g.name: np.zeros((g.shape[0], g.shape[0])) for g in groups}
    for feeds, values in tapped_batches(model, {use.activation.name for g in groups for use in g.uses}, batches):
        grams: dict[tuple, np.ndarray] = {}
        for group in groups:
            for use in group.uses:
                key = (use.activation.name, use.kind, use.node.attributes.get_int("transA", 0))
                if key not in grams:
                    value = values[use.activation.name]
                    weights = row_weights(value, feeds.get(mask)) if use.kind == "matmul_right" else None
                    grams[key] = weighted_gram(activation_rows(use, value), weights)
                sums[group.name] += grams[key]
    return sums


def overridable_session(proto: onnx.ModelProto, groups: list[Group]) -> ort.InferenceSession:
    """A CPU session on ``proto`` in which each group's initializer weight is also a graph input
    (fed: the replacement; not fed: the initializer)."""
    for group in groups:
        if group.weight.is_initializer():
            dtype = onnx.helper.np_dtype_to_tensor_dtype(group.array.dtype)
            proto.graph.input.append(onnx.helper.make_tensor_value_info(group.name, dtype, group.array.shape))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


class Probe:
    """One session over the calibration data in which the groups' weights can be replaced."""

    def __init__(self, model: ir.Model, groups: list[Group], batches: Iterable):
        self.overridable = {g.name for g in groups if g.weight.is_initializer()}
        self.session = overridable_session(ir.serde.serialize_model(model), groups)
        self.batches = batches
        self.names = [o.name for o in model.graph.outputs]
        self.reference = [run_batch(self.session, self.names, _inputs(b)) for b in batches]

    def cosine(self, replaced: Mapping[str, np.ndarray]) -> float:
        """Mean cosine similarity, per sample and float output, of the model with ``replaced`` weights vs as-is."""
        return self._scores(replaced)[0]

    def floor_score(self, replaced: Mapping[str, np.ndarray]) -> float:
        """The lower of the mean cosine and the cosine each float output's SNR over the samples
        stands for, ``1 - 10^(-SNR / 10) / 2``: validation's equivalence of its lossy floors (cosine
        0.99, 17 dB). A split that keeps this score at 0.99 passes both; the mean cosine alone
        let a split through at 0.99001 whose output read 16.9 dB, and the default validation failed."""
        cosine, snrs = self._scores(replaced)
        return min([cosine, *(1.0 - 10 ** (-snr / 10) / 2 for snr in snrs)])

    def _scores(self, replaced: Mapping[str, np.ndarray]) -> tuple[float, list[float]]:
        """(mean cosine per sample and float output, SNR in dB per float output over all samples)."""
        extra = {k: v for k, v in replaced.items() if k in self.overridable}
        scores, signal, noise = [], {}, {}
        for batch, expected in zip(self.batches, self.reference):
            actual = lowrank_run(self.session, self.names, {**_inputs(batch), **extra})
            for index, (e, a) in enumerate(zip(expected, actual)):
                if np.issubdtype(e.dtype, np.floating):
                    scores.append(_cosines(e, a))
                    e, a = e.astype(np.float64), a.astype(np.float64)
                    signal[index] = signal.get(index, 0.0) + float(np.sum(e * e))
                    noise[index] = noise.get(index, 0.0) + float(np.sum((e - a) ** 2))
        snrs = [10 * np.log10(signal[i] / noise[i]) if noise[i] > 0 and signal[i] > 0 else math.inf for i in signal]
        return (float(np.mean(np.concatenate(scores))) if scores else 1.0), snrs


def lowrank_run(session: ort.InferenceSession, names: list[str] | None, feeds) -> list:
    """``run_candidate`` of the model with some weights replaced by their low-rank approximations."""
    return run_candidate(session, names, feeds, made="low-rank", original="original")


def _cosines(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    rows = expected.shape[0] if expected.ndim >= 2 else 1
    e = expected.reshape(rows, -1).astype(np.float64)
    a = actual.reshape(rows, -1).astype(np.float64)
    norms = np.linalg.norm(e, axis=1) * np.linalg.norm(a, axis=1)
    dots = np.sum(e * a, axis=1)
    return np.where(norms > 0, dots / np.maximum(norms, 1e-30), 1.0)
