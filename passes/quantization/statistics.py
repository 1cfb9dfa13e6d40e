"""Streamed activation statistics: exact min/max plus a histogram whose range grows by doubling.

Memory per tensor is fixed (``BINS`` counts), whatever the number of samples. The histogram
covers ``[-radius, radius]``; when a batch exceeds it, the radius doubles and pairs of bins
merge, so no count is ever re-estimated. Each batch contributes at most ``SAMPLE`` evenly
strided elements to the histogram (the tail search needs the shape, not every element);
min/max always see every element.
"""

from __future__ import annotations

import dataclasses

import numpy as np

BINS = 4096
SAMPLE = 1 << 16


@dataclasses.dataclass
class TensorStats:
    minimum: float = np.inf
    maximum: float = -np.inf
    radius: float = 0.0
    counts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(BINS, np.int64))

    @property
    def empty(self) -> bool:
        return not np.isfinite(self.minimum)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(-self.radius, self.radius, len(self.counts) + 1)

    @property
    def centers(self) -> np.ndarray:
        edges = self.edges
        return (edges[:-1] + edges[1:]) / 2

    def update(self, values: np.ndarray) -> None:
        flat = values.reshape(-1)
        if flat.size == 0:
            return
        low, high = float(flat.min()), float(flat.max())
        self.minimum, self.maximum = min(self.minimum, low), max(self.maximum, high)
        self._grow(max(abs(low), abs(high)))
        stride = max(1, flat.size // SAMPLE)
        sample = flat[stride // 2::stride]
        width = 2 * self.radius / len(self.counts)
        index = np.clip(((sample + self.radius) / width).astype(np.int64), 0, len(self.counts) - 1)
        self.counts += np.bincount(index, minlength=len(self.counts))

    def _grow(self, extent: float) -> None:
        if self.radius == 0.0:
            self.radius = max(extent, 1e-8)
            return
        while extent > self.radius:
            quarter = len(self.counts) // 4
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            grown = np.zeros_like(self.counts)
            grown[quarter:quarter + len(merged)] = merged
            self.counts, self.radius = grown, self.radius * 2

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"limits": np.array([self.minimum, self.maximum, self.radius]), "counts": self.counts}

    @classmethod
    def from_arrays(cls, limits: np.ndarray, counts: np.ndarray) -> "TensorStats":
        return cls(float(limits[0]), float(limits[1]), float(limits[2]), np.asarray(counts, np.int64))
