"""convert-fp16: float16 weights/activations, float32 graph boundary, ops kept float32."""

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim import api
from onnxslim.passes.quantization.convert_fp16 import ConvertFp16, ConvertFp16Config
from onnxslim.passes.quantization.ort_tools import float_weight_bytes
from tests.helpers import MODELS, check_full, make_model, rng, run_ort
from tests.passes.quantization.util import ops

BLOCK = """
<ir_version: 8, opset_import: ["" : OPSET]>
g (float[N, 16] x) => (float[N, 16] y, float[N, 1] s) {
    h = MatMul (x, w1)
    n = LayerNormalization <axis = -1> (h, gamma, beta)
    p = Softmax <axis = -1> (n)
    e = Exp (p)
    s = ReduceSum <keepdims = 1> (e, axes)
    y = Gemm <transB = 1> (n, w2, b2)
}
"""

# float16 keeps 11 significant bits (unit roundoff 4.9e-4): weights, activations and the
# LayerNorm/Softmax in float16 stay within 2e-3 relative L2 of float32 here (measured 3e-4 to 7e-4).
FP16_REL_L2 = 2e-3


def _block(opset: int = 17) -> ir.Model:
    r = rng(0)
    text = BLOCK.replace("OPSET", str(opset))
    if opset < 17:  # no LayerNormalization, ReduceSum axes as an attribute before opset 13
        text = text.replace("n = LayerNormalization <axis = -1> (h, gamma, beta)", "n = Relu (h)")
        text = text.replace("<keepdims = 1> (e, axes)", "<keepdims = 1, axes = [-1]> (e)")
    inits = {"w1": r.standard_normal((16, 32)).astype(np.float32) / 4,
             "w2": r.standard_normal((16, 32)).astype(np.float32) / 4,
             "b2": r.standard_normal(16).astype(np.float32)}
    if opset >= 17:
        inits.update(gamma=np.ones(32, np.float32), beta=np.zeros(32, np.float32), axes=np.array([-1], np.int64))
    return make_model(text, initializers=inits)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.mark.parametrize("opset", [17, 11])
def test_weights_halve_io_stays_float32_and_risky_ops_stay_float32(opset):
    model = _block(opset)
    original = model.clone()
    float_bytes = float_weight_bytes(model, ir.DataType.FLOAT)
    result = ConvertFp16()(model)
    assert result.modified
    out = result.model
    check_full(out)
    assert [(v.name, v.dtype) for v in out.graph.inputs] == [("x", ir.DataType.FLOAT)]
    assert [(v.name, v.dtype) for v in out.graph.outputs] == [("y", ir.DataType.FLOAT), ("s", ir.DataType.FLOAT)]
    assert float_weight_bytes(out, ir.DataType.FLOAT16) > 0
    # float weights (not the int64 axes) halve: only the kept-float32 ops' constants could stay 4 bytes
    assert result.stats["bytes_saved"] == float_bytes // 2 == float_weight_bytes(out, ir.DataType.FLOAT16)
    (exp,) = [n for n in out.graph if n.op_type == "Exp"]
    assert exp.inputs[0].producer().op_type == "Cast"  # Exp, ReduceSum run in float32 behind Casts
    assert {d["op"] for d in result.details if "op" in d} == {"Exp", "ReduceSum"}
    x = {"x": rng(1).standard_normal((8, 16)).astype(np.float32)}
    for expected, actual in zip(run_ort(original, x), run_ort(out, x)):
        assert actual.dtype == np.float32 and _rel(expected, actual) < FP16_REL_L2


def test_keep_float_names_an_op_type_and_second_run_is_unchanged():
    result = ConvertFp16(ConvertFp16Config(keep_float="Gemm,Exp"))(_block())
    (gemm,) = [n for n in result.model.graph if n.op_type == "Gemm"]
    assert gemm.inputs[1].const_value.dtype == ir.DataType.FLOAT  # its weight stays float32
    again = ConvertFp16()(result.model)
    assert not again.modified and "float16" in again.details[0]["skipped"]
    assert not [row for row in result.details if "warning" in row]  # Exp: in the defaults, may match nothing


def test_keep_float_entries_that_match_nothing_are_warnings():
    # "softmax" for Softmax kept nothing float without a word
    result = ConvertFp16(ConvertFp16Config(keep_float="gemm,Nope"))(_block())
    assert [row["warning"] for row in result.details if "warning" in row] == [
        "--fp16-keep-float 'gemm' matches no node name or op type in the model",
        "--fp16-keep-float 'Nope' matches no node name or op type in the model"]


def test_quantized_model_is_refused():
    model = make_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 4] y) {
    y = DequantizeLinear (q, scale)
}
""".replace("(q, scale)", "(x8, scale)").replace("float[N, 4] x)", "int8[N, 4] x8)"),
        initializers={"scale": np.array(0.1, np.float32)})
    result = ConvertFp16()(model)
    assert not result.modified and "already quantized" in result.details[0]["skipped"]


@pytest.mark.parametrize("name, data", [("vit_tiny", "digits"), ("resnet_mini", "digits16")])
def test_trained_models_keep_predictions_in_float16(name, data):
    result = api.run(MODELS / f"{name}.onnx", fp16=True, validate=False)
    record = result.pipeline.records[-1]
    assert record.name == "convert-fp16" and record.status == "applied"  # not rolled back: I/O contract kept
    before = api.io.load(MODELS / f"{name}.onnx")
    assert record.stats["bytes_saved"] >= 0.49 * float_weight_bytes(before, ir.DataType.FLOAT)
    feeds = {"input": np.load(MODELS / f"{data}_eval.npz")["input"][:128]}
    expected, actual = run_ort(before, feeds)[0], run_ort(result.model, feeds)[0]
    assert actual.dtype == np.float32 and _rel(expected, actual) < FP16_REL_L2  # measured 5e-4 / 7e-4
    assert (expected.argmax(1) == actual.argmax(1)).all()
    assert ops(result.model)["Cast"] >= 2


def test_weights_in_constant_nodes_count_as_weights():
    # Paddle's weights reach MatMul through Constant nodes (cleanup off): bytes_saved read 0
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 64] x) => (float[N, 64] y) {
        w = Constant <value = float[64, 64] {%s}> ()
        y = MatMul (x, w)
    }
    """ % ", ".join(["0.5"] * 64 * 64))
    assert float_weight_bytes(model, ir.DataType.FLOAT) == 64 * 64 * 4
    result = ConvertFp16()(model)
    assert result.modified and result.stats["bytes_saved"] == 64 * 64 * 2



def test_calls_of_a_local_function_keep_float32():
    # the function's body is not converted: its float32 Constant met float16 inputs, ORT refused the
    # model and the whole pass was rolled back
    import onnx
    import onnx.helper as oh

    body = [oh.make_node("MatMul", ["x", "W"], ["t"]),
            oh.make_node("Constant", [], ["s"], value=onnx.numpy_helper.from_array(np.full((16,), 0.5, np.float32))),
            oh.make_node("Mul", ["t", "s"], ["y"])]
    function = oh.make_function("custom.fn", "LinScale", ["x", "W"], ["y"], body, [oh.make_opsetid("", 17)])
    r = rng(8)
    weights = [onnx.numpy_helper.from_array((r.standard_normal(s) * 0.3).astype(np.float32), n)
               for n, s in (("W0", (16, 16)), ("W1", (16, 16)), ("W2", (16, 4)))]
    graph = oh.make_graph([oh.make_node("MatMul", ["x", "W0"], ["h0"]),
                           oh.make_node("LinScale", ["h0", "W1"], ["h1"], domain="custom.fn"),
                           oh.make_node("MatMul", ["h1", "W2"], ["y"])], "g",
                          [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])], weights)
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("custom.fn", 1)],
                          functions=[function], ir_version=8)
    model = ir.serde.deserialize_model(proto)
    result = ConvertFp16()(model)
    assert result.modified
    dtypes = {n: v.const_value.dtype for n, v in result.model.graph.initializers.items()}
    assert dtypes["W0"] == dtypes["W2"] == ir.DataType.FLOAT16 and dtypes["W1"] == ir.DataType.FLOAT
    assert any(row.get("kept_float32", "").startswith("calls a local function") for row in result.details)
    x = rng(1).standard_normal((3, 16)).astype(np.float32)
    (expected,), (got,) = run_ort(proto, {"x": x}), run_ort(result.model, {"x": x})
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2)


NO_HALF = """
<ir_version: 10, opset_import: ["" : OPSET]>
g (float[N, 16] x) => (float[N, 16] y) {
    h = MatMul (x, w)
    c = Celu (h)
    i = IsInf (c)
    y = Where (i, h, c)
}
"""


@pytest.mark.parametrize("opset, kept", [(17, {"Celu", "IsInf"}), (20, {"Celu"})])
def test_ops_without_a_float16_type_at_the_models_opset_stay_float32(opset, kept):
    # converted, ORT refused the model and the whole pass was rolled back (IsInf has float16 from opset 20)
    model = make_model(NO_HALF.replace("OPSET", str(opset)),
                       initializers={"w": rng(2).standard_normal((16, 16)).astype(np.float32) / 4})
    original = model.clone()
    result = ConvertFp16()(model)
    rows = {row["op"]: row["kept_float32"] for row in result.details if "op" in row}
    assert {op for op, reason in rows.items() if reason.startswith("no float16 type")} == kept
    assert rows["Celu"] == f"no float16 type in its schema at opset {opset}"
    assert float_weight_bytes(result.model, ir.DataType.FLOAT16) > 0  # the MatMul's weight is float16
    feeds = {"x": rng(5).standard_normal((4, 16)).astype(np.float32)}
    np.testing.assert_allclose(run_ort(result.model, feeds)[0], run_ort(original, feeds)[0], rtol=1e-2, atol=1e-2)
    check_full(result.model)


OVERFLOW = """
<ir_version: 9, opset_import: ["" : 17]>
g (float[N, 16] x) => (float[N, 16] y, float[N, 16] z) {
    h = MatMul (x, w)
    y = Relu (h)
    big = Mul (h, k)
    z = Div (big, k)
}
"""


def test_values_beyond_float16s_range_keep_their_nodes_float32():
    # ORT's CPU EP computes these float16 ops in float32, so only a float16 evaluation sees the inf
    from onnx.reference import ReferenceEvaluator

    from onnxslim.core.pass_base import PassContext
    from onnxslim.data import DataBatch

    r = rng(0)
    arrays = {"w": (r.standard_normal((16, 16)) * 1e3).astype(np.float32), "k": np.array(100.0, np.float32)}
    model = make_model(OVERFLOW, initializers=arrays)
    data = [DataBatch({"x": r.standard_normal((8, 16)).astype(np.float32)}) for _ in range(2)]
    result = ConvertFp16(context=PassContext(calibration=data))(model.clone())
    reasons = {row["op"]: row["kept_float32"] for row in result.details if "op" in row}
    assert set(reasons) == {"Mul", "Div"} and "reaches" in reasons["Mul"] and "float16 max 65504" in reasons["Div"]
    x = {"x": r.standard_normal((4, 16)).astype(np.float32)}
    expected = ReferenceEvaluator(ir.serde.serialize_model(model)).run(None, x)
    got = ReferenceEvaluator(ir.serde.serialize_model(result.model)).run(None, x)
    assert np.isfinite(got[1]).all() and np.abs(expected[1]).max() > 65504 / 100
    np.testing.assert_allclose(got[1], expected[1], rtol=2e-3, atol=2e-3 * np.abs(expected[1]).max())
    # unchecked without data: converted, and the details say so
    plain = ConvertFp16()(model.clone())
    with np.errstate(over="ignore"):  # the overflow this test shows
        assert not np.isfinite(ReferenceEvaluator(ir.serde.serialize_model(plain.model)).run(None, x)[1]).all()
    assert any(row.get("note", "").startswith("float16 range not checked") for row in plain.details)


def test_a_weight_beyond_float16s_range_keeps_its_reader_float32():
    arrays = {"w": np.full((16, 16), 1e5, np.float32), "k": np.array(1.0, np.float32)}
    result = ConvertFp16()(make_model(OVERFLOW, initializers=arrays))
    reasons = {row["op"]: row["kept_float32"] for row in result.details if "op" in row}
    assert reasons["MatMul"].startswith("reads weight 'w' of magnitude 1e+05")
    assert result.model.graph.initializers["w"].const_value.dtype == ir.DataType.FLOAT


MASKED_SCORES = """
<ir_version: 9, opset_import: ["" : 17]>
g (float[N, 8] x, float[N, 8] mask) => (float[N, 8] p) {
    s = MatMul (x, w)
    inverted = Sub (one, mask)
    bias = Mul (inverted, lowest)
    masked = Add (s, bias)
    p = Softmax <axis = -1> (masked)
}
"""


def test_an_attention_mask_sentinel_keeps_nothing_float32():
    # (1 - mask) * float32's lowest: clipped to -65504 in float16 it still masks (MiniLM exports this)
    from onnxslim.core.pass_base import PassContext
    from onnxslim.data import DataBatch

    r = rng(1)
    arrays = {"w": r.standard_normal((8, 8)).astype(np.float32), "one": np.array(1.0, np.float32),
              "lowest": np.array(np.finfo(np.float32).min, np.float32)}
    mask = (r.random((8, 8)) > 0.3).astype(np.float32)
    data = [DataBatch({"x": r.standard_normal((8, 8)).astype(np.float32), "mask": mask})]
    result = ConvertFp16(context=PassContext(calibration=data))(make_model(MASKED_SCORES, initializers=arrays))
    assert not [row for row in result.details if "op" in row]
    feeds = {"x": r.standard_normal((8, 8)).astype(np.float32), "mask": mask}
    expected = run_ort(make_model(MASKED_SCORES, initializers=arrays), feeds)[0]
    np.testing.assert_allclose(run_ort(result.model, feeds)[0], expected, atol=2e-3)


def test_an_op_kept_float32_inside_a_branch_is_refused_with_the_reason():
    # the converter put that op's Casts in the main graph: the checker refused it, an opaque rollback
    model = make_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 16] x, bool c) => (float[N, 16] y) {
            h = MatMul (x, w)
            y = If (c) <then_branch = t () => (float[N, 16] a) { a = Exp (h) },
                        else_branch = e () => (float[N, 16] b) { b = Relu (h) }>
        }
    """, initializers={"w": rng(3).standard_normal((16, 16)).astype(np.float32) / 4})
    before = ops(model)
    result = ConvertFp16()(model)
    assert not result.modified and ops(result.model) == before
    (warning,) = [row["warning"] for row in result.details if "warning" in row]
    assert warning.startswith("model left float32: Exp inside If node") and "then_branch" in warning


def test_a_branch_returning_its_own_initializer_is_converted():
    # folding leaves `then_branch = () => (a) <a = [...]>`; the converter made the branch output
    # float16 but left `a` float32 (no float16 reader), and ORT refused the Add after the If
    import onnx
    from onnx import TensorProto, helper

    r = rng(6)
    branch = lambda name, values: helper.make_graph(  # noqa: E731
        [], name, [], [helper.make_tensor_value_info(name, TensorProto.FLOAT, [16])],
        [helper.make_tensor(name, TensorProto.FLOAT, [16], values)])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]),
         helper.make_node("If", ["c"], ["z"], then_branch=branch("a", r.standard_normal(16)),
                          else_branch=branch("b", -r.standard_normal(16))),
         helper.make_node("Add", ["h", "z"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]),
              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor("w", TensorProto.FLOAT, [16, 16], r.standard_normal(256) / 4)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model = ir.serde.deserialize_model(proto)
    result = ConvertFp16()(ir.serde.deserialize_model(proto))
    assert result.modified and float_weight_bytes(result.model, ir.DataType.FLOAT16) > 0
    for flag in (True, False):
        feeds = {"x": rng(2).standard_normal((4, 16)).astype(np.float32), "c": np.array(flag)}
        np.testing.assert_allclose(run_ort(result.model, feeds)[0], run_ort(model, feeds)[0], rtol=1e-2, atol=1e-2)
    onnx.checker.check_model(ir.serde.serialize_model(result.model), full_check=True)
