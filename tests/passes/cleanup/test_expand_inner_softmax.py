"""expand-inner-softmax: a Softmax off the last axis becomes ReduceMax/Sub/Exp/ReduceSum/Div, same outputs."""

import numpy as np
import pytest

from onnxslim.passes.cleanup.expand_inner_softmax import ExpandInnerSoftmax
from onnxslim.passes.quantization.detection_head import post_processing
from tests.helpers import check_full, make_model, op_types, rng, run_ort

# YOLOv8's distribution-focal-loss block: softmax over 16 bins on axis 1, then the expectation Conv
DFL = """
<ir_version: 8, opset_import: ["" : {opset}]>
g (float[N, 64, 30] x) => (float[N, 4, 30] y, float[N, 16, 4, 30] p) {{
    shape = Constant <value = int64[4] {{0, 4, 16, 30}}> ()
    r = Reshape (x, shape)
    t = Transpose <perm = [0, 2, 1, 3]> (r)
    p = Softmax <axis = {axis}> (t)
    c = Conv <kernel_shape = [1, 1]> (p, w)
    out_shape = Constant <value = int64[3] {{0, 4, 30}}> ()
    y = Reshape (c, out_shape)
}}
"""


def _dfl(opset: int = 17, axis: int = 1):
    return make_model(DFL.format(opset=opset, axis=axis),
                      initializers={"w": np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)})


@pytest.mark.parametrize("opset, axis", [(13, 1), (17, -3), (18, 1)])  # ReduceMax takes axes as an input from 18
def test_inner_softmax_is_expanded_with_the_same_outputs(opset, axis):
    model = _dfl(opset, axis)
    feeds = {"x": (rng(1).standard_normal((2, 64, 30)) * 4).astype(np.float32)}
    before = run_ort(model, feeds)
    result = ExpandInnerSoftmax()(model)
    assert result.modified and result.stats == {"expanded": 1}
    assert "Softmax" not in op_types(result.model)
    assert op_types(result.model).count("ReduceMax") == 1 and op_types(result.model).count("Exp") == 1
    check_full(result.model)
    assert [v.name for v in result.model.graph.outputs] == ["y", "p"]  # the softmax output stays a graph output
    after = run_ort(result.model, feeds)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after[1].sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("opset, axis", [(17, 3), (17, -1), (12, 1)])  # last axis; opset 12 flattens from axis on
def test_last_axis_and_old_opsets_are_left_alone(opset, axis):
    result = ExpandInnerSoftmax()(_dfl(opset, axis))
    assert not result.modified and "Softmax" in op_types(result.model)


def test_float16_softmax_stays_fused():
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float16[N, 8, 5] x) => (float16[N, 8, 5] y) {
        y = Softmax <axis = 1> (x)
    }
    """)
    assert not ExpandInnerSoftmax()(model).modified


def test_the_expanded_dfl_still_counts_as_decode_math_for_quantization():
    # the expectation Conv after the softmax is post-processing, not a feature layer, either way
    for model in (_dfl(), ExpandInnerSoftmax()(_dfl()).model):
        tail = {node.op_type for node in post_processing(model.graph)}
        assert "Conv" in tail
