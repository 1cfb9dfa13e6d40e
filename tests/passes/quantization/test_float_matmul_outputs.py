"""quantize-static: a MatMul whose readers are all float keeps a float output (ORT's MatMulIntegerToFloat)."""

import numpy as np

from onnxslim.passes.quantization.quantize_static import QuantizeStatic
from tests.helpers import check_full, make_model, rng
from tests.passes.quantization.util import REL_L2_BOUND, context, fused_ops, ops, rel_l2

FFN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8, 32] x) => (float[N, 8, 16] y) {
    h = MatMul (x, w1)
    r = Relu (h)
    m = MatMul (r, w2)
    b = Add (m, bias)
    y = LayerNormalization <axis = -1> (b, gamma, beta)
}
"""


def _ffn(outlier: float = 200.0):
    r = rng(0)
    w2 = r.standard_normal((64, 16)).astype(np.float32) / 8
    w2[:, 3] *= outlier  # one output channel ~200x the others, like BERT's residual outlier dims
    return make_model(FFN, initializers={"w1": r.standard_normal((32, 64)).astype(np.float32) / 4, "w2": w2,
                                         "bias": np.zeros(16, np.float32), "gamma": np.ones(16, np.float32),
                                         "beta": np.zeros(16, np.float32)})


def test_matmul_read_by_float_ops_keeps_a_float_output():
    model = _ffn()
    original = model.clone()
    result = QuantizeStatic(context=context({"x": (4, 8, 32)}, count=8))(model)
    assert result.modified and result.stats["nodes_quantized"] == 2
    out = result.model
    (second,) = [n for n in out.graph if n.op_type == "MatMul" and n.outputs[0].consumers()[0].op_type == "Add"]
    assert second.outputs[0].consumers()[0].op_type == "Add"  # no QuantizeLinear on its output
    (first,) = [n for n in out.graph if n.op_type == "MatMul" and n is not second]
    assert first.outputs[0].consumers()[0].op_type == "QuantizeLinear"  # read by a quantized MatMul (Relu absorbed)
    assert ops(out)["QuantizeLinear"] == 2  # x and h: the second MatMul's output is not rounded
    check_full(out)
    fused = fused_ops(out)
    assert fused["MatMulIntegerToFloat"] >= 1 and fused["MatMul"] == 0
    # Rounding the output to uint8 over the outlier channel's range blurs the 15 small channels
    # that LayerNorm then rescales: measured 0.074 relative L2 that way, 0.008 with a float output.
    feeds = {"x": rng(3).standard_normal((4, 8, 32)).astype(np.float32)}
    assert rel_l2(original, out, feeds) < 0.03


ATTENTION = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8, 16] x) => (float[N, 8, 16] y) {
    q = MatMul (x, wq)
    k = MatMul (x, wk)
    kt = Transpose <perm = [0, 2, 1]> (k)
    s = MatMul (q, kt)
    p = Softmax <axis = -1> (s)
    c = MatMul (p, x)
    y = MatMul (c, wo)
}
"""


def _attention():
    r = rng(6)
    return make_model(ATTENTION, initializers={k: r.standard_normal((16, 16)).astype(np.float32) / 4
                                               for k in ("wq", "wk", "wo")})


def test_matmuls_of_two_activations_stay_float_unless_asked():
    from onnxslim.passes.quantization.quantize_static import QuantizeStaticConfig

    shapes = {"x": (4, 8, 16)}
    default = QuantizeStatic(context=context(shapes, count=8))(_attention())
    reasons = {row["kept_float"]: row["nodes"] for row in default.details if "kept_float" in row}
    (attention,) = [r for r in reasons if "two activations" in r]
    assert len(reasons[attention]) == 2  # Q.K^T and P.V
    assert default.stats["weights_quantized"] == 3  # the three projections still are
    both = QuantizeStatic(QuantizeStaticConfig(activation_matmuls=True), context=context(shapes, count=8))(_attention())
    assert both.stats["nodes_quantized"] > default.stats["nodes_quantized"]
    assert fused_ops(both.model)["QLinearMatMul"] > fused_ops(default.model)["QLinearMatMul"]
    feeds = {"x": rng(8).standard_normal((2, 8, 16)).astype(np.float32)}
    assert rel_l2(_attention(), default.model, feeds) < REL_L2_BOUND
    check_full(default.model)
