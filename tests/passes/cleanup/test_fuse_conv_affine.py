import numpy as np
import pytest

from onnxslim.passes.cleanup.fuse_conv_affine import FuseConvAffine
from tests.helpers import assert_same_outputs, check_full, make_model, op_types, rng

TEMPLATE = """
<ir_version: 7, opset_import: ["" : 11]>
g (float[N, 3, 6, 6] x) => (float[N, {cout}, {h}, {h}] y) {{
    c = {conv}
    y = {follow}
}}
"""


def _model(conv="Conv <pads = [1, 1, 1, 1]> (x, w)", follow="Add (c, k)", k_shape=(1, 4, 1, 1), w_shape=(4, 3, 3, 3),
           cout=4, h=6, extra=None):
    r = rng(0)
    weights = {"w": r.standard_normal(w_shape).astype(np.float32), "k": r.uniform(0.5, 2, k_shape).astype(np.float32)}
    weights.update(extra or {})
    return make_model(TEMPLATE.format(conv=conv, follow=follow, cout=cout, h=h), initializers=weights)


CASES = {
    "paddle conv bias add": {},
    "add with bias": {"conv": "Conv <pads = [1, 1, 1, 1]> (x, w, b)", "extra": {"b": np.arange(4, dtype=np.float32)}},
    "add constant first": {"follow": "Add (k, c)"},
    "channel-first bias": {"k_shape": (4, 1, 1)},
    "scalar mul": {"follow": "Mul (c, k)", "k_shape": (1,)},
    "per-channel mul with bias": {"conv": "Conv <pads = [1, 1, 1, 1]> (x, w, b)", "follow": "Mul (c, k)",
                                  "extra": {"b": np.arange(4, dtype=np.float32)}},
    "conv transpose add": {"conv": "ConvTranspose <strides = [2, 2]> (x, w)", "w_shape": (3, 4, 2, 2), "h": 12},
    "grouped conv transpose add": {"conv": "ConvTranspose <group = 3, strides = [2, 2]> (x, w)", "w_shape": (3, 2, 2, 2),
                                   "k_shape": (1, 6, 1, 1), "cout": 6, "h": 12},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_affine_after_conv_folds_with_same_outputs(case):
    model = _model(**CASES[case])
    original = model.clone()
    result = FuseConvAffine()(model)
    assert result.modified and result.stats["fused"] == 1
    assert len(op_types(result.model)) == 1 and op_types(result.model)[0] in ("Conv", "ConvTranspose")
    check_full(result.model)
    assert result.model.opset_imports[""] == 11
    assert_same_outputs(original, result.model, {"x": rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)}, atol=1e-5, rtol=1e-5)
    assert not FuseConvAffine()(result.model).modified


@pytest.mark.parametrize("k_shape, reason", [((1, 4, 6, 6), "varies spatially"), ((1, 1, 1, 6), "along width")])
def test_non_channel_constants_are_not_fused(k_shape, reason):
    model = _model(k_shape=k_shape)
    assert not FuseConvAffine()(model).modified, reason


def test_transpose_mul_is_not_fused():
    # Scaling ConvTranspose weights per output channel needs the group layout; not claimed.
    model = _model(conv="ConvTranspose <strides = [2, 2]> (x, w)", w_shape=(3, 4, 2, 2), h=12, follow="Mul (c, k)")
    assert not FuseConvAffine()(model).modified


def test_conv_output_used_twice_is_not_fused():
    text = TEMPLATE.format(conv="Conv <pads = [1, 1, 1, 1]> (x, w)", follow="Add (c, k)", cout=4, h=6).replace(
        "=> (float[N, 4, 6, 6] y)", "=> (float[N, 4, 6, 6] y, float[N, 4, 6, 6] c)")
    r = rng(0)
    model = make_model(text, initializers={"w": r.standard_normal((4, 3, 3, 3)).astype(np.float32),
                                           "k": r.standard_normal((1, 4, 1, 1)).astype(np.float32)})
    assert not FuseConvAffine()(model).modified
