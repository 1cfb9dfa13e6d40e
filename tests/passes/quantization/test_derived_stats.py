"""Sigmoid/SiLU output statistics derived from the input's histogram match the fetched ones."""

import numpy as np
import pytest

from onnxslim.passes.quantization.derived import HardSigmoid, derivable, derive, hard_swish, sigmoid, silu
from onnxslim.passes.quantization.ranges import tensor_range
from onnxslim.passes.quantization.statistics import TensorStats
from tests.helpers import make_model, rng


@pytest.mark.parametrize("function", [sigmoid, silu, hard_swish, HardSigmoid(1 / 6, 0.5)])
@pytest.mark.parametrize("method", ["minmax", "percentile", "mse", "entropy"])
def test_derived_ranges_match_ranges_of_the_real_outputs(function, method):
    # a YOLO-like pre-activation: body around 0, a long negative tail, a few large positives
    r = rng(1)
    values = np.concatenate([r.normal(0, 2, 60000), -r.exponential(20, 3000), r.exponential(4, 2000)]).astype(np.float32)
    source, direct = TensorStats(), TensorStats()
    for chunk in np.array_split(values, 4):
        source.update(chunk)
        direct.update(function(chunk.astype(np.float64)).astype(np.float32))
    derived = derive(source, function)
    assert derived.minimum == pytest.approx(direct.minimum, abs=1e-5)
    assert derived.maximum == pytest.approx(direct.maximum, rel=1e-5)
    assert derived.counts.sum() % direct.counts.sum() == 0  # each sample spread over a few points
    got, want = tensor_range(derived, method), tensor_range(direct, method)
    span = direct.maximum - direct.minimum
    assert got[0] == pytest.approx(want[0], abs=0.02 * span) and got[1] == pytest.approx(want[1], abs=0.02 * span)


def test_only_sigmoid_and_silu_of_a_ranged_tensor_are_derived():
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y, float[N, 4] z) {
        s = Sigmoid (x)
        y = Mul (x, s)
        t = Sigmoid (y)
        z = Mul (t, x)
    }
    """)
    found = derivable(model.graph, {"x", "s", "y", "t", "z"})
    assert {k: (v[0], v[1].__name__) for k, v in found.items()} == {"s": ("x", "sigmoid"), "y": ("x", "silu"),
                                                                     "t": ("y", "sigmoid")}
    assert derivable(model.graph, {"s", "y"}) == {}  # x itself not ranged: nothing to derive from


def test_hard_swish_and_hard_sigmoid_gates_are_derived():
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y, float[N, 4] z, float[N, 4] w) {
        y = HardSwish (x)
        z = HardSigmoid <alpha = 0.2, beta = 0.5> (x)
        w = HardSigmoid <alpha = -0.2, beta = 0.5> (x)
    }
    """)
    found = derivable(model.graph, {"x", "y", "z", "w"})
    assert found["y"] == ("x", hard_swish) and found["z"][1].alpha == pytest.approx(0.2)
    assert "w" not in found  # a decreasing gate: its range is not the image of the input's ends
    source = TensorStats()
    source.update(np.array([-3.0, -1.0, 2.0], np.float32))
    derived = derive(source, hard_swish, histogram=False)
    assert derived.minimum == pytest.approx(-0.375) and derived.maximum == pytest.approx(2 * (2 / 6 + 0.5))


def test_min_max_only_source_gives_min_max_only_derived_statistics():
    source = TensorStats()
    source.update(np.array([-3.0, 0.5, 2.0], np.float32), histogram=False)
    derived = derive(source, HardSigmoid(0.2, 0.5), histogram=False)
    assert (derived.minimum, derived.maximum) == pytest.approx((0.0, 0.9)) and not derived.empty
