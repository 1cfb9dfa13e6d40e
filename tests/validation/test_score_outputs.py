"""Only outputs computed like class scores are held to top-1 agreement."""

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper

from onnxslim.validation import ValidationOptions
from onnxslim.validation.harness import score_outputs, validate_models


def _model(tail: list) -> ir.Model:
    """x [N, 8, 16] -> MatMul(W [16, 32]) -> ``tail`` ops -> y."""
    rng = np.random.default_rng(0)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [16, 32], rng.standard_normal(512).astype(np.float32))
    nodes, last = [helper.make_node("MatMul", ["x", "w"], ["h"])], "h"
    for index, (op, attrs) in enumerate(tail):
        nodes.append(helper.make_node(op, [last], [f"t{index}"], **attrs))
        last = f"t{index}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))


def test_scores_come_from_linear_layers_and_softmax_not_pooling():
    assert score_outputs(_model([("ReduceMean", {"axes": [1], "keepdims": 0})])) == frozenset()
    assert score_outputs(_model([("ReduceMean", {"axes": [1], "keepdims": 0}), ("Softmax", {"axis": -1})])) == {"y"}
    assert score_outputs(_model([("Flatten", {"axis": 1}), ("Identity", {})])) == {"y"}  # MatMul behind reshapes


def test_a_pooled_embedding_is_judged_by_cosine_not_by_its_argmax():
    original = _model([("ReduceMean", {"axes": [1], "keepdims": 0})])
    perturbed = _model([("ReduceMean", {"axes": [1], "keepdims": 0})])
    perturbed.graph.initializers["w"].const_value = ir.tensor(
        original.graph.initializers["w"].const_value.numpy() * np.float32(1.02)
        + np.float32(0.03) * np.random.default_rng(1).standard_normal((16, 32)).astype(np.float32), name="w")
    report = validate_models(original, perturbed, ValidationOptions(lossy=True, random_samples=64))
    output = report.outputs[0]
    assert output.top1 is None and output.cosine > 0.99 and report.passed, output.failures
    scored = _model([("ReduceMean", {"axes": [1], "keepdims": 0}), ("Softmax", {"axis": -1})])
    report = validate_models(scored, scored.clone(), ValidationOptions(random_samples=8))
    assert report.outputs[0].top1 == 1.0


def test_a_softmax_written_out_as_exp_over_its_sum_is_a_score_output():
    # magika (a jax2tf export) writes its classifier's softmax as Exp / ReduceSum(Exp)
    model = _model([("ReduceMean", {"axes": [1], "keepdims": 0}), ("Exp", {})])
    graph = model.graph
    exps = graph.outputs[0]
    total = ir.node("ReduceSum", [exps], attributes={"keepdims": 1}, num_outputs=1)
    ratio = ir.node("Div", [exps, total.outputs[0]], num_outputs=1)
    graph.extend([total, ratio])
    ratio.outputs[0].name = "probs"
    graph.outputs[0] = ratio.outputs[0]
    assert score_outputs(model) == {"probs"}
    # as magika writes it: the sum broadcast back before the Div
    shape = ir.node("Shape", [exps], num_outputs=1)
    spread = ir.node("Expand", [total.outputs[0], shape.outputs[0]], num_outputs=1)
    graph.insert_before(ratio, [shape, spread])
    ratio.replace_input_with(1, spread.outputs[0])
    assert score_outputs(model) == {"probs"}
    ratio.replace_input_with(1, exps)  # e / e: no sum, no distribution
    assert score_outputs(model) == frozenset()
