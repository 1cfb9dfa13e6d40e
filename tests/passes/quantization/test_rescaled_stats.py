"""Statistics of x / s, where s (per channel) is decided by x's own first batches (rescaled.py)."""

import numpy as np
import pytest

from onnxslim.passes.quantization.rescaled import RescaledStats, Rescaling
from onnxslim.passes.quantization.statistics import SAMPLE, SATURATED, TensorStats
from tests.helpers import rng


def _batches(shape=(4, 6, 12), count=5):
    r = rng(5)
    scale = np.ones(shape[-1], np.float32)
    scale[3] = 40.0  # an outlier channel
    return [(r.standard_normal(shape) * scale).astype(np.float32) for _ in range(count)]


def test_large_parts_are_held_as_the_histogram_samples_them():
    # 122880 elements per batch: the histogram takes a strided sample, a quarter of it once it holds 2**18
    # (61440 per batch: stride 2); the sixth batch, still held, is the first to take a quarter
    values = _batches((64, 40, 48), count=8)
    got, want = TensorStats(), TensorStats()
    rescaled = RescaledStats(Rescaling(6 * 64, np.sqrt), got, histogram=True)
    for i, batch in enumerate(values):
        rescaled.update(batch)
        if i < 6:
            assert all(part.sample.size <= SAMPLE for part in rescaled._held)
        if i == 5:
            channel_max = np.abs(np.concatenate(values[:6])).reshape(-1, 48).max(axis=0)
            rescaled.decide()
    for batch in values:
        want.update(batch / np.sqrt(channel_max).astype(np.float32))
    assert (got.minimum, got.maximum, got.elements) == (want.minimum, want.maximum, want.elements)
    assert want.counts.sum() > SATURATED
    np.testing.assert_array_equal(got.counts, want.counts)


@pytest.mark.parametrize("histogram", [False, True])
def test_statistics_are_those_of_the_divided_tensor(histogram):
    seen = []

    def divisor(channel_max):
        seen.append(channel_max.copy())
        return np.sqrt(channel_max)

    values = _batches()
    got = TensorStats()
    rescaled = RescaledStats(Rescaling(8, divisor), got, histogram=histogram)
    for i, batch in enumerate(values):
        rescaled.update(batch)
        if i == 1:  # 8 samples
            rescaled.decide()
    # decided on the first two batches' per-channel max |x|, once
    (channel_max,) = seen
    np.testing.assert_allclose(channel_max, np.abs(np.concatenate(values[:2])).reshape(-1, 12).max(axis=0))
    want = TensorStats()
    for batch in values:
        want.update(batch / np.sqrt(channel_max).astype(np.float32), histogram=histogram)
    assert got.minimum == pytest.approx(want.minimum, rel=1e-6) and got.maximum == pytest.approx(want.maximum, rel=1e-6)
    assert got.elements == want.elements == 5 * 4 * 6 * 12
    np.testing.assert_array_equal(got.counts, want.counts)
    assert got.maximum < 0.5 * np.abs(np.concatenate(values)).max()  # the outlier channel was divided


def test_no_divisor_leaves_the_tensor_as_it_is():
    values = _batches()
    got, want = TensorStats(), TensorStats()
    rescaled = RescaledStats(Rescaling(100, lambda channel_max: None), got, histogram=True)
    for batch in values:
        rescaled.update(batch)
        want.update(batch)
    rescaled.decide()  # fewer samples than asked for: decided at the end
    assert (got.minimum, got.maximum, got.elements) == (want.minimum, want.maximum, want.elements)
    np.testing.assert_array_equal(got.counts, want.counts)
