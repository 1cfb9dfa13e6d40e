"""An initializer that is also a graph input is a default the caller may override at run time: no
cleanup pass may fold it. Each pass below did (the optimized model then ignored the override, max
abs error up to 41.6), and validation, feeding only the ordinary inputs, passed it."""

import numpy as np
import pytest

from onnxslim.passes.cleanup.fuse_affine_conv import FuseAffineConv
from onnxslim.passes.cleanup.fuse_conv_affine import FuseConvAffine
from onnxslim.passes.cleanup.fuse_hard_activations import FuseHardActivations
from onnxslim.passes.cleanup.remove_noops import RemoveNoops
from tests.helpers import make_model, rng, run_ort

R = rng(0)
X2 = R.standard_normal((2, 8)).astype(np.float32)
X4 = R.standard_normal((2, 8, 6, 6)).astype(np.float32)
W = (R.standard_normal((8, 8, 3, 3)) * 0.1).astype(np.float32)
W1 = (R.standard_normal((8, 8, 1, 1)) * 0.1).astype(np.float32)
HEADER = '<ir_version: 8, opset_import: ["" : 13]>'

CASES = {
    "x * one": (RemoveNoops, f"""{HEADER} g (float[N, 8] x, float one) => (float[N, 8] y) <float one = {{1.0}}> {{
                    y = Mul (x, one) }}""", {}, {"x": X2, "one": np.array(3, np.float32)}),
    "conv + add": (FuseConvAffine, f"""{HEADER}
                    g (float[N, 8, 6, 6] x, float[1, 8, 1, 1] ab) => (float[N, 8, 6, 6] y) <float[1, 8, 1, 1] ab> {{
                    c = Conv <pads = [1, 1, 1, 1]> (x, cw)  y = Add (c, ab) }}""",
                   {"cw": W, "ab": np.zeros((1, 8, 1, 1), np.float32)}, {"x": X4, "ab": np.full((1, 8, 1, 1), 5, np.float32)}),
    "overridable conv weight + mul": (FuseConvAffine, f"""{HEADER}
                    g (float[N, 8, 6, 6] x, float[8, 8, 3, 3] cw) => (float[N, 8, 6, 6] y) <float[8, 8, 3, 3] cw> {{
                    c = Conv <pads = [1, 1, 1, 1]> (x, cw)  y = Mul (c, s) }}""",
                   {"cw": W, "s": R.uniform(0.5, 2, (1, 8, 1, 1)).astype(np.float32)}, {"x": X4, "cw": W[::-1].copy()}),
    "mul + conv": (FuseAffineConv, f"""{HEADER}
                    g (float[N, 8, 6, 6] x, float[1, 8, 1, 1] sc) => (float[N, 8, 6, 6] y) <float[1, 8, 1, 1] sc> {{
                    a = Mul (x, sc)  y = Conv (a, cw) }}""",
                   {"cw": W1, "sc": np.ones((1, 8, 1, 1), np.float32)}, {"x": X4, "sc": np.full((1, 8, 1, 1), 4, np.float32)}),
    "relu6(x + three) / 6": (FuseHardActivations, f"""{HEADER}
                    g (float[N, 8] x, float three) => (float[N, 8] y) <float three = {{3.0}}, float z = {{0.0}}, float six = {{6.0}}> {{
                    a = Add (x, three)  c = Clip (a, z, six)  y = Div (c, six) }}""", {}, {"x": X2, "three": np.array(-2, np.float32)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_overridable_default_is_not_folded(case):
    pass_class, text, weights, feeds = CASES[case]
    model = make_model(text, initializers=weights)
    before = run_ort(model, feeds)
    result = pass_class()(model.clone())
    assert not result.modified, f"{case}: folded an overridable default"
    np.testing.assert_allclose(run_ort(result.model, feeds)[0], before[0], rtol=1e-5, atol=1e-5)
    plain = {k: v for k, v in feeds.items() if k == "x"}
    fixed = make_model(text.replace(", float one)", ")").replace(", float[1, 8, 1, 1] ab)", ")")
                       .replace(", float[8, 8, 3, 3] cw)", ")").replace(", float[1, 8, 1, 1] sc)", ")")
                       .replace(", float three)", ")"), initializers=weights)
    assert pass_class()(fixed.clone()).modified, f"{case}: the pass does not apply even to plain constants"
    np.testing.assert_allclose(run_ort(pass_class()(fixed.clone()).model, plain)[0], run_ort(fixed, plain)[0], rtol=1e-4, atol=1e-4)
