"""Activation ranges from streamed statistics: minmax, percentile, entropy (KL) and MSE searches.

Every method returns ``(low, high)`` inside the observed ``[min, max]``. Non-negative tensors
(after ReLU) are searched one-sided over ``[min, t]``; signed tensors over ``[-t, t]`` cut to
what was observed, so an asymmetric uint8 grid still uses the whole observed side.
"""

from __future__ import annotations

import numpy as np

from onnxslim.passes.quantization.statistics import TensorStats

METHODS = ("minmax", "percentile", "entropy", "mse")
LEVELS = 256


def tensor_range(stats: TensorStats, method: str, *, percentile: float = 99.99) -> tuple[float, float]:
    low, high = stats.minimum, stats.maximum
    if method == "minmax" or stats.counts.sum() == 0 or high - low <= 0:
        return low, high
    if method == "percentile":
        return _percentile(stats, percentile)
    magnitude, one_sided = _folded(stats)
    width = stats.radius / len(magnitude)
    if method == "entropy":
        if not magnitude[1:].any():
            return low, high
        threshold = _kl_threshold(magnitude, LEVELS if one_sided else LEVELS // 2) * width
    elif method == "mse":
        threshold = _mse_threshold(stats)
    else:
        raise ValueError(f"unknown calibration method {method!r} (known: {', '.join(METHODS)})")
    return max(low, -threshold), min(high, threshold)


def _percentile(stats: TensorStats, percentile: float) -> tuple[float, float]:
    cdf = np.cumsum(stats.counts) / stats.counts.sum()
    edges = stats.edges
    tail = 1 - percentile / 100
    high = edges[min(np.searchsorted(cdf, 1 - tail) + 1, len(edges) - 1)]
    low = edges[np.searchsorted(cdf, tail)] if stats.minimum < 0 else stats.minimum
    return max(stats.minimum, float(low)), min(stats.maximum, float(high))


def _folded(stats: TensorStats) -> tuple[np.ndarray, bool]:
    """Counts of |x| over ``[0, radius]``, and whether the tensor never went negative."""
    half = len(stats.counts) // 2
    return stats.counts[half:] + stats.counts[:half][::-1], stats.minimum >= 0


def _kl_threshold(counts: np.ndarray, levels: int) -> int:
    """The bin count ``i`` whose clipped, ``levels``-quantized histogram is closest (KL) to the original.

    The first bin (|x| < one bin width, where ReLU's exact zeros pile up) is left out of the
    comparison: zero is exactly representable on every grid, so it has no quantization error.
    Kept in, that spike (often half the mass) is smeared over a whole chunk of the coarse
    histogram and its KL penalty grows with the threshold, so the search always picked the
    smallest threshold: ReLU features of the small CNNs were clipped to a fifth of their range.
    """
    counts = counts.copy()
    counts[0] = 0
    last = int(np.nonzero(counts)[0][-1]) + 1
    if last <= levels:
        return last
    best, best_kl = last, np.inf
    for i in np.unique(np.linspace(levels, last, 128).astype(int)):
        reference = counts[:i].astype(np.float64)
        reference[-1] += counts[i:].sum()
        kl = _kl(reference, _requantize(counts[:i].astype(np.float64), levels))
        if kl < best_kl:
            best, best_kl = i, kl
    return best


def _requantize(counts: np.ndarray, levels: int) -> np.ndarray:
    """Each of ``levels`` chunks spreads its total evenly over its non-empty bins."""
    chunk = np.minimum((np.arange(len(counts)) * levels) // len(counts), levels - 1)
    nonzero = counts > 0
    totals = np.bincount(chunk, weights=counts, minlength=levels)
    filled = np.bincount(chunk, weights=nonzero, minlength=levels)
    spread = np.divide(totals, filled, out=np.zeros(levels), where=filled > 0)
    return np.where(nonzero, spread[chunk], 0.0)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / p.sum(), q / max(q.sum(), 1e-12)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))


def _mse_threshold(stats: TensorStats) -> float:
    """The clip magnitude whose expected error (rounding inside, clipping outside) is least."""
    centers, counts = stats.centers, stats.counts.astype(np.float64)
    keep = counts > 0
    centers, counts = centers[keep], counts[keep]
    extent = max(abs(stats.minimum), abs(stats.maximum))
    candidates = extent * np.linspace(0.02, 1.0, 200)
    low = np.maximum(stats.minimum, -candidates)[:, None]
    high = np.minimum(stats.maximum, candidates)[:, None]
    step = (high - low) / (LEVELS - 1)
    clipped = np.clip(centers[None, :], low, high)
    error = (centers[None, :] - clipped) ** 2 + step ** 2 / 12
    return float(candidates[np.argmin(error @ counts)])


def quantization_mse(values: np.ndarray, low: float, high: float, levels: int = LEVELS) -> float:
    """Mean squared error of fake-quantizing ``values`` on an asymmetric grid over ``[low, high]``."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / (levels - 1) or 1.0
    zero = np.round(-low / scale)
    q = np.clip(np.round(values / scale) + zero, 0, levels - 1)
    return float(np.mean(((q - zero) * scale - values) ** 2))


def silu_low(stats: TensorStats, low: float, high: float, levels: int = LEVELS) -> float:
    """The lower bound for a tensor read only by SiLU (``x * Sigmoid(x)``), ``high`` fixed.

    SiLU maps everything below about -6 to almost 0, so the pre-activation's long negative tail
    (YOLOv8: Conv outputs reach -150 while SiLU's output stays above -0.28) costs grid steps and
    buys nothing. The bound minimizes the expected squared error *after* SiLU: rounding inside
    (``silu'(x)^2 step^2 / 12``), ``silu(low) - silu(x)`` for the clipped values below.
    """
    if low >= 0 or stats.counts.sum() == 0:
        return low
    centers, counts = stats.centers, stats.counts.astype(np.float64)
    keep = (counts > 0) & (centers < high)
    centers, counts = centers[keep], counts[keep]
    candidates = np.unique(np.concatenate([-np.geomspace(0.5, max(-low, 0.5), 200), [low]]))
    candidates = candidates[candidates >= low]
    step = (high - candidates) / (levels - 1)
    inside = centers[None, :] >= candidates[:, None]
    rounding = _silu_slope(centers)[None, :] ** 2 * step[:, None] ** 2 / 12
    clipping = (silu(candidates)[:, None] - silu(centers)[None, :]) ** 2
    error = np.where(inside, rounding, clipping) @ counts
    return float(candidates[np.argmin(error)])


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-np.clip(x, -60, 60)))


def _silu_slope(x: np.ndarray) -> np.ndarray:
    sig = 1 / (1 + np.exp(-np.clip(x, -60, 60)))
    return sig * (1 + x * (1 - sig))
