"""quantize-static on graphs exports really contain: MaxPool indices, graph inputs that share a
first axis without being a batch, weights shared by several layers, biases the application may feed."""

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import PassContext
from onnxslim.data import DataBatch
from onnxslim.input_shapes import batch_axis_is_dynamic
from onnxslim.passes.quantization.quantize_static import QuantizeStatic
from tests.helpers import check_full, make_model, rng, run_ort
from tests.passes.quantization.util import REL_L2_BOUND, context, ops, rel_l2


def _weights(*shapes, seed=0):
    r = rng(seed)
    return [(r.standard_normal(s) / 4).astype(np.float32) for s in shapes]


SEGNET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4, 8, 8] x) => (float[N, 4, 8, 8] y) {
    a = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    b = Relu (a)
    p, idx = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (b)
    c = Conv <pads = [1, 1, 1, 1]> (p, w2, b2)
    d = Relu (c)
    u = MaxUnpool <kernel_shape = [2, 2], strides = [2, 2]> (d, idx)
    e = Conv <pads = [1, 1, 1, 1]> (u, w3, b3)
    y = Relu (e)
}
"""


def test_a_maxpool_whose_indices_are_read_pools_exact_values():
    # its int64 Indices got a QuantizeLinear (an invalid model, rolled back); then, on uint8 input,
    # neighbours tied and MaxUnpool scattered to other places (13% relative error)
    names = ("w1", "b1", "w2", "b2", "w3", "b3")
    arrays = dict(zip(names, _weights((8, 4, 3, 3), (8,), (8, 8, 3, 3), (8,), (4, 8, 3, 3), (4,))))
    result = QuantizeStatic(context=context({"x": (4, 4, 8, 8)}, count=4))(make_model(SEGNET, initializers=arrays))
    (kept,) = [row for row in result.details if row.get("kept_float", "").startswith("computes or pools the input")]
    assert sorted(kept["nodes"]) == ["Conv (unnamed)", "MaxPool (unnamed)"]
    assert ops(result.model)["QuantizeLinear"] >= 2  # the second Conv is still int8
    feeds = {"x": rng(9).standard_normal((2, 4, 8, 8)).astype(np.float32)}
    assert rel_l2(make_model(SEGNET, initializers=arrays), result.model, feeds) < REL_L2_BOUND
    check_full(result.model)


GCN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 16] x, float[N, N] adj) => (float[N, 8] y) {
    h = MatMul (x, w1)
    m = MatMul (adj, h)
    a = Relu (m)
    h2 = MatMul (a, w2)
    y = MatMul (adj, h2)
}
"""


def _graph(seed: int, nodes: int = 12) -> dict[str, np.ndarray]:
    r = rng(seed)
    adj = (r.random((nodes, nodes)) < 0.3).astype(np.float32)
    return {"x": r.standard_normal((nodes, 16)).astype(np.float32), "adj": adj / adj.sum(1, keepdims=True).clip(1)}


def test_inputs_sharing_a_first_axis_that_is_no_batch_are_never_cut():
    # N nodes with an N x N adjacency: calibration ran adj[:1] with x[:1] and blamed the data
    w1, w2 = _weights((16, 16), (16, 8))
    model = make_model(GCN, initializers={"w1": w1, "w2": w2})
    assert not batch_axis_is_dynamic(model)
    result = QuantizeStatic(context=PassContext(calibration=[DataBatch(_graph(i)) for i in range(4)]))(model)
    assert result.stats["nodes_quantized"] >= 2
    assert rel_l2(make_model(GCN, initializers={"w1": w1, "w2": w2}), result.model, _graph(9)) < REL_L2_BOUND


SHARED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 64] x) => (float[N, 8] y) {
    a = MatMul (x, w)
    b = MatMul (a, w)
    c = MatMul (b, w)
    d = MatMul (c, w)
    y = MatMul (d, head)
}
"""


def test_a_weight_shared_by_layers_counts_once_in_the_quantized_fraction():
    # ALBERT-style: counted per reader, the fraction read 0.27 and mixed precision warned "73% float"
    w, head = _weights((64, 64), (64, 8))
    result = QuantizeStatic(context=context({"x": (8, 64)}))(make_model(SHARED, initializers={"w": w / 2, "head": head}))
    assert result.stats["weight_elements_quantized_fraction"] == 1.0


BIAS_INPUT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 16] x, float[16] b1) => (float[N, 8] y) {
    h = Gemm <transB = 1> (x, w1, b1)
    a = Relu (h)
    y = Gemm <transB = 1> (a, w2, b2)
}
"""


def test_a_bias_the_application_may_feed_keeps_its_layer_float():
    # it was baked into int32 and a fed bias was ignored (relative error 0.89 with b1 = 5)
    w1, b1, w2, b2 = _weights((16, 16), (16,), (8, 16), (8,))
    arrays = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    result = QuantizeStatic(context=context({"x": (4, 16)}))(make_model(BIAS_INPUT, initializers=arrays))
    assert any("bias is also a graph input" in row.get("kept_float", "") for row in result.details)
    feeds = {"x": rng(7).standard_normal((4, 16)).astype(np.float32), "b1": np.full(16, 5.0, np.float32)}
    expected = run_ort(make_model(BIAS_INPUT, initializers=arrays), feeds)[0]
    got = run_ort(result.model, feeds)[0]
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < REL_L2_BOUND
    assert [v.name for v in result.model.graph.inputs] == ["x", "b1"] and result.model.graph.inputs[1].dtype == ir.DataType.FLOAT


def test_mixed_precision_that_keeps_every_layer_float_says_so():
    from onnxslim.passes.quantization.quantize_static import QuantizeStaticConfig

    w, head = _weights((64, 64), (64, 8))
    result = QuantizeStatic(QuantizeStaticConfig(min_cosine=1.0), context=context({"x": (8, 64)}))(
        make_model(SHARED, initializers={"w": w / 2, "head": head}))
    assert result.stats["nodes_quantized"] == 0
    assert any(row.get("warning", "").startswith("mixed precision kept every layer float") for row in result.details)
