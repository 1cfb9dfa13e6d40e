"""The prefix-sum range searches give exactly what their direct definitions give.

ranges.py evaluates every candidate threshold at once from cumulative sums over the histogram
(no Python loop, no candidates x bins matrix). Each test below writes the search the slow,
obvious way (one candidate at a time, or the full matrix) and requires the same answer on
varied histograms: signed and one-sided, heavy tails, ReLU zero spikes, several batches (so
the histogram has been re-binned).
"""

import numpy as np
import pytest

from onnxslim.passes.quantization import ranges
from onnxslim.passes.quantization.statistics import BINS, SAMPLE, TensorStats, sample_stride


def _histograms():
    rng = np.random.default_rng(7)
    shapes = [lambda: rng.standard_t(2, 40000), lambda: np.maximum(rng.standard_normal(40000), 0) * rng.exponential(1, 40000),
              lambda: rng.standard_normal(30000) * 3 - 1, lambda: rng.exponential(1, 30000) - 0.2,
              lambda: np.concatenate([rng.standard_normal(40000), rng.standard_normal(20) * 80]),
              lambda: -rng.exponential(5, 30000) + rng.standard_normal(30000)]
    for i in range(24):
        stats = TensorStats()
        for _ in range(1 + i % 3):
            stats.update((shapes[i % len(shapes)]() * rng.uniform(0.1, 20)).astype(np.float32))
        yield stats


def _kl_direct(counts: np.ndarray, levels: int) -> int:
    """One candidate at a time: clipped reference P, ``levels``-chunk requantized Q, KL(P || Q)."""
    counts = counts.astype(np.float64)
    counts[0] = 0
    last = int(np.nonzero(counts)[0][-1]) + 1
    if last <= levels:
        return last
    best, best_kl = last, np.inf
    for i in np.unique(np.linspace(levels, last, 128).astype(int)):
        p = counts[:i].copy()
        p[-1] += counts[i:].sum()
        chunk = np.minimum(np.arange(i) * levels // i, levels - 1)
        kept = counts[:i] > 0
        totals = np.bincount(chunk, weights=counts[:i], minlength=levels)
        filled = np.bincount(chunk, weights=kept, minlength=levels)
        q = np.where(kept, totals[chunk] / np.maximum(filled[chunk], 1), 0.0)
        p, q = p / p.sum(), q / q.sum()
        mask = p > 0
        kl = np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12)))
        if kl < best_kl:
            best, best_kl = int(i), kl
    return best


def _mse_direct(stats: TensorStats) -> float:
    centers, counts = stats.centers, stats.counts.astype(np.float64)
    extent = max(abs(stats.minimum), abs(stats.maximum))
    candidates = extent * np.linspace(0.02, 1.0, 200)
    low = np.maximum(stats.minimum, -candidates)[:, None]
    high = np.minimum(stats.maximum, candidates)[:, None]
    error = (centers - np.clip(centers, low, high)) ** 2 + ((high - low) / (ranges.LEVELS - 1)) ** 2 / 12
    return float(candidates[np.argmin(error @ counts)])


def _silu_low_direct(stats: TensorStats, low: float, high: float) -> float:
    centers, counts = stats.centers, stats.counts.astype(np.float64)
    keep = (counts > 0) & (centers < high)
    centers, counts = centers[keep], counts[keep]
    candidates = np.unique(np.concatenate([-np.geomspace(0.5, max(-low, 0.5), 200), [low]]))
    candidates = candidates[candidates >= low]
    step = (high - candidates) / (ranges.LEVELS - 1)
    slope = ranges._silu_slope(centers)
    rounding = slope[None, :] ** 2 * step[:, None] ** 2 / 12
    clipping = (ranges.silu(candidates)[:, None] - ranges.silu(centers)[None, :]) ** 2
    error = np.where(centers[None, :] >= candidates[:, None], rounding, clipping) @ counts
    return float(candidates[np.argmin(error)])


@pytest.mark.parametrize("levels", [ranges.LEVELS, ranges.LEVELS // 2])
def test_kl_search_matches_the_candidate_by_candidate_definition(levels):
    checked = 0
    for stats in _histograms():
        magnitude, _ = ranges._folded(stats)
        if int(np.nonzero(magnitude[1:])[0][-1]) + 2 > levels:  # a real search, not the early return
            checked += 1
        assert ranges._kl_threshold(magnitude, levels) == _kl_direct(magnitude, levels)
    assert checked >= 20


def test_mse_search_matches_the_full_error_matrix():
    for stats in _histograms():
        assert ranges._mse_threshold(stats) == pytest.approx(_mse_direct(stats), rel=1e-12)


def test_silu_low_matches_the_full_error_matrix():
    moved = 0
    for stats in _histograms():
        if stats.minimum >= 0:
            continue
        found = ranges.silu_low(stats, stats.minimum, stats.maximum)
        assert found == pytest.approx(_silu_low_direct(stats, stats.minimum, stats.maximum), rel=1e-12)
        moved += found > stats.minimum
    assert moved >= 5  # the bound really moves up from the raw minimum on most signed tensors


def test_histogram_takes_a_bounded_strided_sample_of_large_batches():
    values = np.random.default_rng(4).standard_normal(3 * SAMPLE + 5).astype(np.float32)
    stats = TensorStats()
    stats.update(values)
    stride = sample_stride(values.size)
    assert stride == 4 and stats.counts.sum() == values[stride // 2::stride].size <= SAMPLE
    assert (stats.minimum, stats.maximum) == (values.min(), values.max())  # limits see every element
    direct = np.histogram(values[stride // 2::stride], stats.edges)[0]
    assert np.abs(np.cumsum(stats.counts) - np.cumsum(direct)).max() <= 2  # float rounding at bin edges
    assert sample_stride(SAMPLE) == 1 and sample_stride(0) == 1


def test_observe_equals_update_on_the_same_summary():
    rng = np.random.default_rng(5)
    whole, summarized = TensorStats(), TensorStats()
    for scale in (1.0, 0.01, 30.0):
        values = (rng.standard_normal(5000) * scale).astype(np.float32)
        whole.update(values)
        summarized.observe(float(values.min()), float(values.max()), values)
    assert whole.radius == summarized.radius and np.array_equal(whole.counts, summarized.counts)
    assert whole.counts.shape == (BINS,)
