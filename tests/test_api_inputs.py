"""What the API is given: the caller's model is never modified, and its options are checked as
the CLI's flags and a recipe's [options] are (typed errors before anything is written)."""

import json
import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxslim
from onnxslim import cli
from onnxslim.core import registry
from onnxslim.errors import ConfigError, PipelineFailed, RecipeError
from tests.core.test_manager import BreakModel
from tests.helpers import MODELS

DIGITS = MODELS / "digits_cnn.onnx"


def _constants_model() -> onnx.ModelProto:
    """x + c -> MatMul(W) -> Relu, c from a Constant node whose tensor has no name (as torch
    exports them): fold-constants lifts it to an initializer and names it."""
    rng = np.random.default_rng(0)
    c = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32))
    c.ClearField("name")
    nodes = [helper.make_node("Constant", [], ["c"], value=c),
             helper.make_node("Add", ["x", "c"], ["a"]),
             helper.make_node("MatMul", ["a", "w"], ["m"]),
             helper.make_node("Relu", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "constants", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
                              [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture
def calibration(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32))
    return str(path)


@pytest.mark.parametrize("options", ["cleanup", "quantize-static"])
def test_a_proto_argument_is_not_modified(options, calibration):
    proto = _constants_model()
    before = proto.SerializeToString()
    extra = {"quantize": "static", "calibration_data": calibration} if options == "quantize-static" else {}
    out = onnxslim.optimize(proto, validate=False, **extra)
    assert proto.SerializeToString() == before
    assert "Constant" not in [n.op_type for n in out.graph.node]  # the pass that named the tensor did run
    if extra:
        assert "QuantizeLinear" in [n.op_type for n in out.graph.node]


def test_an_ir_model_argument_is_not_modified(calibration):
    model = ir.serde.deserialize_model(_constants_model())
    before = ir.serde.serialize_model(model).SerializeToString()
    tensors = [(id(v.const_value), v.const_value.name) for v in model.graph.initializers.values()]
    onnxslim.optimize(model, validate=False)
    onnxslim.optimize(model, validate=False, quantize="static", calibration_data=calibration)
    assert ir.serde.serialize_model(model).SerializeToString() == before
    assert [(id(v.const_value), v.const_value.name) for v in model.graph.initializers.values()] == tensors


@pytest.mark.parametrize("dims, message", [
    ([1, 1, -5, 8], "expected positive dims"),
    ([0, 1, 8, 8], "expected positive dims"),
    ([1, 1, "x", 8], "expected a list of integers"),
    ([1, 1, 8.0, 8], "expected a list of integers"),
    (16, "expected a list of integers"),
])
def test_api_input_shapes_are_checked_as_the_cli_checks_them(tmp_path, capsys, dims, message):
    out = tmp_path / "out.onnx"
    with pytest.raises(ConfigError, match=message) as info:
        onnxslim.optimize(DIGITS, out, input_shapes={"input": dims}, validate=False)
    assert info.value.where == "input_shapes.input"
    with pytest.raises(ConfigError, match=message):
        onnxslim.validate(DIGITS, DIGITS, input_shapes={"input": dims})
    assert not out.exists()
    if not isinstance(dims, int):  # the CLI's text form of the same dims: the same check, the same words
        text = ",".join(map(str, dims))
        assert cli.main([str(DIGITS), str(out), "--input-shape", f"input:{text}"]) == 2
        assert message in capsys.readouterr().err and not out.exists()


def test_api_input_shapes_take_numpy_integers(tmp_path):
    out = tmp_path / "out.onnx"
    onnxslim.optimize(DIGITS, out, input_shapes={"input": np.array([2, 1, 8, 8])}, validate=False)
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 1, 8, 8]


@pytest.fixture
def broken_pass_registered(monkeypatch):
    original = registry.all_passes
    monkeypatch.setattr(registry, "all_passes", lambda: {**original(), BreakModel.name: BreakModel})


def test_a_strict_rollback_still_writes_the_report(tmp_path, capsys, broken_pass_registered):
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    code = cli.main([str(DIGITS), str(out), "--pass", "break-model", "--strict", "--report", str(report), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert "break-model" in err and "Traceback" not in err
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["output"] is None and data["validation"] is None
    assert "break-model" in data["failure"] and not data["pipeline"]["ok"]
    assert data["pipeline"]["passes"][-1]["name"] == "break-model"
    assert data["pipeline"]["passes"][-1]["status"] == "rolled-back"
    assert any("break-model rolled back" in w for w in data["warnings"])

    code = cli.main([str(DIGITS), str(out), "--pass", "break-model", "--strict", "--json"])
    captured = capsys.readouterr()
    assert code == 1 and not out.exists()
    assert json.loads(captured.out)["failure"] == data["failure"]  # stdout is the JSON and only it


def test_a_strict_rollback_in_the_api(tmp_path, broken_pass_registered):
    out = tmp_path / "out.onnx"
    result = onnxslim.run(DIGITS, out, passes=["break-model"], strict=True)
    assert not result.passed and result.failure and result.output is None and not out.exists()
    with pytest.raises(PipelineFailed, match="break-model"):
        onnxslim.optimize(DIGITS, out, passes=["break-model"], strict=True)
    recipe = tmp_path / "strict.toml"
    recipe.write_text("[options]\nstrict = true\n")  # strict from a recipe is as strict
    with pytest.raises(PipelineFailed, match="break-model"):
        onnxslim.optimize(DIGITS, out, passes=["break-model"], recipe=recipe)
    assert not out.exists()


def test_in_memory_calibration_data_is_a_typed_error(tmp_path):
    with pytest.raises(ConfigError, match="calibration_data: expected a path .* got dict"):
        onnxslim.optimize(DIGITS, tmp_path / "out.onnx", quantize="static", validate=False,
                          calibration_data={"input": np.zeros((4, 1, 16, 16), np.float32)})


@pytest.mark.parametrize("option", ["strict", "simplify", "validate", "overwrite_input", "external_data"])
def test_boolean_options_are_not_read_by_truthiness(tmp_path, option):
    out = tmp_path / "out.onnx"
    with pytest.raises(ConfigError, match=f"{option}: expected true or false, got 'false'"):
        onnxslim.run(DIGITS, out, **{option: "false"})
    assert not out.exists()


@pytest.mark.parametrize("setting, value, message", [
    ("min_cosine", 2.0, "a cosine similarity in \\(0, 1\\]"),
    ("min_cosine", 0.0, "a cosine similarity in \\(0, 1\\]"),
    ("min_cosine", math.nan, "a cosine similarity in \\(0, 1\\]"),
    ("min_top1", 1.5, "a fraction of samples in \\[0, 1\\]"),
    ("atol", -1e-4, "a tolerance >= 0"),
    ("rtol", math.nan, "a tolerance >= 0"),
    ("min_snr", math.nan, "a number of dB"),
    ("min_cosine", "0.9", "a number, got '0.9'"),
])
def test_validation_thresholds_are_checked(tmp_path, capsys, setting, value, message):
    out = tmp_path / "out.onnx"
    with pytest.raises(ConfigError, match=f"validation.{setting}: expected {message}"):
        onnxslim.validate(DIGITS, DIGITS, **{setting: value})
    with pytest.raises(ConfigError, match=f"validation.{setting}: expected {message}"):
        onnxslim.run(DIGITS, out, validation={setting: value})
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"[options]\nvalidation = {{ {setting} = {json.dumps(value) if isinstance(value, str) else value} }}\n")
    with pytest.raises(RecipeError, match=f"r.toml: \\[options\\] validation.{setting}: expected {message}"):
        onnxslim.run(DIGITS, out, recipe=recipe)
    if not isinstance(value, str):
        flag = "--" + setting.replace("_", "-")
        assert cli.main([str(DIGITS), str(out), f"{flag}={value}"]) == 2
        assert cli.main(["validate", str(DIGITS), str(DIGITS), f"{flag}={value}"]) == 2
        assert "expected" in capsys.readouterr().err
    assert not out.exists()


def test_thresholds_in_range_are_accepted(tmp_path):
    report = onnxslim.validate(DIGITS, DIGITS, min_cosine=1, min_top1=0.0, atol=math.inf, rtol=0, min_snr=-10.0)
    assert report.passed


def test_pinned_inputs_pin_the_output_dims_the_graph_computes(tmp_path):
    # YOLOv8n pinned to 1x3x320x320 kept declaring output0 [batch, 22, <expression of height and
    # width>]: symbols no input carries any more, where the graph computes [1, 22, 2100]
    import onnx_ir as ir

    from onnxslim.input_shapes import fix_input_shapes
    from tests.helpers import make_model, run_ort

    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, H, W] x, float[N, 4] z) => (float[N, HW3] y, float[N, 4] w, float[M, 4] v) {
            s = Constant<value_ints=[0, -1]>()
            y = Reshape(x, s)
            w = Relu(z)
            v = Relu(z)
        }""")
    fix_input_shapes(model, {"x": (2, 3, 4, 5)})
    shapes = {v.name: list(v.shape) for v in model.graph.outputs}
    assert shapes["y"] == [2, 60]  # HW3 computed from the pins
    # z is not pinned and still carries N: w stays [N, 4], and v's M as declared
    assert isinstance(shapes["w"][0], ir.SymbolicDim) and isinstance(shapes["v"][0], ir.SymbolicDim)
    fix_input_shapes(model, {"z": (2, 4)})
    assert [list(v.shape) for v in model.graph.outputs][1] == [2, 4]
    import numpy as np

    feeds = {"x": np.ones((2, 3, 4, 5), np.float32), "z": np.ones((2, 4), np.float32)}
    assert run_ort(model, feeds)[0].shape == (2, 60)


@pytest.mark.parametrize("source", ["path", "proto"])
def test_the_default_opset_spelled_ai_onnx_is_the_default_opset(tmp_path, source):
    # read as opset 1: fusions rolled back ("schema(::Clip:1)"), dynamic quantization declined
    proto = onnx.load(str(DIGITS))
    version = next(o.version for o in proto.opset_import if o.domain == "")
    del proto.opset_import[:]
    proto.opset_import.append(helper.make_opsetid("ai.onnx", version))  # the nodes keep domain ""
    onnx.save(proto, str(tmp_path / "m.onnx"))
    result = onnxslim.run(tmp_path / "m.onnx" if source == "path" else proto, tmp_path / "out.onnx",
                          quantize="dynamic", validation={"data": str(MODELS / "digits_eval.npz")})
    assert not result.warnings or not any("rolled back" in w for w in result.warnings), result.warnings
    assert result.pipeline.records[-1].status == "applied" and result.validation.passed
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert {o.domain: o.version for o in written.opset_import}[""] == version
    assert "DynamicQuantizeLinear" in {n.op_type for n in written.graph.node}
