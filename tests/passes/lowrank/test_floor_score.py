"""The floor --lowrank auto holds a split to: the mean cosine and the SNR validation pairs with it.

A split accepted at mean cosine 0.99001 read 16.9 dB, and the default validation (cosine 0.99,
SNR 17 dB) failed the run it ended (exit 1, found on a small ViT)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.passes.lowrank.calibration import Probe
from onnxslim.passes.lowrank.sites import find_groups
from tests.helpers import make_model, rng

LINEAR = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 16] x) => (float[N, 8] y) {
    y = MatMul (x, w)
}
"""


def _probe():
    model = make_model(LINEAR, initializers={"w": rng(0).standard_normal((16, 8)).astype(np.float32)})
    groups, _ = find_groups(model.graph, ops=("MatMul",), opset=17, min_params=0)
    return Probe(model, groups, [{"x": rng(1).standard_normal((32, 16)).astype(np.float32)}]), groups[0].array


def test_a_scaled_output_keeps_its_cosine_but_not_its_snr():
    probe, weight = _probe()
    shrunk = {"w": weight * np.float32(0.8)}  # every output 20% smaller: cosine 1, SNR 14 dB
    assert probe.cosine(shrunk) == pytest.approx(1.0)
    assert probe.floor_score(shrunk) == pytest.approx(1 - 10 ** (-10 * np.log10(1 / 0.04) / 10) / 2)  # 0.98
    assert probe.floor_score(shrunk) < 0.99


def test_noise_is_judged_by_the_lower_of_the_two():
    probe, weight = _probe()
    noisy = {"w": weight + np.float32(0.05) * rng(2).standard_normal(weight.shape).astype(np.float32)}
    assert probe.floor_score(noisy) <= probe.cosine(noisy) < 1.0
    assert probe.floor_score({"w": weight}) == probe.cosine({"w": weight}) == 1.0


def test_the_cosine_floor_search_judges_by_the_floor_score(monkeypatch):
    """Where no split keeps the floor score (its SNR side), nothing is split, whatever the cosine says."""
    from onnxslim.passes.lowrank import calibration as lowrank_calibration
    from tests.passes.lowrank.test_activation_aware import TWO_BRANCHES, activations, calibration, run

    r = rng(3)
    weights = {"w_loud": r.standard_normal((48, 40)).astype(np.float32),
               "w_quiet": r.standard_normal((48, 40)).astype(np.float32), "ten": np.array(10.0, np.float32)}
    assert run(make_model(TWO_BRANCHES, initializers=weights), {"min_cosine": 0.99}, calibration(activations())).modified
    monkeypatch.setattr(lowrank_calibration.Probe, "floor_score",
                        lambda self, replaced: 1.0 if all(k not in replaced for k in self.overridable) else 0.0)
    result = run(make_model(TWO_BRANCHES, initializers=weights), {"min_cosine": 0.99}, calibration(activations()))
    assert not result.modified
