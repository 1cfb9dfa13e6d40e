import numpy as np

from onnxslim.passes.cleanup.fuse_batchnorm import FuseBatchNorm
from tests.helpers import assert_same_outputs, check_full, make_model, op_types, rng

CONV_BN = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
    y = BatchNormalization <epsilon = 0.001> (c, scale, bias, mean, var)
}
"""


def _conv_bn_weights(seed=0):
    r = rng(seed)
    return {
        "w": r.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b": r.standard_normal(4).astype(np.float32),
        "scale": r.uniform(0.5, 2, 4).astype(np.float32),
        "bias": r.standard_normal(4).astype(np.float32),
        "mean": r.standard_normal(4).astype(np.float32),
        "var": r.uniform(0.1, 3, 4).astype(np.float32),
    }


def test_batchnorm_folds_into_conv_with_same_outputs():
    model = make_model(CONV_BN, initializers=_conv_bn_weights())
    original = model.clone()
    result = FuseBatchNorm()(model)
    assert result.modified and result.stats["batchnorms_fused"] == 1
    assert op_types(result.model) == ["Conv"]
    assert set(result.model.graph.initializers) == {"w", "b"}
    check_full(result.model)
    feeds = {"x": rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    assert_same_outputs(original, result.model, feeds, atol=1e-5, rtol=1e-5)


def test_second_run_reports_unchanged():
    model = make_model(CONV_BN, initializers=_conv_bn_weights())
    FuseBatchNorm()(model)
    assert not FuseBatchNorm()(model).modified


def test_conv_output_read_elsewhere_is_left_alone():
    text = CONV_BN.replace("(float[N, 4, 8, 8] y)", "(float[N, 4, 8, 8] y, float[N, 4, 8, 8] c)")
    model = make_model(text, initializers=_conv_bn_weights())
    result = FuseBatchNorm()(model)
    assert not result.modified
    assert op_types(result.model) == ["Conv", "BatchNormalization"]


def test_batchnorm_with_runtime_statistics_is_left_alone():
    text = CONV_BN.replace("float[N, 3, 8, 8] x)", "float[N, 3, 8, 8] x, float[4] mean)")
    weights = _conv_bn_weights()
    weights.pop("mean")
    model = make_model(text, initializers=weights)
    assert not FuseBatchNorm()(model).modified
