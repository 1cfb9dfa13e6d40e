"""Sensitivity ranking and automatic mixed precision for static quantization.

Ranking (one float run over a few calibration samples, no session per candidate): every
activation the quantized model would round is captured from the float model, fake-quantized
in numpy with the scale and zero point the pass chose, and scored by its noise-to-signal
ratio ``||fq(x) - x|| / ||x||`` (streamed over batches: memory stays one batch).

Search: the worst tensors are kept float (with every node that reads or writes them) in
growing prefixes of the ranking, 1, 2, 4, 8... until the smallest cosine similarity between
the float and quantized graph outputs reaches the target; a bisection between the last two
prefixes then finds the shortest prefix that meets it. Each step is one quantization of a
copy plus one ONNX Runtime run on the sample subset.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np
import onnx_ir as ir

from onnxslim.passes.quantization.plan import feeds_only_silu
from onnxslim.passes.quantization.ranges import silu
from onnxslim.runtime.session import make_session, model_bytes

logger = logging.getLogger(__name__)

SHOWN = 20
"""Ranking rows reported in the details."""

Build = Callable[[frozenset], tuple[ir.Model, dict[str, tuple]]]
"""Float tensor names -> (quantized copy, {float tensor name: (scale, zero point)})."""


def search(model: ir.Model, build: Build, calibration: Iterable, *, target: float,
           samples: int) -> tuple[frozenset, list[dict]]:
    """(tensor names to keep float, report rows); ``build(names)`` returns a quantized copy."""
    feeds = subset(calibration, samples)
    quantized, params = build(frozenset())
    ranking = rank_tensors(model, params, feeds)
    order = [name for name, _ in ranking]
    reference = _outputs(model, feeds)
    scores: dict[int, float] = {}

    def score(count: int) -> float:
        if count not in scores:
            candidate = quantized if count == 0 else build(frozenset(order[:count]))[0]
            scores[count] = output_cosine(reference, _outputs(candidate, feeds))
        return scores[count]

    count = _shortest_prefix(score, len(order), target)
    keep = frozenset(order[:count])
    rows = [{"mixed_precision": {"target_cosine": target, "samples": sum(_size(f) for f in feeds),
                                 "cosine_all_quantized": round(score(0), 6), "cosine_final": round(score(count), 6),
                                 "tensors_kept_float": count, "candidates": len(order), "evaluations": len(scores),
                                 "target_met": score(count) >= target}}]
    rows += [{"sensitivity_rank": i + 1, "tensor": name, "noise_to_signal": round(error, 6), "kept_float": name in keep}
             for i, (name, error) in enumerate(ranking[:max(SHOWN, count)])]
    logger.info("mixed precision: %d of %d tensors kept float, output cosine %.5f -> %.5f (target %s)",
                count, len(order), score(0), score(count), target)
    return keep, rows


def _shortest_prefix(score: Callable[[int], float], total: int, target: float) -> int:
    """Smallest ``k`` with ``score(k) >= target`` along a doubling then bisecting search (``total`` if none)."""
    if score(0) >= target:
        return 0
    low, high = 0, 1
    while score(min(high, total)) < target:
        if high >= total:
            return total
        low, high = high, high * 2
    high = min(high, total)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if score(middle) < target else (low, middle)
    return high


def rank_tensors(model: ir.Model, params: dict[str, tuple], feeds: list[dict]) -> list[tuple[str, float]]:
    """Quantized tensors by noise-to-signal ratio of their own rounding and clipping, worst first.

    A tensor read only by SiLU is scored after SiLU (its clipped negative tail is invisible there).
    """
    inputs = {v.name for v in model.graph.inputs}
    names = [n for n in params if n not in inputs]
    silu_fed = {v.name for node in model.graph for v in node.outputs if v.name in params and feeds_only_silu(v)}
    session = make_session(model_bytes(model, [n for n in names if n not in {v.name for v in model.graph.outputs}]))
    noise = dict.fromkeys(params, 0.0)
    signal = dict.fromkeys(params, 0.0)
    for batch in feeds:
        values = dict(zip(names, session.run(names, batch)))
        values.update({n: batch[n] for n in params if n in inputs})
        for name, value in values.items():
            value = np.asarray(value, np.float32)
            rounded = fake_quantize(value, *params[name])
            if name in silu_fed:  # what the next layer sees: SiLU hides the clipped negative tail
                value, rounded = silu(value), silu(rounded)
            noise[name] += float(np.sum((rounded - value) ** 2))
            signal[name] += float(np.sum(value.astype(np.float64) ** 2))
    ranking = [(n, float(np.sqrt(noise[n] / signal[n])) if signal[n] > 0 else 0.0) for n in params]
    return sorted(ranking, key=lambda item: -item[1])


def fake_quantize(value: np.ndarray, scale, zero) -> np.ndarray:
    """QuantizeLinear then DequantizeLinear, as ONNX defines them (round half to even, saturate)."""
    info = np.iinfo(np.asarray(zero).dtype)
    zero = float(zero)
    q = np.clip(np.round(value / np.float32(scale)) + zero, info.min, info.max)
    return ((q - zero) * np.float32(scale)).astype(np.float32)


def output_cosine(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> float:
    """The smallest cosine similarity over the float outputs (each flattened over all samples)."""
    cosines = []
    for name, expected in reference.items():
        if not np.issubdtype(expected.dtype, np.floating):
            continue
        a, b = expected.reshape(-1).astype(np.float64), actual[name].reshape(-1).astype(np.float64)
        norm = np.linalg.norm(a) * np.linalg.norm(b)
        cosines.append(float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b)))
    return min(cosines, default=1.0)


def subset(calibration: Iterable, samples: int) -> list[dict]:
    """The first ``samples`` calibration samples, as plain feed dicts (batches cut to fit)."""
    feeds, taken = [], 0
    for batch in calibration:
        inputs = dict(batch.inputs if hasattr(batch, "inputs") else batch)
        size = _size(inputs)
        if size > samples - taken:
            inputs = {k: v[:samples - taken] if np.ndim(v) else v for k, v in inputs.items()}
        feeds.append(inputs)
        taken += min(size, samples - taken)
        if taken >= samples:
            break
    return feeds


def _size(feeds: dict) -> int:
    """Samples in a batch: the first input's leading dimension (1 for a scalar input)."""
    first = next(iter(feeds.values()), None)
    return 0 if first is None else (len(first) if np.ndim(first) else 1)


def _outputs(model: ir.Model, feeds: list[dict]) -> dict[str, np.ndarray]:
    session = make_session(model_bytes(model))
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(names, batch) for batch in feeds]
    return {n: np.concatenate([np.asarray(r[i]).reshape(len(r[i]) if np.ndim(r[i]) else 1, -1) for r in runs])
            for i, n in enumerate(names)}
