import numpy as np
import onnx_ir as ir
import pytest

from onnxslim.passes.cleanup.fuse_matmul_add import FuseMatMulAdd
from tests.helpers import assert_same_outputs, check_full, make_model, op_types, rng

TEMPLATE = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[{a}] x) => (float[{out}] y) {{
    m = MatMul (x, w)
    y = Add ({add_args})
}}
"""


def _build(a="N, 16", out="N, 8", c_shape=(8,), add_args="m, c"):
    r = rng(0)
    weights = {"w": r.standard_normal((16, 8)).astype(np.float32), "c": r.standard_normal(c_shape).astype(np.float32)}
    return make_model(TEMPLATE.format(a=a, out=out, add_args=add_args), initializers=weights)


@pytest.mark.parametrize("c_shape, add_args", [((8,), "m, c"), ((1, 8), "m, c"), ((8,), "c, m")])
def test_matmul_add_becomes_gemm(c_shape, add_args):
    model = _build(c_shape=c_shape, add_args=add_args)
    original = model.clone()
    result = FuseMatMulAdd()(model)
    assert result.modified and result.stats["gemms_created"] == 1
    assert op_types(result.model) == ["Gemm"]
    check_full(result.model)
    feeds = {"x": rng(1).standard_normal((5, 16)).astype(np.float32)}
    assert_same_outputs(original, result.model, feeds, atol=1e-5, rtol=1e-5)


def test_3d_activations_stay_matmul_add():
    model = _build(a="N, 4, 16", out="N, 4, 8")
    assert not FuseMatMulAdd()(model).modified
    assert op_types(model) == ["MatMul", "Add"]


def test_bias_that_broadcasts_to_higher_rank_is_not_fused():
    # Add(M x N, 1 x 1 x N) is 3-D: Gemm would drop a dim from the output.
    model = _build(out="1, N, 8", c_shape=(1, 1, 8))
    assert not FuseMatMulAdd()(model).modified


def test_bias_with_batch_sized_first_dim_is_not_fused():
    # A (3, 8) bias only matches when M == 3; with symbolic M, Gemm's one-way broadcast is not provable.
    model = _build(c_shape=(3, 8), out="3, 8")
    assert not FuseMatMulAdd()(model).modified


def test_a_head_whose_matmul_input_only_inference_knows_is_2d_becomes_gemm():
    """A Paddle-style classifier head: the MatMul reads a Reshape whose output shape no value_info
    gives. Left MatMul + Add, ORT fused it after quantization into a float Gemm that dequantized its
    weight at every run (6-18x slower than float)."""
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 8, 4, 4] x) => (float[N, 5] y) {
        p = GlobalAveragePool (x)
        f = Reshape (p, target)
        m = MatMul (f, w)
        y = Add (m, c)
    }
    """
    r = rng(0)
    model = make_model(text, initializers={"target": np.array([-1, 8], np.int64),
                                           "w": r.standard_normal((8, 5)).astype(np.float32),
                                           "c": r.standard_normal(5).astype(np.float32)})
    original = model.clone()
    result = FuseMatMulAdd()(model)
    assert result.stats["gemms_created"] == 1 and op_types(result.model) == ["GlobalAveragePool", "Reshape", "Gemm"]
    check_full(result.model)
    assert_same_outputs(original, result.model, {"x": rng(1).standard_normal((3, 8, 4, 4)).astype(np.float32)},
                        atol=1e-5, rtol=1e-5)


def test_a_bias_whose_rows_are_an_unnamed_dim_is_not_fused():
    """``a: [?, 16]`` and ``c: [?, 8]`` with unnamed first dims: c may have more rows than a (the Add
    broadcasts a's one row), which Gemm refuses ("Invalid bias shape"). Two unnamed dims compared
    equal and the pair became a Gemm that failed at run time."""
    import onnx

    a = onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [None, 16])
    c = onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [None, 8])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 8])
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["a", "w"], ["m"]),
                                    onnx.helper.make_node("Add", ["m", "c"], ["y"])], "g", [a, c], [y],
                                   [onnx.numpy_helper.from_array(rng(0).standard_normal((16, 8)).astype(np.float32), "w")])
    model = ir.serde.deserialize_model(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]))
    assert not FuseMatMulAdd()(model).modified
    assert op_types(model) == ["MatMul", "Add"]
