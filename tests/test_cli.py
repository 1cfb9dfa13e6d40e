"""The command line end to end: exit codes, one-line errors, nothing written on failure."""

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest

from onnxslim import cli
from onnxslim.core import registry
from tests.core.test_manager import BreakModel
from tests.helpers import MODELS

DIGITS = MODELS / "digits_cnn.onnx"


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model_copy(tmp_path):
    path = tmp_path / "model.onnx"
    shutil.copy(DIGITS, path)
    return path


def _external_data_model(tmp_path, location):
    proto = onnx.load(str(DIGITS))
    folder = tmp_path / "ext"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(proto, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    proto = onnx.load(str(path), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(path))
    return path


def _bad_inputs(tmp_path, model_copy):
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model_copy.read_bytes()[:5000])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    outside = _external_data_model(tmp_path, "../../etc/passwd")
    absolute = tmp_path / "abs"
    absolute.mkdir()
    absolute = _external_data_model(absolute, "/etc/passwd")
    unknown_recipe = tmp_path / "unknown.toml"
    unknown_recipe.write_text('[[pass]]\nname = "no-such-pass"\n')
    malformed_recipe = tmp_path / "malformed.toml"
    malformed_recipe.write_text("[[pass]\nname = 3")
    out = str(tmp_path / "out.onnx")
    return {
        "missing file": ([str(tmp_path / "missing.onnx"), out], "file not found"),
        "non-onnx file": ([str(text), out], "not a valid ONNX model"),
        "truncated": ([str(truncated), out], "not a valid ONNX model"),
        "empty": ([str(empty), out], "not an ONNX model"),
        "external data outside folder": ([str(outside), out], "leaves the model's folder"),
        "absolute external data": ([str(absolute), out], "leaves the model's folder"),
        "output equals input": ([str(model_copy), str(model_copy)], "output path is the input path"),
        "unknown pass in recipe": ([str(model_copy), out, "--recipe", str(unknown_recipe)], "unknown pass 'no-such-pass'"),
        "malformed recipe": ([str(model_copy), out, "--recipe", str(malformed_recipe)], "not valid TOML"),
        "unknown pass flag": ([str(model_copy), out, "--pass", "nope"], "unknown pass 'nope'"),
        "bad input shape": ([str(model_copy), out, "--input-shape", "input:1,x"], "expected a list of integers"),
        "unknown flag": ([str(model_copy), out, "--frobnicate"], "unrecognized arguments"),
    }


CASES = ["missing file", "non-onnx file", "truncated", "empty", "external data outside folder", "absolute external data",
         "output equals input", "unknown pass in recipe", "malformed recipe", "unknown pass flag", "bad input shape",
         "unknown flag"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_error_line_and_exit_2(case, tmp_path, model_copy, capsys):
    argv, message = _bad_inputs(tmp_path, model_copy)[case]
    before = {p: _digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    code = cli.main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("onnxslim: error:")]
    assert code == 2
    assert len(errors) == 1 and message in errors[0], err
    assert err.strip().splitlines() == errors, err  # nothing else: argparse's 40-line usage block was printed too
    assert "Traceback" not in err
    assert not (tmp_path / "out.onnx").exists()
    assert {p: _digest(p) for p in before} == before  # inputs byte-identical


def test_optimize_writes_model_and_json_report(tmp_path, model_copy, capsys):
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    digest = _digest(model_copy)
    code = cli.main([str(model_copy), str(out), "--data", str(MODELS / "digits_eval.npz"), "--report", str(report), "-q"])
    assert code == 0 and out.exists()
    assert _digest(model_copy) == digest
    data = json.loads(report.read_text())
    assert data["schema"] == "onnxslim.optimize/1" and data["passed"]
    assert [p["name"] for p in data["pipeline"]["passes"]][0] == "fold-constants"
    assert data["validation"]["outputs"][0]["max_abs"] <= 1e-4
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith((".tmp.onnx", ".tmp"))]
    # the report is as readable as the model beside it (mkstemp alone would leave it 0600)
    assert report.stat().st_mode & 0o777 == out.stat().st_mode & 0o777 != 0o600


def test_json_stdout_is_only_json(tmp_path, model_copy, capsys):
    assert cli.main([str(model_copy), str(tmp_path / "o.onnx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


@pytest.fixture
def broken_pass_registered(monkeypatch):
    original = registry.all_passes
    monkeypatch.setattr(registry, "all_passes", lambda: {**original(), BreakModel.name: BreakModel})


def test_broken_pass_rolled_back_and_reported(tmp_path, model_copy, capsys, broken_pass_registered):
    out = tmp_path / "out.onnx"
    code = cli.main([str(model_copy), str(out), "--pass", "break-model", "--json"])
    data = json.loads(capsys.readouterr().out)
    record = next(p for p in data["pipeline"]["passes"] if p["name"] == "break-model")
    assert record["status"] == "rolled-back" and "onnx" in record["reason"]
    assert code == 0 and out.exists()  # the rolled-back result is still a correct model


def test_broken_pass_under_strict_exits_1_and_writes_nothing(tmp_path, model_copy, capsys, broken_pass_registered):
    out = tmp_path / "out.onnx"
    code = cli.main([str(model_copy), str(out), "--pass", "break-model", "--strict"])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert "break-model" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_validation_failure_exits_1(tmp_path, model_copy, capsys):
    proto = onnx.load(str(model_copy))
    weight = proto.graph.initializer[0]
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[0] += 10
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    other = tmp_path / "other.onnx"
    onnx.save(proto, str(other))
    assert cli.main(["validate", str(model_copy), str(other), "--data", str(MODELS / "digits_eval.npz")]) == 1
    assert "FAILED" in capsys.readouterr().err


def test_inspect_json_lists_contract_and_weights(capsys):
    assert cli.main(["inspect", str(MODELS / "resnet_mini.onnx"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["inputs"][0]["shape"][0] == "batch"
    assert data["op_types"]["BatchNormalization"] > 0
    assert data["params"] == sum(r["params"] for r in data["params_by_dtype"].values())
    assert data["largest_initializers"][0]["bytes"] >= data["largest_initializers"][-1]["bytes"]


def test_passes_lists_settings(capsys):
    assert cli.main(["passes", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["fold-constants"]["in_simplify"]
    assert {s["name"] for s in rows["fold-constants"]["settings"]} >= {"output_size_limit"}
    method = next(s for s in rows["quantize-static"]["settings"] if s["name"] == "method")
    assert method["type"] == "'minmax' | 'percentile' | 'entropy' | 'mse'"  # the choices, not "Literal"


def test_no_simplify_runs_no_cleanup(tmp_path, model_copy, capsys):
    assert cli.main([str(model_copy), str(tmp_path / "o.onnx"), "--no-simplify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pipeline"]["passes"] == []


def test_input_shape_pins_only_what_the_user_asked(tmp_path, model_copy, capsys):
    out = tmp_path / "o.onnx"
    assert cli.main([str(model_copy), str(out), "--input-shape", "input:2,1,8,8", "-q"]) == 0
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 1, 8, 8]


def test_python_module_entry_point(tmp_path, model_copy):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "onnxslim", "inspect", str(model_copy), "--json"], capture_output=True, text=True)
    assert result.returncode == 0 and json.loads(result.stdout)["outputs"][0]["name"] == "logits"


def test_scan_prune_reports_sensitivity_and_a_proposal(tmp_path, capsys):
    html = tmp_path / "scan.html"
    code = cli.main(["scan-prune", str(DIGITS), "--calibration-data", str(MODELS / "digits_calib.npz"),
                     "--calibration-samples", "64", "--amounts", "0.3,0.7", "--json", "--html", str(html)])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and html.read_text().count("<svg") >= 1
    text = json.dumps(data)
    assert "cosine" in text and "0.7" in text


def test_scan_prune_without_matching_data_is_a_usage_error(tmp_path, capsys):
    np.savez(tmp_path / "wrong.npz", images=np.zeros((4, 1, 8, 8), np.float32))
    code = cli.main(["scan-prune", str(DIGITS), "--calibration-data", str(tmp_path / "wrong.npz")])
    assert code == 2 and "onnxslim: error:" in capsys.readouterr().err


def test_brief_keeps_every_line_of_a_library_message_on_one_line():
    from onnxslim.errors import brief

    message = "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: x\n index: 0 Got: 8 Expected: 1\n\n"
    assert brief(RuntimeError(message)) == ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: x "
                                            "index: 0 Got: 8 Expected: 1")
    assert len(brief(RuntimeError("x" * 1000))) == 240 and brief(RuntimeError("")) == "RuntimeError"


def test_a_run_whose_validation_was_skipped_does_not_print_a_bare_passed(tmp_path, capsys):
    proto = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, S] x) => (float[N, S] y) {
        a = Identity (x)
        y = Relu (a)
    }
    """)
    onnx.save(proto, tmp_path / "seq.onnx")
    assert cli.main([str(tmp_path / "seq.onnx"), str(tmp_path / "out.onnx")]) == 0
    out = capsys.readouterr().err
    assert "PASSED, NOT VALIDATED" in out  # dim 1 is dynamic: no random inputs without --input-shape
    assert cli.main([str(tmp_path / "seq.onnx"), str(tmp_path / "out2.onnx"), "--input-shape", "x:2,5"]) == 0
    out = capsys.readouterr().err
    assert "PASSED" in out and "NOT VALIDATED" not in out
