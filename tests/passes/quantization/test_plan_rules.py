"""Static QDQ planning rules at their edges: what is quantized, absorbed, kept float, and why.

Pinned by a mutation audit: each test fails when the condition it names is dropped or loosened.
"""

from __future__ import annotations

import numpy as np

from onnxslim.passes.quantization import plan as planning
from onnxslim.passes.quantization.detection_head import post_processing
from onnxslim.passes.quantization.common import tensor_dtypes
from tests.helpers import make_model, rng


def _plan_of(text, weights, **kwargs):
    model = make_model(text, initializers=weights)
    for index, node in enumerate(model.graph):
        node.name = f"{node.op_type}_{index}"
    return model, planning.make_plan(model.graph, tensor_dtypes(model), **kwargs)


def _names(nodes):
    return sorted(n.name for n in nodes)


CONV_RELU_CONV = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w1)
    r = Relu (c)
    y = Conv <pads = [1, 1, 1, 1]> (r, w2)
}
"""
_W = {"w1": rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32),
      "w2": rng(1).standard_normal((4, 8, 3, 3)).astype(np.float32)}


def test_plan_absorb_false_keeps_relu_a_node_of_its_own():
    """absorb=False (symmetric activations: a [-t, t] grid cannot stand for a Relu) never absorbs.
    (mutation: ``... and reason is None and absorb`` -> without ``and absorb``)"""
    _, plan = _plan_of(CONV_RELU_CONV, _W, absorb=False)
    assert plan.absorbed == {}
    _, absorbing = _plan_of(CONV_RELU_CONV, _W)
    assert _names(absorbing.absorbed) == ["Relu_1"]


def test_plan_include_still_absorbs_the_included_convs_relu():
    """--quantize-include names the Conv; its Relu (not named) is still absorbed into it.
    (mutation: ``include and not _matches(node, include) and op not in ACTIVATIONS`` without the last clause)"""
    _, plan = _plan_of(CONV_RELU_CONV, _W, include=("Conv_0",))
    assert _names(plan.absorbed) == ["Relu_1"]
    assert "Relu_1" not in [name for name, _ in plan.kept_float]


def test_plan_maxpool_indices_as_graph_output_keep_the_pool_float():
    """Indices that are a graph output are read (by the application) as much as by a MaxUnpool.
    (mutation: dropping ``or node.outputs[1].is_graph_output()`` in _maxpool_indices_read)"""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 8, 8] x) => (float[N, 8, 4, 4] y, int64[N, 8, 4, 4] idx) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w1)
        y, idx = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (c)
    }
    """
    _, plan = _plan_of(text, {"w1": _W["w1"]})
    reasons = dict(plan.kept_float)
    assert reasons.get("MaxPool_1") == planning.INDEXED_POOL_INPUT
    assert reasons.get("Conv_0") == planning.INDEXED_POOL_INPUT


def test_plan_gemm_graph_output_gets_no_qdq():
    """A quantized Gemm producing the graph output: the output is never rounded to 8 bits.
    (mutation: dropping ``not v.is_graph_output() and`` in Plan.quantized_outputs)"""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 8] x) => (float[N, 5] y) {
        h = Gemm <transB = 1> (x, w1, b1)
        y = Gemm <transB = 1> (h, w2, b2)
    }
    """
    r = rng(0)
    weights = {"w1": r.standard_normal((8, 8)).astype(np.float32), "b1": r.standard_normal(8).astype(np.float32),
               "w2": r.standard_normal((5, 8)).astype(np.float32), "b2": r.standard_normal(5).astype(np.float32)}
    model, plan = _plan_of(text, weights)
    last = [n for n in model.graph][-1]
    assert last in plan.quantized and plan.quantized_outputs(last) == []


def test_plan_per_channel_constant_operand_is_quantized_with_constant_operands():
    """constant_operands: an Add by a per-channel constant (8 values, far under the 4096 limit) is quantized.
    (mutation: ``constants[0].size <= 4096`` -> ``<= 4``)"""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w1)
        a = Add (c, k)
        d = Conv <pads = [1, 1, 1, 1]> (a, w2)
        y = Relu (d)
    }
    """
    weights = dict(_W, k=rng(3).standard_normal((1, 8, 1, 1)).astype(np.float32))
    model, plan = _plan_of(text, weights, constant_operands=True)
    assert "Add_1" in _names(plan.quantized)
    _, plain = _plan_of(text, weights)
    assert dict(plain.kept_float).get("Add_1") == "has a constant operand"


def test_plan_double_conv_is_reported_as_not_float32():
    """A float64 layer stays float and the report says why (input dtype), not silently.
    (mutation: DOUBLE dropped from the 'floating' dtypes in _float_reason)"""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (double[N, 3, 8, 8] x) => (double[N, 4, 8, 8] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w1)
        y = Conv <pads = [1, 1, 1, 1]> (c, w2)
    }
    """
    weights = {k: v.astype(np.float64) for k, v in _W.items()}
    _, plan = _plan_of(text, weights)
    reasons = dict(plan.kept_float)
    assert "not float32" in reasons.get("Conv_0", "") and "DOUBLE" in reasons["Conv_0"]


GEMM_PAIR = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8] x) => (float[N, 5] y) {{
    h = Gemm <{attrs}> ({a}, w1, b1)
    r = Relu (h)
    y = Gemm <transB = 1> (r, w2, b2)
}}
"""


def _gemm_weights():
    r = rng(0)
    return {"w1": r.standard_normal((8, 8)).astype(np.float32), "b1": r.standard_normal(8).astype(np.float32),
            "w2": r.standard_normal((5, 8)).astype(np.float32), "b2": r.standard_normal(5).astype(np.float32)}


def test_plan_gemm_with_alpha_or_beta_stays_float_and_trans_a_is_quantized():
    """ORT fuses no QGemm for alpha / beta != 1: such a Gemm stays float, with the reason; QGemm
    transposes A itself, so transA = 1 is quantized. (mutation: dropping ``or attrs.get("beta",
    1.0) != 1.0``)"""
    reason = "Gemm with alpha/beta is not fused by ORT"
    for attrs, kept in (("transA = 1, transB = 1", False), ("transB = 1, beta = 0.5", True),
                        ("transB = 1, alpha = 2.0", True)):
        text = GEMM_PAIR.format(attrs=attrs, a="x")
        if "transA" in attrs:  # x^T: feed [8, N] as [N, 8] with N = 8
            text = text.replace("float[N, 8] x", "float[8, 8] x").replace("float[N, 5] y", "float[8, 5] y")
        _, plan = _plan_of(text, _gemm_weights())
        assert (dict(plan.kept_float).get("Gemm_0") == reason) is kept, attrs


def test_plan_relu_on_a_shared_output_is_not_absorbed():
    """A Relu whose input has another reader cannot take the producer's place (the other reader
    would read the clipped range). (mutation: dropping ``or len(node.inputs[0].uses()) != 1``)"""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w1)
        r = Relu (c)
        d = Conv <pads = [1, 1, 1, 1]> (r, w2)
        e = Conv <pads = [1, 1, 1, 1]> (c, w2)
        s = Add (d, e)
        y = Relu (s)
    }
    """
    _, plan = _plan_of(text, _W)
    assert "Relu_1" not in _names(plan.absorbed)


def test_plan_clip_whose_range_excludes_zero_is_not_absorbed():
    """Clip(0.5, 6) clamps at 0.5, which no quantization grid (it always holds 0) does: it stays a
    node; Clip(0, 6) and Clip(-1, 6) are the grid's own clamp. (mutation: the ``low <= 0.0 <= high``
    test dropped)"""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w1)
        r = Clip (c, lo, hi)
        d = Conv <pads = [1, 1, 1, 1]> (r, w2)
        y = Relu (d)
    }
    """
    for low, absorbed in ((0.5, False), (0.0, True), (-1.0, True)):
        weights = dict(_W, lo=np.array(low, np.float32), hi=np.array(6.0, np.float32))
        _, plan = _plan_of(text, weights)
        assert ("Clip_1" in _names(plan.absorbed)) is absorbed, low


def _tail_names(text, weights):
    model = make_model(text, initializers=weights)
    for index, node in enumerate(model.graph):
        node.name = f"{node.op_type}_{index}"
    return sorted(n.name for n in post_processing(model.graph))


def test_plan_matmul_reading_softmax_through_flatten_is_decode_math():
    """A MatMul fed by a Softmax through Flatten (a DFL-style expectation) is post-processing, not a layer.
    (mutation: Flatten dropped from the ops is_feature looks through)"""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 8, 8] x) => (float[N, 1] y) {
        c = Conv (x, w1)
        s = Softmax <axis = 1> (c)
        f = Flatten (s)
        y = MatMul (f, w2)
    }
    """
    weights = {"w1": rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32),
               "w2": np.arange(4, dtype=np.float32).reshape(4, 1)}  # the bins' values: an expectation
    assert _tail_names(text, weights) == ["Flatten_2", "MatMul_3", "Softmax_1"]


def test_plan_exp_over_sum_of_another_exp_is_not_a_softmax():
    """``Exp(a) / ReduceSum(Exp(b))`` is not a softmax: a MatMul after it is a feature layer.
    (mutation: dropping ``and total.inputs[0] is node.inputs[0]`` in is_softmax)"""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 2] y) {
        a = MatMul (x, w1)
        e1 = Exp (a)
        e2 = Exp (x)
        t = ReduceSum <keepdims = 1> (e2, axes)
        d = Div (e1, t)
        y = MatMul (d, w2)
    }
    """
    weights = {"w1": rng(0).standard_normal((4, 4)).astype(np.float32),
               "w2": rng(1).standard_normal((4, 2)).astype(np.float32), "axes": np.array([1], np.int64)}
    assert _tail_names(text, weights) == []


def test_plan_matmul_of_two_constants_gets_no_left_constant_row():
    """``W1 @ W2`` (both constant) is no layer at all: no "constant on the left" row in the report.
    (mutation: dropping ``and not is_constant(node.inputs[1])`` in _float_reason)"""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y) {
        m = MatMul (w1, w2)
        h = MatMul (x, m)
        y = Relu (h)
    }
    """
    weights = {"w1": rng(0).standard_normal((4, 4)).astype(np.float32),
               "w2": rng(1).standard_normal((4, 4)).astype(np.float32)}
    _, plan = _plan_of(text, weights)
    assert planning.LEFT_CONSTANT not in dict(plan.kept_float).values()
