"""Elementwise chains of one ranged tensor (PP-LCNet's HardSwish + learnable affine) are derived, not fetched."""

import numpy as np
import pytest

from onnxslim.passes.quantization.calibrate import collect_statistics, tensor_statistics
from onnxslim.passes.quantization.derived import derivable
from onnxslim.passes.quantization.ranges import tensor_range
from tests.helpers import make_model, rng

# Paddle's spelling: HardSwish as Mul(Mul(v, 1), HardSigmoid(v)), then ``a * hs + b``; a < 0 flips the order
AFFINE_HARD_SWISH = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 16, 16] x) => (float[N, 4, 16, 16] y, float[N, 4, 16, 16] r) {
    gate = HardSigmoid <alpha = 0.16666667, beta = 0.5> (x)
    one = Constant <value = float {1.0}> ()
    xs = Mul (x, one)
    hs = Mul (xs, gate)
    a = Constant <value = float[1] {-0.7}> ()
    scaled = Mul (a, hs)
    b = Constant <value = float {0.3}> ()
    y = Add (scaled, b)
    lo = Constant <value = float {-0.5}> ()
    hi = Constant <value = float {2.0}> ()
    r = Clip (y, lo, hi)
}
"""


def _batches():
    # a heavy negative tail through hard swish's interior minimum at -1.5; the first batch holds the
    # extremes, so the fetched histograms keep their first radius as the derived ones do (entropy's
    # threshold on this two-humped tensor moves with the bin width alone)
    r = rng(4)
    batches = [np.concatenate([r.normal(0, 2, (12, 4, 16, 16)), -r.exponential(6, (4, 4, 16, 16))]).astype(np.float32)
               for _ in range(3)]
    batches[0][0, 0, 0, :2] = (-100, 12)
    return [{"x": x} for x in batches]


def test_the_affine_hard_swish_chain_is_traced_to_its_source():
    found = derivable(make_model(AFFINE_HARD_SWISH).graph, {"x", "y", "r"})
    assert found["y"].sources == ("x",) and found["y"].function.ops == ("Mul", "HardSigmoid", "Mul", "Mul", "Add")
    assert found["r"].sources == ("y",) and found["r"].function.ops == ("Clip",)  # stops at the nearest ranged tensor
    without_source = derivable(make_model(AFFINE_HARD_SWISH).graph, {"y", "r"})
    assert list(without_source) == ["r"] and without_source["r"].sources == ("y",)  # x unranged: fetch y


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse", "entropy"])
def test_chain_ranges_match_the_fetched_tensors(method):
    model = make_model(AFFINE_HARD_SWISH)
    derived = tensor_statistics(model, _batches(), ["x", "y", "r"], minmax_only=method == "minmax")
    fetched, _ = collect_statistics(model, _batches(), ["x", "y", "r"])
    for name in ("y", "r"):
        span = fetched[name].maximum - fetched[name].minimum
        assert derived[name].minimum == pytest.approx(fetched[name].minimum, abs=1e-5 * span)
        assert derived[name].maximum == pytest.approx(fetched[name].maximum, abs=1e-5 * span)
        assert derived[name].elements == fetched[name].elements
        got, want = tensor_range(derived[name], method), tensor_range(fetched[name], method)
        assert got == pytest.approx(want, abs=0.02 * span)
    # the negative scale maps hard swish's minimum (-0.375 at x = -1.5) to y's maximum
    assert derived["y"].maximum == pytest.approx(0.3 + 0.7 * 0.375, abs=1e-4)


@pytest.mark.parametrize("body", [
    "s = Constant <value = float[4, 1, 1] {1, 2, 3, 4}> ()\n y = Mul (x, s)",  # per-channel: not one function of x
    "s = Constant <value = float {2.0}> ()\n y = Div (s, x)",  # 2 / x: unbounded near 0
    "y = Mul (x, z)",  # a second activation
    "e = Exp (x)\n y = Mul (e, x)",  # Exp is not traced
    "s = Constant <value = float {0.0}> ()\n y = Div (x, s)",
])
def test_what_is_not_one_elementwise_function_of_the_source_is_fetched(body):
    model = make_model(f"""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 4, 8, 8] x, float[N, 4, 8, 8] z) => (float[N, 4, 8, 8] y) {{
        {body}
    }}
    """)
    assert derivable(model.graph, {"x", "z", "y"}) == {}
