import numpy as np

from onnxslim.passes.cleanup.eliminate_common_subexpressions import EliminateCommonSubexpressions
from onnxslim.passes.cleanup.infer_shapes import InferShapes
from onnxslim.passes.cleanup.remove_unused import RemoveUnused
from tests.helpers import assert_same_outputs, check_full, make_model, op_types, rng

DUPLICATES = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8] x) => (float[N, 8] y) {
    a = Relu (x)
    b = Relu (x)
    y = Add (a, b)
}
"""


def test_duplicate_nodes_merge():
    model = make_model(DUPLICATES)
    original = model.clone()
    result = EliminateCommonSubexpressions()(model)
    assert result.modified and op_types(result.model) == ["Relu", "Add"]
    check_full(result.model)
    assert_same_outputs(original, result.model, {"x": rng().standard_normal((2, 8)).astype(np.float32)}, atol=0, rtol=0)
    assert not EliminateCommonSubexpressions()(result.model).modified


def test_dead_branch_and_unused_initializer_removed_but_unused_input_kept():
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 8] x, float[N, 8] unused_input) => (float[N, 8] y) {
        dead = Mul (x, w)
        y = Relu (x)
    }
    """
    model = make_model(text, initializers={"w": np.ones((8,), np.float32), "orphan": np.ones((100,), np.float32)})
    original = model.clone()
    result = RemoveUnused()(model)
    assert result.modified and op_types(result.model) == ["Relu"]
    assert not result.model.graph.initializers
    assert [i.name for i in result.model.graph.inputs] == ["x", "unused_input"]
    assert result.stats["bytes_saved"] == 432
    feeds = {"x": rng().standard_normal((2, 8)).astype(np.float32), "unused_input": np.zeros((2, 8), np.float32)}
    assert_same_outputs(original, result.model, feeds, atol=0, rtol=0)


def test_shape_inference_annotates_values_and_keeps_declared_outputs():
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[batch, 8] x) => (float[batch, 8] y) {
        a = Relu (x)
        y = Sigmoid (a)
    }
    """
    model = make_model(text)
    result = InferShapes()(model)
    relu_out = result.model.graph.node(0).outputs[0]
    assert relu_out.shape is not None and relu_out.shape[1] == 8 and relu_out.shape[0].value == "batch"
    assert result.model.graph.outputs[0].shape[0].value == "batch"
    check_full(result.model)
