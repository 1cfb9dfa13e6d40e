"""Statistics of a tensor divided per channel by divisors that its own first values decide.

Activation smoothing (``smoothing.py``) divides an activation ``x`` channel by channel (its last
axis) by ``s``, which it computes from ``max |x|`` per channel over the first calibration samples.
Calibration used to run twice for it: once for those maxima, once more on the smoothed graph. Here
one run does both: until the samples that decide ``s`` have passed, each part of ``x`` is kept as
what ``TensorStats.update`` would take from it (per-channel extremes, which give the exact min/max
of ``x / s`` since ``s > 0``, and the histogram's strided sample with each element's channel), then
replayed divided by ``s``. Memory is that of the histogram samples (at most ``SAMPLE`` elements per
part), whatever the tensor's size or the number of samples held.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from onnxslim.passes.quantization.statistics import SAMPLE, SATURATED, TensorStats, sample_stride


@dataclasses.dataclass(frozen=True)
class Rescaling:
    """``divisor(channel_max)``: the positive divisor per channel (last axis) given ``max |x|`` per
    channel over at least the first ``samples`` samples (whole batches), or None for none.
    ``label``: the settings, besides the graph and ``samples``, that the divisor depends on (a
    calibration cache keys the statistics of ``x / divisor`` by them)."""

    samples: int
    divisor: Callable[[np.ndarray], np.ndarray | None]
    label: str = ""


class RescaledStats:
    """Fills ``stats`` with the statistics of ``x / divisor``, once ``decide`` has been called; until
    then ``update`` gives the same statistics as ``stats.update(x / divisor)`` would have."""

    def __init__(self, rescaling: Rescaling, stats: TensorStats, *, histogram: bool):
        self.rescaling, self.stats, self.histogram = rescaling, stats, histogram
        self.divisor: np.ndarray | None = None
        self.decided = False
        self._magnitude: np.ndarray | None = None
        self._held: list[_HeldPart] = []
        self._sampled = 0  # histogram elements the held parts will add, as stats.counts.sum() would count them

    def update(self, values: np.ndarray, share: float = 1.0) -> None:
        if self.decided:
            self.stats.update(self._divided(values), histogram=self.histogram, share=share)
            return
        rows = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
        if rows.size == 0:
            return
        low, high = rows.min(axis=0), rows.max(axis=0)
        magnitude = np.maximum(np.abs(low), np.abs(high))
        self._magnitude = magnitude if self._magnitude is None else np.maximum(self._magnitude, magnitude)
        sample = channels = None
        if self.histogram:  # the elements TensorStats.update would sample, and their channels
            wanted = SAMPLE if self._sampled < SATURATED else SAMPLE // 4
            stride = sample_stride(rows.size, max(1, round(wanted * share)))
            index = np.arange(stride // 2, rows.size, stride)
            sample, channels = rows.reshape(-1)[index], (index % rows.shape[1]).astype(np.intp)
            self._sampled += index.size
        self._held.append(_HeldPart(low, high, sample, channels, rows.size))

    def decide(self) -> None:
        """Asks for the divisor and adds what was held back, divided by it."""
        if self.decided:
            return
        self.decided = True
        if self._magnitude is None:  # nothing seen yet
            return
        divisor = self.rescaling.divisor(self._magnitude)
        self.divisor = None if divisor is None else np.asarray(divisor, np.float32)
        scale = self.divisor if self.divisor is not None else np.ones_like(self._magnitude)
        for part in self._held:
            low, high = float((part.low / scale).min()), float((part.high / scale).max())
            self.stats.elements += part.elements
            if self.histogram:
                self.stats.observe(low, high, part.sample / scale[part.channels])
            else:
                self.stats.minimum, self.stats.maximum = min(self.stats.minimum, low), max(self.stats.maximum, high)
        self._held = []

    def _divided(self, values: np.ndarray) -> np.ndarray:
        return values if self.divisor is None else values / self.divisor


@dataclasses.dataclass
class _HeldPart:
    low: np.ndarray
    high: np.ndarray
    sample: np.ndarray | None
    channels: np.ndarray | None
    elements: int
