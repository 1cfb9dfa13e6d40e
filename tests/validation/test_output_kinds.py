"""Outputs that are not one batched tensor: a sequence, a data-dependent length across batches.
Both were internal errors (exit 3) in `onnxslim validate` and in the optimizer's validation."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from tests.validation.conftest import run_json

FLOAT = onnx.TensorProto.FLOAT


def _save(path, nodes, outputs, initializers=()):
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", FLOAT, ["N", 10])], outputs, list(initializers))
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def _sequence_model(path):
    sequence = oh.make_value_info("sq", oh.make_sequence_type_proto(oh.make_tensor_type_proto(FLOAT, None)))
    return _save(path, [oh.make_node("Relu", ["x"], ["y"]), oh.make_node("SequenceConstruct", ["y", "x"], ["sq"])],
                 [oh.make_tensor_value_info("y", FLOAT, ["N", 10]), sequence])


def _nonzero_model(path):
    zero = onnx.numpy_helper.from_array(np.array(0, np.float32), "zero")
    return _save(path, [oh.make_node("Greater", ["x", "zero"], ["mask"]), oh.make_node("NonZero", ["mask"], ["nz"]),
                        oh.make_node("Relu", ["x"], ["y"])],
                 [oh.make_tensor_value_info("y", FLOAT, ["N", 10]), oh.make_tensor_value_info("nz", onnx.TensorProto.INT64, [2, "K"])],
                 [zero])


@pytest.mark.parametrize("make, batches", [(_sequence_model, 1), (_sequence_model, 3), (_nonzero_model, 3)])
def test_outputs_that_are_not_one_batched_tensor_are_compared(tmp_path, capsys, make, batches):
    src = make(tmp_path / "model.onnx")
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32))
    code, report = run_json(["validate", src, src, "--data", data, "--batch-size", str(6 // batches)], tmp_path, capsys)
    assert code == 0 and report["passed"] and {o["name"] for o in report["outputs"]} == {"y", "sq" if make is _sequence_model else "nz"}
    code, report = run_json([src, tmp_path / "out.onnx", "--data", data, "--batch-size", str(6 // batches)], tmp_path, capsys)
    assert code == 0 and report["validation"]["passed"]


def test_an_optimized_model_that_fails_where_the_original_runs_fails_validation(tmp_path, capsys):
    # it was a DataError: exit 2 with --data, and "validation skipped", exit 0, with random data
    relu = [oh.make_node("Relu", ["x"], ["r"])]
    output = [oh.make_tensor_value_info("y", FLOAT, ["N", 10])]
    src = _save(tmp_path / "a.onnx", relu + [oh.make_node("Identity", ["r"], ["y"])], output)
    bias = onnx.numpy_helper.from_array(np.zeros((4, 10), np.float32), "bias")  # broadcasts only at N = 1 or 4
    broken = _save(tmp_path / "b.onnx", relu + [oh.make_node("Add", ["r", "bias"], ["y"])], output, [bias])
    data = tmp_path / "data.npz"
    np.savez(data, x=np.ones((3, 10), np.float32))
    code, report = run_json(["validate", src, broken, "--data", data], tmp_path, capsys)
    assert code == 1 and not report["passed"]
    assert "does not run where the original does" in report["providers"][0]["failure"]
    code, report = run_json(["validate", src, broken, "--input-shape", "x:3,10", "--latency", "3"], tmp_path, capsys)
    assert code == 1 and not report["passed"] and report["skipped"] is None and report["latency"] is None


def test_a_sequence_whose_elements_change_shape_fails(tmp_path, capsys):
    # the elements were raveled into one array: [N, 6] and [N, 2, 3] elements compared equal
    def build(shape, path):
        target = onnx.numpy_helper.from_array(np.array(shape, np.int64), "target")
        sequence = oh.make_tensor_sequence_value_info("sq", FLOAT, None)
        return _save(path, [oh.make_node("Reshape", ["x", "target"], ["r"]),
                            oh.make_node("SequenceConstruct", ["r", "r"], ["sq"])], [sequence], [target])

    src, other = build([-1, 10], tmp_path / "a.onnx"), build([-1, 2, 5], tmp_path / "b.onnx")
    code, report = run_json(["validate", src, src], tmp_path, capsys)
    assert code == 0 and report["passed"]
    code, report = run_json(["validate", src, other], tmp_path, capsys)
    assert code == 1 and "shape" in report["outputs"][0]["failures"][0], report["outputs"]


def test_random_batches_of_two_catch_a_batch_folded_to_one(tmp_path, capsys):
    # on random batches of one, an optimized model that reshapes to [1, 10] agreed with the original
    def save(shape, path):
        target = onnx.numpy_helper.from_array(np.array(shape, np.int64), "target")
        return _save(path, [oh.make_node("Reshape", ["x", "target"], ["y"])],
                     [oh.make_tensor_value_info("y", FLOAT, ["N", 10])], [target])

    dynamic, folded = save([-1, 10], tmp_path / "a.onnx"), save([1, 10], tmp_path / "b.onnx")
    code, report = run_json(["validate", dynamic, folded], tmp_path, capsys)
    assert code == 1 and report["samples"] == 8 and "does not run where the original does" in report["providers"][0]["failure"]
    # an export whose dynamic batch axis only takes 1: validated on batches of one, and said so
    code, report = run_json(["validate", folded, folded], tmp_path, capsys)
    assert code == 0 and report["samples"] == 4 and "batches of 1 (the original model refuses 2" in report["data"], report["data"]


def test_random_data_varies_overridable_defaults(tmp_path, capsys):
    # an optimized model that folded a default away (and so ignores what a caller feeds) agreed
    # with the original on the default itself
    def save(path):
        scale = onnx.numpy_helper.from_array(np.array(2.0, np.float32), "scale")
        inputs = [oh.make_tensor_value_info("x", FLOAT, ["N", 10]), oh.make_tensor_value_info("scale", FLOAT, [])]
        graph = oh.make_graph([oh.make_node("Mul", ["x", "scale"], ["y"])], "g", inputs,
                              [oh.make_tensor_value_info("y", FLOAT, ["N", 10])], [scale])
        onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8), str(path))
        return path

    original, folded = save(tmp_path / "a.onnx"), save(tmp_path / "b.onnx")
    model = onnx.load(str(folded))  # the Mul reads a private copy of the default: the input is ignored
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(2.0, np.float32), "fixed"))
    model.graph.node[0].input[1] = "fixed"
    onnx.save(model, str(folded))
    code, report = run_json(["validate", original, original], tmp_path, capsys)
    assert code == 0 and report["passed"]
    code, report = run_json(["validate", original, folded], tmp_path, capsys)
    assert code == 1 and not report["passed"]


def test_an_optimized_model_pinned_to_batch_one_is_validated_on_batches_of_one(tmp_path, capsys):
    # random batches of 2 failed a model optimized with --input-shape x:1,10 against its original
    src = _save(tmp_path / "a.onnx", [oh.make_node("Relu", ["x"], ["y"])], [oh.make_tensor_value_info("y", FLOAT, ["N", 10])])
    pinned = tmp_path / "b.onnx"
    model = onnx.load(str(src))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(pinned))
    code, report = run_json(["validate", src, pinned], tmp_path, capsys)
    assert code == 0 and report["passed"] and report["samples"] == 4, report
