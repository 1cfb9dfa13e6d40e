"""Statistics of a tensor divided per channel by divisors that its own first values decide.

Activation smoothing (``smoothing.py``) divides an activation ``x`` channel by channel (its last
axis) by ``s``, which it computes from ``max |x|`` per channel over the first calibration samples.
Calibration used to run twice for it: once for those maxima, once more on the smoothed graph. Here
one run does both: ``x``'s per-channel extremes are kept until the samples that decide ``s`` have
passed, then its statistics are those of ``x / s``. Under minmax the per-channel extremes give them
exactly (``s > 0``); the histogram methods hold those first batches' values meanwhile (on
all-MiniLM-L6-v2, 16 samples of 32 tokens: 3 MB per smoothed activation).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from onnxslim.passes.quantization.statistics import TensorStats


@dataclasses.dataclass(frozen=True)
class Rescaling:
    """``divisor(channel_max)``: the positive divisor per channel (last axis) given ``max |x|`` per
    channel over at least the first ``samples`` samples (whole batches), or None for none."""

    samples: int
    divisor: Callable[[np.ndarray], np.ndarray | None]


class RescaledStats:
    """Fills ``stats`` with the statistics of ``x / divisor``, once ``decide`` has been called."""

    def __init__(self, rescaling: Rescaling, stats: TensorStats, *, histogram: bool):
        self.rescaling, self.stats, self.histogram = rescaling, stats, histogram
        self.divisor: np.ndarray | None = None
        self.decided = False
        self._magnitude = self._low = self._high = None
        self._held: list[tuple[np.ndarray, float]] = []
        self._elements = 0

    def update(self, values: np.ndarray, share: float = 1.0) -> None:
        if self.decided:
            self.stats.update(self._divided(values), histogram=self.histogram, share=share)
            return
        rows = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
        if rows.size == 0:
            return
        low, high = rows.min(axis=0), rows.max(axis=0)
        self._low = low if self._low is None else np.minimum(self._low, low)
        self._high = high if self._high is None else np.maximum(self._high, high)
        self._magnitude = np.maximum(np.abs(self._low), np.abs(self._high))
        self._elements += rows.size
        if self.histogram:
            self._held.append((values, share))

    def decide(self) -> None:
        """Asks for the divisor and adds what was held back, divided by it."""
        if self.decided:
            return
        self.decided = True
        if self._magnitude is None:  # nothing seen yet
            return
        divisor = self.rescaling.divisor(self._magnitude)
        self.divisor = None if divisor is None else np.asarray(divisor, np.float32)
        if self.histogram:
            for values, share in self._held:
                self.stats.update(self._divided(values), histogram=True, share=share)
            self._held = []
            return
        low, high = (self._low, self._high) if self.divisor is None else (self._low / self.divisor, self._high / self.divisor)
        self.stats.minimum = min(self.stats.minimum, float(low.min()))
        self.stats.maximum = max(self.stats.maximum, float(high.max()))
        self.stats.elements += self._elements

    def _divided(self, values: np.ndarray) -> np.ndarray:
        return values if self.divisor is None else values / self.divisor
