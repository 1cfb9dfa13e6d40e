import numpy as np
import pytest

from onnxslim.passes.quantization.ranges import METHODS, quantization_mse, tensor_range
from onnxslim.passes.quantization.statistics import BINS, TensorStats


def _heavy_tailed(seed=0, batches=16):
    rng = np.random.default_rng(seed)
    stats, seen = TensorStats(), []
    for _ in range(batches):
        values = rng.standard_t(2, 20000).astype(np.float32)
        seen.append(values)
        stats.update(values)
    return stats, np.concatenate(seen)


def test_streamed_statistics_keep_exact_limits_and_fixed_memory():
    stats = TensorStats()
    rng = np.random.default_rng(1)
    total, seen = 0, []
    for scale in (0.1, 1.0, 50.0, 3.0):  # forces the range to double several times
        values = (rng.standard_normal(1000) * scale).astype(np.float32)
        stats.update(values)
        seen.append(values)
        total += values.size
        assert stats.counts.shape == (BINS,)
    assert stats.counts.sum() == total  # re-binning never loses a count (small batches are not subsampled)
    everything = np.concatenate(seen)
    assert (stats.minimum, stats.maximum) == (everything.min(), everything.max())
    # The merged histogram matches a direct one up to values on a bin edge (float rounding).
    direct = np.histogram(everything, stats.edges)[0]
    assert np.abs(np.cumsum(stats.counts) - np.cumsum(direct)).max() <= 3
    assert stats.radius >= max(abs(stats.minimum), abs(stats.maximum))


def test_methods_pick_different_better_clipped_ranges_on_heavy_tails():
    stats, values = _heavy_tailed()
    ranges = {m: tensor_range(stats, m) for m in METHODS}
    minmax = ranges["minmax"]
    assert minmax == (pytest.approx(values.min()), pytest.approx(values.max()))
    for method in ("percentile", "entropy", "mse"):
        low, high = ranges[method]
        assert minmax[0] < low < 0 < high < minmax[1], method  # clipped inside the observed range
    widths = {m: round(h - l, 3) for m, (l, h) in ranges.items()}
    assert len(set(widths.values())) == 4, widths  # four really different answers
    # MSE search minimizes the real quantization error, below the minmax grid's error.
    assert quantization_mse(values, *ranges["mse"]) < 0.8 * quantization_mse(values, *minmax)


def test_non_negative_tensor_is_searched_one_sided():
    rng = np.random.default_rng(2)
    stats = TensorStats()
    stats.update(np.maximum(rng.standard_t(3, 50000), 0).astype(np.float32))
    for method in METHODS:
        low, high = tensor_range(stats, method)
        assert low == 0.0 and 0 < high <= stats.maximum


def test_unknown_method_is_rejected():
    stats, _ = _heavy_tailed(batches=1)
    with pytest.raises(ValueError, match="unknown calibration method"):
        tensor_range(stats, "kl")


def test_entropy_is_not_dragged_down_by_relu_zeros():
    # Half exact zeros (a ReLU output) plus an exponential body: the zero spike used to dominate
    # the KL search (it was smeared over a chunk of the coarse histogram), so entropy clipped
    # at ~1/5 of the range. Zero is exact on the grid; the threshold must follow the body.
    rng = np.random.default_rng(3)
    values = np.maximum(rng.standard_normal(60000), 0) * rng.exponential(1.0, 60000)
    stats = TensorStats()
    stats.update(values.astype(np.float32))
    low, high = tensor_range(stats, "entropy")
    _, p999 = tensor_range(stats, "percentile", percentile=99.9)
    assert low == 0.0 and 0.6 * p999 < high <= stats.maximum
    # The same body without the zeros gets (nearly) the same threshold.
    body = TensorStats()
    body.update(values[values > 0].astype(np.float32))
    assert tensor_range(body, "entropy")[1] == pytest.approx(high, rel=0.15)


def test_entropy_on_mass_far_from_zero_is_quiet_and_keeps_it():
    # exact zeros plus values only near the top of the range (a sentinel-like tensor): every
    # threshold below them kept nothing, its 0/0 KL printed a numpy RuntimeWarning on stderr
    import warnings

    values = np.concatenate([np.zeros(5000), np.full(500, 7.3), np.full(30, 9.8)]).astype(np.float32)
    stats = TensorStats()
    stats.update(values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        low, high = tensor_range(stats, "entropy")
    assert high >= 7.3


def test_entropy_never_clips_more_than_one_value_in_2000_per_side():
    # a bulk with a long sparse tail (PP-OCRv4 rec's hard-swish outputs look like this): the KL
    # threshold alone clipped 0.087% of the values here, and on rec kept 0% of its strings
    rng = np.random.default_rng(0)
    stats, seen = TensorStats(), []
    for _ in range(16):
        values = np.concatenate([rng.normal(0, 0.5, 19000), rng.exponential(6, 1000)]).astype(np.float32)
        seen.append(values)
        stats.update(values)
    values = np.concatenate(seen)
    low, high = tensor_range(stats, "entropy")
    assert ((values < low) | (values > high)).mean() <= 0.0006  # 0.05%, up to one histogram bin
    assert high < values.max()  # still clipped: not minmax
