"""Statistics of x / s, where s (per channel) is decided by x's own first batches (rescaled.py)."""

import numpy as np
import pytest

from onnxslim.passes.quantization.rescaled import RescaledStats, Rescaling
from onnxslim.passes.quantization.statistics import TensorStats
from tests.helpers import rng


def _batches():
    r = rng(5)
    scale = np.ones(12, np.float32)
    scale[3] = 40.0  # an outlier channel
    return [(r.standard_normal((4, 6, 12)) * scale).astype(np.float32) for _ in range(5)]


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
