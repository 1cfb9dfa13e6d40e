"""Requests that cannot be honoured fail up front (exit 2, nothing written); results say what happened."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxslim import api, cli
from tests.core.test_manager import Crash, PerturbWeight
from tests.helpers import MODELS

DIGITS = MODELS / "digits_cnn.onnx"


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr()


@pytest.fixture
def zero_samples(tmp_path):
    path = tmp_path / "zero.npz"
    np.savez(path, input=np.zeros((0, 1, 8, 8), np.float32))
    return path


def test_validation_data_without_samples_is_an_error(tmp_path, capsys, zero_samples):
    out = tmp_path / "out.onnx"
    code, io = _run(capsys, DIGITS, out, "--data", zero_samples)
    assert code == 2 and "no samples" in io.err and not out.exists()
    code, io = _run(capsys, "validate", DIGITS, DIGITS, "--data", zero_samples, "--latency", "3")
    assert code == 2 and "no samples" in io.err and "internal error" not in io.err


def test_negative_seed_is_a_usage_error(tmp_path, capsys):
    code, io = _run(capsys, DIGITS, tmp_path / "out.onnx", "--seed", "-1")
    assert code == 2 and "seed must be >= 0" in io.err


@pytest.mark.parametrize("flags", [("--report", "missing/r.json"), ("--html", "missing/r.html"),
                                   ("--html", "r.html", "--no-validate"), ("--calibration-samples", "5")])
def test_unwritable_or_ineffective_requests_fail_before_writing(tmp_path, capsys, flags):
    flags = [str(tmp_path / f) if f.endswith((".json", ".html")) else f for f in flags]
    out = tmp_path / "out.onnx"
    code, io = _run(capsys, DIGITS, out, *flags)
    assert code == 2 and io.err.count("\n") == 1 and not out.exists(), io.err


def _concat_model(path):
    """x [1, 2, H] concatenated with a [1, 2, 3] constant on axis 1, then added to a [1, 4, 3] bias:
    it runs only at H == 3."""
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "c"], ["xc"], axis=1), helper.make_node("Add", ["xc", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, "h"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3])],
        [helper.make_tensor("c", TensorProto.FLOAT, [1, 2, 3], np.ones(6, np.float32)),
         helper.make_tensor("b", TensorProto.FLOAT, [1, 4, 3], np.ones(12, np.float32))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def test_a_pinned_shape_the_graph_cannot_compute_is_an_error(tmp_path, capsys):
    model, out = _concat_model(tmp_path / "m.onnx"), tmp_path / "out.onnx"
    code, io = _run(capsys, model, out, "--input-shape", "x:1,2,4")
    assert code == 2 and "cannot run at this shape" in io.err and "x:1,2,4" in io.err and not out.exists()
    code, io = _run(capsys, model, out, "--input-shape", "x:1,2,3")
    assert code == 0 and out.exists(), io.err


def test_validate_fails_a_model_with_other_inputs_or_outputs_and_reports_it(tmp_path, capsys):
    # it was a usage error (exit 2) without the report a pipeline reads: the changed contract is the failure
    other, renamed = tmp_path / "other.onnx", tmp_path / "renamed.onnx"
    proto = onnx.load(str(DIGITS))
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value += 1
    onnx.save(proto, str(other))
    proto = onnx.load(str(DIGITS))
    proto.graph.output[0].name = proto.graph.node[-1].output[0] = "scores"
    onnx.save(proto, str(renamed))
    for model, changed in ((other, "input 'input'"), (renamed, "output 'logits' FLOAT ['batch', 10] vs output 'scores'")):
        report = tmp_path / "r.json"
        code, io = _run(capsys, "validate", DIGITS, model, "-q", "--report", report, "--html", tmp_path / "r.html")
        assert code == 1 and "not the same inputs and outputs" in io.err and changed in io.err, io.err
        written = json.loads(report.read_text())
        assert written["passed"] is False and written["contract"].startswith("not the same inputs and outputs")
        assert "not the same inputs" in (tmp_path / "r.html").read_text()


def test_rolled_back_passes_are_warnings_in_the_result(tmp_path):
    result = api.run(DIGITS, tmp_path / "out.onnx", passes=[Crash()], validate=False)
    assert result.warnings == ["pass crash rolled back: RuntimeError: boom"]
    assert result.to_dict()["warnings"] == result.warnings


def test_json_into_a_closed_pipe_keeps_the_exit_code():
    command = f"{sys.executable} -m onnxslim validate {DIGITS} {DIGITS} --json | head -c 10"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "BrokenPipe" not in done.stderr and "internal error" not in done.stderr, done.stderr


def test_a_failed_validation_is_in_the_json_report():
    result = api.run(DIGITS, passes=[PerturbWeight()], validation={"data": str(MODELS / "digits_eval.npz")})
    payload = json.loads(json.dumps(result.to_dict(), default=str))
    assert payload["passed"] is False and payload["validation"] is not None
    assert payload["validation"]["passed"] is False and payload["validation"]["outputs"]


def test_quantize_auto_without_data_asks_for_shapes_it_cannot_guess(tmp_path, capsys):
    model, out = _concat_model(tmp_path / "m.onnx"), tmp_path / "out.onnx"
    code, io = _run(capsys, model, out, "--quantize", "auto", "--no-validate")
    assert code == 2 and "give --input-shape x:" in io.err and "--calibration-data" in io.err and not out.exists()


@pytest.mark.parametrize("flags", [("--lowrank-min-cosine", "0.9"), ("--lowrank-method", "plain"),
                                   ("--lowrank", "0.9", "--lowrank-refit", "oneshot")])
def test_lowrank_settings_alone_or_without_their_data_are_errors(tmp_path, capsys, flags):
    out = tmp_path / "out.onnx"
    code, io = _run(capsys, MODELS / "vit_tiny.onnx", out, *flags, "--no-validate")
    assert code == 2 and io.err.count("\n") == 1 and not out.exists(), io.err


def test_scan_prune_takes_no_zero_sample_count(capsys):
    code, io = _run(capsys, "scan-prune", DIGITS, "--calibration-data", MODELS / "digits_calib.npz",
                    "--calibration-samples", "0")
    assert code == 2 and "at least 1" in io.err


def test_recipe_options_needing_data_name_the_recipe(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[options]\nprune = 0.3\nprune_method = "channel"\nreconstruct = true\n')
    code, io = _run(capsys, DIGITS, tmp_path / "out.onnx", "--recipe", recipe)
    assert code == 2 and str(recipe) in io.err and "calibration data" in io.err


@pytest.mark.parametrize("flags, words", [(("--prune-skip", "no_such_layer"), "matches no prunable layer"),
                                          (("--prune-skip", "("), "nor a valid regular expression"),
                                          (("--prune-overrides", "no_such_layer=0.5"), "matches no prunable layer")])
def test_pruning_names_that_match_nothing_are_errors(tmp_path, capsys, flags, words):
    out = tmp_path / "out.onnx"
    code, io = _run(capsys, DIGITS, out, "--prune", "0.3", *flags, "--no-validate")
    assert code == 2 and words in io.err and not out.exists(), io.err


def test_a_model_onnxruntime_cannot_load_is_an_input_error_before_any_work(tmp_path, capsys):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["a"], name="n"), helper.make_node("Relu", ["a"], ["y"], name="n")],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model, out = tmp_path / "dup.onnx", tmp_path / "out.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), model)
    for argv in ([model, out], ["validate", model, model]):
        code, io = _run(capsys, *argv)
        assert code == 2 and "not a model ONNX Runtime can run" in io.err and "internal error" not in io.err
    assert not out.exists()


def _matmul_model(path, *, weight_is_input=False, batch=1, opset=17):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [64, 64], (0.1 * np.random.default_rng(0).standard_normal(4096)).astype(np.float32))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64])]
    if weight_is_input:  # an overridable default (IR >= 4): the application may feed w
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [64, 64]))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 64])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8), path)
    return path


def test_dynamic_quantization_leaves_a_feedable_weight_float(tmp_path):
    model = _matmul_model(tmp_path / "m.onnx", weight_is_input=True)
    result = api.run(model, tmp_path / "out.onnx", quantize="dynamic", validate=False)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node]
    assert "MatMulInteger" not in ops and "DynamicQuantizeLinear" not in ops, ops
    assert result.passed


def test_quantize_auto_times_a_fixed_batch_as_it_is(tmp_path):
    model, data = _matmul_model(tmp_path / "m.onnx", batch=2), tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32))
    result = api.run(model, quantize="auto", calibration_data=str(data), validate=False)
    record = next(r for r in result.pipeline.records if r.name == "quantize-auto")
    assert record.status != "rolled-back", record.reason


def test_dynamic_quantization_below_opset_11_declines_and_auto_still_runs(tmp_path):
    model, data = _matmul_model(tmp_path / "m.onnx", opset=9), tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)[:1])
    result = api.run(model, quantize="dynamic", validate=False)
    record = next(r for r in result.pipeline.records if r.name == "quantize-dynamic")
    assert record.status == "unchanged" and "needs opset 11" in str(record.to_dict()), record.to_dict()
    result = api.run(model, quantize="auto", calibration_data=str(data), validate=False)
    assert next(r for r in result.pipeline.records if r.name == "quantize-auto").status != "rolled-back"


def test_initializers_listed_as_inputs_need_no_data(tmp_path):
    """IR 3: every initializer is also in graph.input, and ORT takes only the real inputs."""
    model = _matmul_model(tmp_path / "m.onnx", weight_is_input=True, opset=9)
    proto = onnx.load(str(model))
    proto.ir_version = 3
    onnx.save(proto, str(model))
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)[:1])
    result = api.run(model, tmp_path / "out.onnx")
    assert result.validation is not None and result.validation.skipped is None and result.passed
    result = api.run(model, tmp_path / "out2.onnx", validation={"data": str(data)})
    assert result.passed and result.validation.samples == 1


def test_a_string_input_is_validated_with_random_words_or_text_arrays(tmp_path):
    graph = helper.make_graph([helper.make_node("Identity", ["s"], ["t"])], "g",
                              [helper.make_tensor_value_info("s", TensorProto.STRING, [1, 2])],
                              [helper.make_tensor_value_info("t", TensorProto.STRING, [1, 2])])
    model, data = tmp_path / "s.onnx", tmp_path / "s.npz"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), model)
    np.savez(data, s=np.array([["ab", "cd"]]))  # '<U2': what an .npz holds without pickling
    for validation in (None, {"data": str(data)}):
        result = api.run(model, tmp_path / "out.onnx", validation=validation)
        assert result.validation.skipped is None and result.validation.samples >= 1 and result.passed
