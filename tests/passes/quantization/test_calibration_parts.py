"""Calibration runs large batches in parts along the batch axis; the statistics stay those of whole batches."""

import numpy as np
import pytest

import onnxslim.passes.quantization.calibrate as calibrate
from onnxslim.errors import DataError
from onnxslim.passes.quantization.calibrate import collect_statistics
from onnxslim.passes.quantization.ranges import tensor_range
from tests.helpers import make_model, rng

GRAPH = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[{batch}, 64, 32] x) => (float[{batch}, 64, 32] y) {{
    a = Relu (x)
    s = Sigmoid (x)
    b = Mul (x, s)
    y = Add (a, b)
}}
"""


def _batches(batch: int = 8, count: int = 4) -> list[dict[str, np.ndarray]]:
    # a heavy tail, so the histogram methods read more than the extremes
    return [{"x": (rng(i).standard_t(3, (batch, 64, 32)) * (i + 1)).astype(np.float32)} for i in range(count)]


class _CountingSession:
    def __init__(self, session):
        self.session, self.batch_lengths = session, []

    def run(self, names, feeds, *options):
        self.batch_lengths.append(len(feeds["x"]))
        return self.session.run(names, feeds, *options)


@pytest.fixture
def runs(monkeypatch):
    """The batch length of every calibration run, in order."""
    seen = []
    make = calibrate.make_session

    def counting(*args, **kwargs):
        session = _CountingSession(make(*args, **kwargs))
        seen.append(session)
        return session

    monkeypatch.setattr(calibrate, "make_session", counting)
    return lambda: seen[-1].batch_lengths


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse", "entropy"])
def test_parts_give_the_statistics_of_whole_batches(monkeypatch, runs, method):
    model, names = make_model(GRAPH.format(batch="N")), ["x", "a", "b", "y"]
    monkeypatch.setattr(calibrate, "PART_BYTES", 1 << 62)
    whole, _ = collect_statistics(model, _batches(), names)
    assert runs() == [1, 7, 8, 8, 8]  # the first run of one sample sizes the parts
    # one sample fetches 3 tensors of 8 KB: parts of 3 samples
    monkeypatch.setattr(calibrate, "PART_BYTES", 3 * 3 * 64 * 32 * 4)
    parts, samples = collect_statistics(model, _batches(), names)
    assert runs() == [1, 3, 2, 2] + [3, 3, 2] * 3 and samples == 32  # near-equal runs, no 1-sample tail
    for name in names:
        assert (parts[name].minimum, parts[name].maximum) == (whole[name].minimum, whole[name].maximum)
        assert parts[name].elements == whole[name].elements == 32 * 64 * 32
        # each part adds its share of the batch's histogram sample
        assert parts[name].counts.sum() == pytest.approx(whole[name].counts.sum(), rel=0.01)
        got, want = tensor_range(parts[name], method), tensor_range(whole[name], method)
        span = whole[name].maximum - whole[name].minimum
        assert got == pytest.approx(want, abs=0.01 * span)
    if method in ("percentile", "entropy"):  # the tail is really clipped: the check above compared searched ranges
        low, high = tensor_range(whole["x"], method)
        assert high - low < 0.8 * (whole["x"].maximum - whole["x"].minimum)


def test_a_batch_just_above_the_part_size_splits_in_halves(monkeypatch, runs):
    monkeypatch.setattr(calibrate, "PART_BYTES", 7 * 3 * 64 * 32 * 4)
    collect_statistics(make_model(GRAPH.format(batch="N")), _batches(), ["x", "a", "b", "y"])
    assert runs() == [1, 7] + [4, 4] * 3


def test_a_fixed_batch_axis_runs_whole_batches(runs):
    model = make_model(GRAPH.format(batch="8"))
    stats, samples = collect_statistics(model, _batches(), ["a", "y"])
    assert runs() == [8, 8, 8, 8] and samples == 32
    assert stats["a"].minimum == 0 and stats["y"].maximum > 0


def test_a_bad_part_is_one_data_error(monkeypatch):
    model = make_model(GRAPH.format(batch="N"))
    monkeypatch.setattr(calibrate, "PART_BYTES", 1)
    batches = _batches(count=2) + [{"x": np.zeros((8, 64, 31), np.float32)}]
    with pytest.raises(DataError, match="rejected by the model"):
        collect_statistics(model, batches, ["a"])
