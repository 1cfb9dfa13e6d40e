"""Automatic mixed precision for static quantization, on the sensitivity ranking (``sensitivity.py``).

Search: the worst tensors are kept float (with every node that reads or writes them) in
growing prefixes of the ranking, 1, 2, 4, 8... until the goal is met: the smallest cosine
similarity between the float and quantized graph outputs reaches a floor, and/or top-1
accuracy against the calibration labels drops by at most a bound; a bisection between the
last two prefixes then finds the shortest prefix that meets it. Each step is one quantization of a
copy plus one ONNX Runtime run on the sample subset.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Iterable

import numpy as np
import onnx_ir as ir

from onnxslim.errors import DataError
from onnxslim.input_shapes import batch_axis_is_dynamic, split_batch
from onnxslim.passes.quantization.calibrate import run_batch, run_candidate
from onnxslim.passes.quantization.sensitivity import rank_tensors
from onnxslim.runtime.session import make_session

logger = logging.getLogger(__name__)

SHOWN = 20
"""Ranking rows reported in the details."""

Build = Callable[[frozenset], tuple[ir.Model, dict[str, tuple]]]
"""Float tensor names -> (quantized copy, {float tensor name: (scale, zero point)})."""


@dataclasses.dataclass(frozen=True)
class Goal:
    """What the mixed-precision search must reach; either or both bounds."""

    min_cosine: float | None = None
    """Smallest cosine similarity between float and quantized outputs."""
    max_accuracy_drop: float | None = None
    """Largest top-1 accuracy loss against the labels (0.01 = one point), float minus quantized."""
    per_part: bool = True
    """Score each part of a concatenated output on its own (``concat_parts``); False: whole outputs."""

    def margin(self, cosine: float, accuracy_drop: float | None) -> float:
        """>= 0 when every bound holds: the worst bound's slack."""
        margins = []
        if self.min_cosine is not None:
            margins.append(cosine - self.min_cosine)
        if self.max_accuracy_drop is not None:
            margins.append(self.max_accuracy_drop - accuracy_drop)
        return min(margins)


def search(model: ir.Model, build: Build, calibration: Iterable, *, goal: Goal, samples: int,
           accuracy_samples: int, refine: int = 0) -> tuple[frozenset, list[dict], FinalCheck]:
    """(tensor names to keep float, report rows, the check of the written model); ``build(names)``
    returns a quantized copy.

    The ranking uses the first ``samples`` calibration samples; the goal is checked on those,
    or on ``accuracy_samples`` labelled ones when there is an accuracy bound. ``refine``: the
    first that many ranked tensors are re-ordered by their measured effect on the outputs.
    """
    splittable = batch_axis_is_dynamic(model)
    feeds = subset(calibration, samples, splittable=splittable)
    quantized, params = build(frozenset())
    ranking = rank_tensors(model, params, feeds)
    order = [name for name, _ in ranking]
    labels = None
    if goal.max_accuracy_drop is not None:
        feeds, labels = labelled_subset(calibration, accuracy_samples, splittable=splittable)
    reference = run_outputs(model, feeds)
    scored = _Scorer(reference, labels, concat_parts(model) if goal.per_part else None)
    margins: dict[int, float] = {}

    def margin(count: int) -> float:
        if count not in margins:
            candidate = quantized if count == 0 else build(frozenset(order[:count]))[0]
            margins[count] = goal.margin(*scored(count, run_outputs(candidate, feeds, candidate=True)))
        return margins[count]

    gains = {}
    if refine and margin(0) < 0:
        order, gains = _refined(order, refine, lambda name: goal.margin(
            *scored(name, run_outputs(build(frozenset([name]))[0], feeds, candidate=True))) - margin(0))
    count = _shortest_prefix(margin, len(order), 0.0)
    keep = frozenset(order[:count])
    summary = {"target_cosine": goal.min_cosine, "cosine_per_output_part": goal.per_part,
               "max_accuracy_drop": goal.max_accuracy_drop,
               "samples": sum(_size(f) for f in feeds), "cosine_all_quantized": round(scored.cosine[0], 6),
               "cosine_final": round(scored.cosine[count], 6), "tensors_kept_float": count, "candidates": len(order),
               "evaluations": len(margins) + len(gains), "target_met": margin(count) >= 0}
    if labels is not None:
        summary.update({"float_accuracy": round(scored.float_accuracy, 6),
                        "accuracy_all_quantized": round(scored.accuracy[0], 6),
                        "accuracy_final": round(scored.accuracy[count], 6)})
    summary = {k: v for k, v in summary.items() if v is not None}
    rows = [{"mixed_precision": summary}]
    errors = dict(ranking)
    rows += [{"sensitivity_rank": i + 1, "tensor": name, "noise_to_signal": round(errors[name], 6),
              **({"output_gain": round(gains[name], 6)} if name in gains else {}), "kept_float": name in keep}
             for i, name in enumerate(order[:max(SHOWN, count)])]
    logger.info("mixed precision: %d of %d tensors kept float, output cosine %.5f -> %.5f",
                count, len(order), scored.cosine[0], scored.cosine[count])
    return keep, rows, FinalCheck(goal, scored, feeds, summary)


@dataclasses.dataclass
class FinalCheck:
    """Scores the model as written: the search's candidates have neither int8 embedding tables nor
    bias correction, which move the outputs after it (YOLOv8n reported cosine 0.99541, target met,
    for a written model at 0.99513). The report's ``*_final`` and ``target_met`` become the written
    model's; a miss the candidate did not have is a warning."""

    goal: Goal
    scored: _Scorer
    feeds: list
    summary: dict

    def __call__(self, final: ir.Model) -> list[dict]:
        cosine, drop = self.scored(-1, run_outputs(final, self.feeds, candidate=True))
        met_before = self.summary["target_met"]
        self.summary.update({"cosine_final": round(cosine, 6), "target_met": self.goal.margin(cosine, drop) >= 0})
        if drop is not None:
            self.summary["accuracy_final"] = round(self.scored.accuracy[-1], 6)
        if met_before and not self.summary["target_met"]:
            return [{"warning": f"mixed precision: the written model (with bias correction / int8 embeddings) "
                                f"misses the target: cosine {cosine:.6f}" + (f", accuracy drop {drop:.4f}" if drop is not None else "")
                                + "; raise the target a little, or turn those off"}]
        return []


def _refined(order: list[str], refine: int, gain: Callable[[str], float]) -> tuple[list[str], dict[str, float]]:
    """``order`` with its first ``refine`` names sorted by ``gain`` (the goal's margin gained by
    keeping that tensor alone float). Those that gain nothing alone keep their place among them:
    with many small noise sources, each matters only together with the others."""
    gains = {name: gain(name) for name in order[:refine]}
    return sorted(order[:refine], key=lambda n: -max(gains[n], 0.0)) + order[refine:], gains


class _Scorer:
    """Cosine (and top-1 accuracy drop, with labels) of each candidate's outputs, remembered per prefix."""

    def __init__(self, reference: dict[str, np.ndarray], labels: np.ndarray | None, parts: dict | None = None):
        self.reference, self.labels, self.parts = reference, labels, parts
        self.cosine: dict[int, float] = {}
        self.accuracy: dict[int, float] = {}
        self.float_accuracy = top1_accuracy(reference, labels) if labels is not None else 0.0

    def __call__(self, count: int, outputs: dict[str, np.ndarray]) -> tuple[float, float | None]:
        self.cosine[count] = output_cosine(self.reference, outputs, self.parts)
        if self.labels is None:
            return self.cosine[count], None
        self.accuracy[count] = top1_accuracy(outputs, self.labels)
        return self.cosine[count], self.float_accuracy - self.accuracy[count]


def top1_accuracy(outputs: dict[str, np.ndarray], labels: np.ndarray) -> float:
    """Top-1 accuracy of the first output shaped [samples, classes]."""
    for value in outputs.values():
        value = value.reshape(len(value), -1) if value.ndim else value
        if value.ndim == 2 and len(value) == len(labels) and value.shape[1] > 1:
            return float(np.mean(value.argmax(axis=1) == labels))
    raise DataError(f"--quantize-max-accuracy-drop: no model output is shaped [samples, classes] "
                    f"to compare with the {len(labels)} labels")


def labelled_subset(calibration: Iterable, samples: int, *, splittable: bool = True) -> tuple[list[dict], np.ndarray]:
    """The first ``samples`` calibration samples and their labels, cut as ``subset`` cuts (a
    DataError when there are none)."""
    feeds, labels, taken = [], [], 0
    for batch in calibration:
        batch_labels = getattr(batch, "labels", None)
        if batch_labels is None:
            raise DataError("--quantize-max-accuracy-drop needs labels in the calibration data "
                            "(a 'labels' array in the .npz, or one subfolder per class of images)")
        inputs = dict(batch.inputs)
        pieces = split_batch(inputs, samples - taken, splittable)
        feeds.append(inputs if pieces is None else pieces[0])
        taken_here = _size(feeds[-1])
        labels.append(np.asarray(batch_labels)[:taken_here] if pieces is not None else np.asarray(batch_labels))
        taken += taken_here
        if taken >= samples:
            break
    if not taken:
        raise DataError("calibration data has no samples")
    return feeds, np.concatenate(labels)


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


def output_cosine(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray],
                  parts: dict[str, tuple[int, list[int]]] | None = None, *, unscored: float = 1.0) -> float:
    """The smallest cosine similarity over the float outputs (each flattened over all samples);
    an integer or bool output (class ids, indices) counts as the fraction of its elements that are
    equal. ``unscored``: the result when no output can be scored (strings, sequences).

    An output listed in ``parts`` (see ``concat_parts``) is scored part by part.
    """
    cosines = []
    for name, expected in reference.items():
        if np.issubdtype(expected.dtype, np.integer) or expected.dtype == np.bool_:
            got = np.asarray(actual[name])
            cosines.append(float(np.mean(expected == got)) if got.shape == expected.shape and expected.size else 0.0)
            continue
        if not np.issubdtype(expected.dtype, np.floating):
            continue
        pieces = [(expected, actual[name])]
        if parts and name in parts and expected.ndim > parts[name][0]:
            axis, sizes = parts[name]
            cuts = np.cumsum(sizes)[:-1]
            pieces = list(zip(np.split(expected, cuts, axis=axis), np.split(actual[name], cuts, axis=axis)))
        cosines.extend(_cosine(e, a) for e, a in pieces)
    return min(cosines, default=unscored)


def _cosine(expected: np.ndarray, actual: np.ndarray) -> float:
    a, b = expected.reshape(-1).astype(np.float64), actual.reshape(-1).astype(np.float64)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b))


def concat_parts(model: ir.Model) -> dict[str, tuple[int, list[int]]]:
    """Float graph outputs made by a Concat whose inputs have static sizes on its axis: (axis, sizes).

    A detector concatenates box coordinates (hundreds of pixels) with class scores (0 to 1); one
    cosine over the whole output hardly sees the scores, so each part is scored on its own.
    """
    parts = {}
    for output in model.graph.outputs:
        node = output.producer()
        if node is None or node.op_type != "Concat" or output.shape is None:
            continue
        axis = node.attributes.get_int("axis", 0) % len(output.shape)
        sizes = [value.shape[axis] if value is not None and value.shape is not None else None for value in node.inputs]
        unknown = [i for i, size in enumerate(sizes) if not isinstance(size, int)]
        if len(unknown) == 1 and isinstance(output.shape[axis], int):  # the one part without a shape is the rest
            sizes[unknown[0]] = output.shape[axis] - sum(size for i, size in enumerate(sizes) if i != unknown[0])
        if len(sizes) > 1 and all(isinstance(size, int) and size > 0 for size in sizes):
            parts[output.name] = (axis, sizes)
    return parts


def subset(calibration: Iterable, samples: int, *, splittable: bool = True) -> list[dict]:
    """The first ``samples`` calibration samples, as plain feed dicts. The batch holding the last
    one is cut there when ``splittable`` (the model's inputs share a symbolic batch axis,
    ``batch_axis_is_dynamic``) and all its arrays share that length; else whole batches are taken
    (a fixed batch, or an input without the batch axis, would be refused cut)."""
    feeds, taken = [], 0
    for batch in calibration:
        inputs = dict(batch.inputs if hasattr(batch, "inputs") else batch)
        pieces = split_batch(inputs, samples - taken, splittable)
        feeds.append(inputs if pieces is None else pieces[0])
        taken += _size(feeds[-1])
        if taken >= samples:
            break
    return feeds


def _size(feeds: dict) -> int:
    """Samples in a batch: the first input's leading dimension (1 for a scalar input)."""
    first = next(iter(feeds.values()), None)
    return 0 if first is None else (len(first) if np.ndim(first) else 1)


def run_outputs(model: ir.Model, feeds: list[dict], *, candidate: bool = False) -> dict[str, np.ndarray]:
    """Every output of ``model`` over ``feeds``, batches joined on the leading axis.

    ``candidate``: ``model`` is a quantized copy and the float model already ran ``feeds``, so a
    failure is the pass's (``run_candidate``); else the user's model, and a failure is the data's (DataError)."""
    session = make_session(model)
    names = [o.name for o in session.get_outputs()]
    run = run_candidate if candidate else run_batch
    runs = [run(session, names, batch) for batch in feeds]
    return {n: np.concatenate([np.asarray(r[i]).reshape(np.shape(r[i]) or (1,)) for r in runs])
            for i, n in enumerate(names)}
