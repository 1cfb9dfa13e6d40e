"""Calibration data for low-rank splitting: a fit part and a held-out check part, and row masks.

The covariances that whitening uses are fitted on one part of the calibration samples; the
cosine measurements that choose ranks (per-layer sensitivity, the cosine floor) run on the
other, so a choice that overfits the fitted statistics shows up as a lower cosine instead of
passing unnoticed. Sample ``i`` (counted over all batches, axis 0) is held out when
``i % every == every - 1``, with ``every`` the larger of ``1 / holdout`` and ``total / limit``:
the held-out samples are spread over the whole calibration set (a set made of several sources
is checked on all of them), at most ``limit`` of them; the rest are fitted.

A model that takes only whole batches (a batch size fixed by the export or an ``--input-shape``
pin, inputs without the batch axis, scalars: ``splittable`` False, from
``input_shapes.batch_axis_is_dynamic``) is held out, taken and spread by whole batches, never cut
or re-joined: cut batches were refused by the model ("Got: 25 Expected: 1"), and a table input
``t[16, 16]`` was sliced whenever a batch happened to hold 16 samples.

Padding rows: a 2-D graph input named like ``*mask*`` (``attention_mask``) weights the rows of
3-D activations ``[batch, seq, K]`` by its value, so padding tokens do not enter ``X^T X``;
``by_length`` sorts the held-out samples by their mask length and cuts each batch's trailing
all-padding columns, so the many cosine checks do not compute padding.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np
import onnx_ir as ir

from onnxslim.data.readers import sample_count

_MAX_CHECK_BATCH = 32
_MIN_CHECK = 2
"""With fewer held-out samples than this, the check runs on the fitted data (tiny calibration sets)."""


def inputs_of(batch) -> dict[str, np.ndarray]:
    return dict(batch.inputs) if hasattr(batch, "inputs") else dict(batch)


def _samples(feeds: dict[str, np.ndarray]) -> int | None:
    """Samples along axis 0 when every input agrees on it, else None (the batch is not split)."""
    sizes = {np.shape(v)[0] for v in feeds.values() if np.ndim(v) >= 1}
    return sizes.pop() if len(sizes) == 1 else None


class FitPart:
    """Re-iterable: the calibration batches without their held-out samples."""

    def __init__(self, batches: Iterable, every: int, limit: int):
        self.batches, self.every, self.limit = batches, every, limit

    def held(self, start: int, count: int) -> np.ndarray:
        index = np.arange(start, start + count)
        return (index % self.every == self.every - 1) & (index // self.every < self.limit)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        start = 0
        for batch in self.batches:
            feeds = inputs_of(batch)
            count = _samples(feeds)
            if count is None:
                yield feeds
                continue
            keep = ~self.held(start, count)
            start += count
            if keep.all():
                yield feeds
            elif keep.any():
                yield {k: v[keep] if np.ndim(v) >= 1 else v for k, v in feeds.items()}


class WholeFitPart:
    """``FitPart`` for models that take only whole batches: every ``every``-th batch is held out."""

    def __init__(self, batches: Iterable, every: int, held: set[int]):
        self.batches, self.every, self.held = batches, every, held

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for index, batch in enumerate(self.batches):
            if index not in self.held:
                yield inputs_of(batch)


def _split_whole(batches: Iterable, holdout: float, limit: int) -> tuple[Iterable, list[dict[str, np.ndarray]]]:
    every, held, check, total, index = max(2, round(1 / holdout)), set(), [], 0, -1
    for index, batch in enumerate(batches):
        if index % every == every - 1 and total < limit:
            held.add(index)
            check.append(inputs_of(batch))
            total += sample_count(batch)
    if total >= _MIN_CHECK and len(held) < index + 1:
        return WholeFitPart(batches, every, held), check
    return batches, take(batches, limit, splittable=False)


def split(batches: Iterable, holdout: float, limit: int, *,
          splittable: bool = True) -> tuple[Iterable, list[dict[str, np.ndarray]]]:
    """(fit part, check batches held in memory). ``holdout`` 0, or too little data: the check is
    the first ``limit`` samples of the fitted data itself. ``splittable`` False: by whole batches."""
    if holdout > 0 and not splittable:
        return _split_whole(batches, holdout, limit)
    if holdout > 0:
        total = sum(_samples(inputs_of(b)) or 0 for b in batches)
        fit = FitPart(batches, max(2, round(1 / holdout), math.ceil(total / limit)), limit)
        start, parts = 0, []
        for batch in batches:
            feeds = inputs_of(batch)
            count = _samples(feeds)
            if count is not None:
                held = fit.held(start, count)
                start += count
                if held.any():
                    parts.append({k: v[held] if np.ndim(v) >= 1 else v for k, v in feeds.items()})
        check = _rebatch(parts)
        if sum(_samples(b) or 1 for b in check) >= _MIN_CHECK:
            return fit, check
    return batches, take(batches, limit)


def take(batches: Iterable, limit: int, *, splittable: bool = True) -> list[dict[str, np.ndarray]]:
    """The first ``limit`` samples, in batches of at most 32 (``splittable`` False: the first whole
    batches holding them)."""
    if not splittable:
        parts, total = [], 0
        for batch in batches:
            if total >= limit:
                break
            parts.append(inputs_of(batch))
            total += sample_count(batch)
        return parts
    parts, total = [], 0
    for batch in batches:
        feeds = inputs_of(batch)
        count = _samples(feeds) or 1
        if total + count > limit and count > 1 and _samples(feeds):
            feeds = {k: v[:limit - total] if np.ndim(v) >= 1 else v for k, v in feeds.items()}
        parts.append(feeds)
        total += _samples(feeds) or 1
        if total >= limit:
            break
    return _rebatch(parts)


def spread(batches: Iterable, limit: int, *, splittable: bool = True) -> list[dict[str, np.ndarray]]:
    """At most ``limit`` samples taken at an even stride over all of ``batches`` (every source of a
    calibration set made of several), in batches of at most 32; batches without a common axis 0
    are kept whole (``splittable`` False: whole batches at an even stride)."""
    if not splittable:
        counts = [sample_count(b) for b in batches]
        every = max(1, math.ceil(sum(counts) / max(limit, 1)))
        chosen, total = [], 0
        for index, batch in enumerate(batches):
            if index % every == 0 and total < limit:
                chosen.append(inputs_of(batch))
                total += counts[index]
        return chosen
    total = sum(_samples(inputs_of(b)) or 0 for b in batches)
    every, start, parts = max(1, math.ceil(total / max(limit, 1))), 0, []
    for batch in batches:
        feeds = inputs_of(batch)
        count = _samples(feeds)
        if count is None:
            parts.append(feeds)
            continue
        keep = (np.arange(start, start + count) % every == 0) & (np.arange(start, start + count) // every < limit)
        start += count
        if keep.any():
            parts.append({k: v[keep] if np.ndim(v) >= 1 else v for k, v in feeds.items()})
    return _rebatch(parts)


def _rebatch(parts: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Joins consecutive slices with the same shapes into batches of at most 32 samples."""
    out: list[dict[str, np.ndarray]] = []
    pending: list[dict[str, np.ndarray]] = []

    def flush():
        if pending:
            out.append({k: np.concatenate([p[k] for p in pending]) for k in pending[0]})
            pending.clear()

    for part in parts:
        same = pending and all(np.shape(part[k])[1:] == np.shape(pending[0][k])[1:] for k in part) \
            and set(part) == set(pending[0]) and all(np.ndim(v) >= 1 for v in part.values())
        if not same or sum(_samples(p) or 1 for p in pending) + (_samples(part) or 1) > _MAX_CHECK_BATCH:
            flush()
        if all(np.ndim(v) >= 1 for v in part.values()) and _samples(part) is not None:
            pending.append(part)
        else:
            out.append(part)
    flush()
    return out


def mask_input(graph: ir.Graph, setting: str | None) -> str | None:
    """The graph input that marks padding rows: ``setting`` itself, or for "auto" a 2-D input
    whose name contains "mask"; None when there is none or ``setting`` is None / "none"."""
    names = {v.name: v for v in graph.inputs}
    if setting is None or setting.lower() in ("", "none"):
        return None
    if setting != "auto":
        return setting if setting in names else None
    for name, value in names.items():
        shape = value.shape
        if "mask" in (name or "").lower() and shape is not None and len(shape) == 2:
            return name
    return None


def row_weights(value: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """Per-row weights of a ``[batch, seq, K]`` activation from a ``[batch, seq]`` mask, else None."""
    if mask is None or np.ndim(value) != 3 or tuple(np.shape(value)[:2]) != tuple(np.shape(mask)):
        return None
    weights = np.asarray(mask, dtype=np.float64).reshape(-1)
    return np.clip(weights, 0.0, None)


def weighted_gram(rows: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """``X^T diag(w) X`` in float64, skipping zero-weight rows (products in float32 for speed)."""
    if weights is not None:
        keep = weights > 0
        rows = rows[keep] * np.sqrt(weights[keep])[:, None]
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return (rows.T @ rows).astype(np.float64)


def by_length(batches: list[dict[str, np.ndarray]], mask: str | None, *,
              splittable: bool = True) -> list[dict[str, np.ndarray]]:
    """The samples sorted by the length of ``mask`` (a 2-D ``[batch, seq]`` input), re-batched,
    each batch cut after its last non-padding column. Every input of shape ``[batch, seq, ...]``
    is cut alike; only trailing columns that are padding in every sample of the batch go, so a
    model that masks its padding computes the same per-sample result. Unchanged without ``mask``
    or when a batch lacks it."""
    if mask is None or not splittable or not batches or any(np.ndim(b.get(mask)) != 2 for b in batches) \
            or any(_samples(b) is None for b in batches) or len({tuple(sorted(b)) for b in batches}) > 1:
        return batches
    seq = {np.shape(b[mask])[1] for b in batches}
    if len(seq) > 1:
        return batches
    joined = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    lengths = _lengths(joined[mask])
    order = np.argsort(lengths, kind="stable")
    out = []
    for start in range(0, len(order), _MAX_CHECK_BATCH):
        index = order[start:start + _MAX_CHECK_BATCH]
        keep = max(int(lengths[index].max()), 1)
        out.append({k: _cut(v[index], keep, joined[mask].shape) for k, v in joined.items()})
    return out


def _lengths(mask: np.ndarray) -> np.ndarray:
    """Per row: one past the last non-zero column (0 for an all-zero row)."""
    nonzero = np.asarray(mask) != 0
    return np.where(nonzero.any(1), mask.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)


def _cut(value: np.ndarray, keep: int, shape: tuple) -> np.ndarray:
    return value[:, :keep] if np.ndim(value) >= 2 and np.shape(value)[1] == shape[1] else value
