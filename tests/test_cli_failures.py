"""How a run that does not finish ends: SIGTERM unwinds like Ctrl-C (no temporary folders left),
an output that cannot be written is refused before any work, and a failed run leaves a report
that says it failed (never a previous run's ``passed: true``)."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onnxslim import cli
from onnxslim.outcome import report_failure
from tests.helpers import MODELS, REPO

DIGITS = MODELS / "digits_cnn.onnx"


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr()


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if "onnxslim" in p.name or ".tmp" in p.name]


# 1. SIGTERM


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM")
def test_sigterm_removes_the_temporary_folders_and_exits_143(tmp_path):
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir(), out.mkdir()
    # a latency measurement that would run for minutes: validation holds its onnxslim-validate-* folder meanwhile
    command = [sys.executable, "-m", "onnxslim", str(MODELS / "resnet_mini.onnx"), str(out / "m.onnx"),
               "--latency", "1000000", "--report", str(out / "r.json"), "-q"]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "TMPDIR": str(tmp)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = _wait_for(lambda: any(p.name.startswith("onnxslim-validate-") for p in tmp.iterdir()), 120)
        assert started, "validation never started"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert err.strip() == "onnxslim: terminated"
    assert _leftovers(tmp) == [] and sorted(p.name for p in out.iterdir()) == ["r.json"]
    assert json.loads((out / "r.json").read_text()) == {"schema": "onnxslim.optimize/1", "passed": False,
                                                         "exit_code": 143, "failure": "terminated"}


def test_main_restores_the_previous_sigterm_handler(tmp_path, capsys):
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        _main(capsys, "passes", "-q")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


# 2. outputs whose folder cannot take files


@pytest.mark.parametrize("flag, what", [("OUT", "output"), ("--report", "report"), ("--html", "HTML report")])
def test_an_output_under_a_file_is_refused_before_any_work(tmp_path, capsys, flag, what):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    target = blocker / "x"
    outputs = [target] if flag == "OUT" else [tmp_path / "out.onnx", flag, target]
    code, io = _main(capsys, DIGITS, *outputs, "-q")
    assert code == 2 and io.err == f"onnxslim: error: {target}: {what} folder {str(blocker)!r} is a file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc: a folder not even root can create files in")
@pytest.mark.parametrize("flag", ["OUT", "--report"])
def test_an_output_in_a_folder_that_takes_no_files_is_refused_before_any_work(tmp_path, capsys, flag):
    out = tmp_path / "out.onnx"
    argv = [DIGITS, "/proc/out.onnx"] if flag == "OUT" else [DIGITS, out, flag, "/proc/r.json"]
    code, io = _main(capsys, *argv, "-q")
    assert code == 2 and io.err.count("\n") == 1 and "folder is not writable" in io.err, io.err
    assert not out.exists()


def test_validate_refuses_an_html_report_under_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    code, io = _main(capsys, "validate", DIGITS, DIGITS, "--html", tmp_path / "afile" / "r.html", "-q")
    assert code == 2 and "is a file" in io.err


# 3. a failed run's report


def _previous_report(path: Path) -> None:
    path.write_text(json.dumps({"schema": "onnxslim.optimize/1", "passed": True}))


def test_a_bad_recipe_replaces_the_previous_report_with_a_failure(tmp_path, capsys):
    report, recipe = tmp_path / "r.json", tmp_path / "bad.toml"
    _previous_report(report)
    recipe.write_text('[[pass]]\nname = "fold-constant"\n')
    code, io = _main(capsys, DIGITS, tmp_path / "out.onnx", "--recipe", recipe, "--report", report, "-q")
    line = io.err.strip().removeprefix("onnxslim: error: ")
    assert code == 2 and json.loads(report.read_text()) == {
        "schema": "onnxslim.optimize/1", "passed": False, "exit_code": 2, "failure": line}
    assert "unknown pass 'fold-constant'" in line


def test_an_internal_error_after_the_pipeline_writes_a_failure_report(tmp_path, capsys, monkeypatch):
    from onnxslim import render

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(render, "print_result", broken)
    report = tmp_path / "r.json"
    code, io = _main(capsys, DIGITS, tmp_path / "out.onnx", "--no-validate", "--report", report)
    assert code == 3 and json.loads(report.read_text())["failure"] == "internal error: RuntimeError: boom"
    assert json.loads(report.read_text())["exit_code"] == 3


def test_the_failure_report_has_the_success_report_s_schema(tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    assert _main(capsys, DIGITS, tmp_path / "out.onnx", "--no-validate", "--report", good)[0] == 0
    assert _main(capsys, DIGITS, tmp_path / "out2.onnx", "--no-validate", "--report", bad, "--pass", "nope")[0] == 2
    assert json.loads(bad.read_text())["schema"] == json.loads(good.read_text())["schema"]


def test_validate_writes_a_failure_report(tmp_path, capsys):
    report = tmp_path / "r.json"
    _previous_report(report)
    code, io = _main(capsys, "validate", DIGITS, DIGITS, "--data", tmp_path / "missing.npz", "--report", report, "-q")
    payload = json.loads(report.read_text())
    assert code == 2 and payload["schema"] == "onnxslim.validate/1" and payload["passed"] is False
    assert payload["failure"] == io.err.strip().removeprefix("onnxslim: error: ")


@pytest.mark.parametrize("clash", ["input", "output", "data"])
def test_no_failure_report_over_another_file_of_the_run(tmp_path, capsys, clash):
    model, data = tmp_path / "in.onnx", tmp_path / "eval.npz"
    model.write_bytes(DIGITS.read_bytes())
    data.write_bytes((MODELS / "digits_eval.npz").read_bytes())
    out = tmp_path / "out.onnx"
    report = {"input": model, "output": out, "data": data}[clash]
    before = {p: p.read_bytes() for p in (model, data)}
    code, io = _main(capsys, model, out, "--data", data, "--report", report, "--pass", "nope", "-q")
    assert code == 2 and not out.exists() and all(p.read_bytes() == b for p, b in before.items())


def test_no_failure_report_over_a_file_that_is_not_a_report(tmp_path, capsys):
    report = tmp_path / "notes.json"
    report.write_text('{"mine": true}')
    code, _ = _main(capsys, DIGITS, tmp_path / "out.onnx", "--report", report, "--pass", "nope", "-q")
    assert code == 2 and report.read_text() == '{"mine": true}'


def test_no_failure_report_when_the_error_is_about_the_report_path(tmp_path):
    report = tmp_path / "r.json"
    _previous_report(report)
    args = argparse.Namespace(failure_report=(str(report), "onnxslim.optimize/1"))
    report_failure(args, 2, "r.json: the JSON report would overwrite ...", about=str(report))
    assert json.loads(report.read_text())["passed"] is True
    report_failure(args, 2, "another problem", about=str(tmp_path / "other"))
    assert json.loads(report.read_text())["passed"] is False


# 5. recipe values checked late name the recipe, not a flag


def test_recipe_input_shapes_errors_name_the_recipe(tmp_path, capsys):
    recipe = tmp_path / "shapes.toml"
    recipe.write_text("[options]\ninput_shapes = { x = [1, 1, 8, 8] }\n")
    code, io = _main(capsys, DIGITS, tmp_path / "out.onnx", "--recipe", recipe, "-q")
    assert code == 2 and io.err.startswith(f"onnxslim: error: {recipe}: [options] input_shapes: model has no input 'x'")
    assert "--input-shape" not in io.err


def test_recipe_calibration_samples_zero_names_the_recipe(tmp_path, capsys):
    recipe = tmp_path / "samples.toml"
    recipe.write_text(f'[options]\ncalibration_data = "{MODELS / "digits_calib.npz"}"\ncalibration_samples = 0\n'
                      'quantize = "static"\n')
    code, io = _main(capsys, DIGITS, tmp_path / "out.onnx", "--recipe", recipe, "-q")
    assert code == 2 and io.err.startswith(f"onnxslim: error: {recipe}: [options] calibration_samples: ")
    assert "--calibration-samples" not in io.err


def test_the_calibration_samples_flag_still_names_the_flag(tmp_path, capsys):
    code, io = _main(capsys, DIGITS, tmp_path / "out.onnx", "--calibration-data", MODELS / "digits_calib.npz",
                     "--calibration-samples", "0", "--quantize", "static", "-q")
    assert code == 2 and "--calibration-samples" in io.err and "at least 1" in io.err


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
@pytest.mark.parametrize("moment", ["loading", "running"])
def test_ctrl_c_while_the_command_loads_is_one_line(tmp_path, moment):
    # the console script imported onnx and onnxruntime before main() could catch it: a 30-line traceback
    command = [sys.executable, "-m", "onnxslim", str(MODELS / "resnet_mini.onnx"), str(tmp_path / "m.onnx"),
               "--latency", "1000000", "-q"]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def loading() -> bool:  # numpy mapped: the imports have begun (a timed delay raced the interpreter's start)
        return "numpy" in Path(f"/proc/{process.pid}/maps").read_text()

    def running() -> bool:
        return any(p.name.startswith("onnxslim-validate-") for p in tmp_path.iterdir())

    try:
        assert _wait_for(loading if moment == "loading" else running, 120), f"never reached {moment}"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and err.strip() == "onnxslim: interrupted", err


def test_importing_onnxslim_loads_no_runtime():
    code = "import sys, onnxslim; assert 'onnxruntime' not in sys.modules and 'onnx' not in sys.modules; onnxslim.optimize"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_submodules_are_attributes_of_the_lazy_package():
    code = "import onnxslim; onnxslim.api.run; onnxslim.io.load; assert not hasattr(onnxslim, 'nope')"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


@pytest.mark.parametrize("verbose", [False, True])
def test_an_internal_error_is_exit_3_also_with_verbose(tmp_path, capsys, monkeypatch, verbose):
    # with -v the error was re-raised: Python exited 1, which reads "validation failed"
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli.api, "run", boom)
    code = cli.main([str(DIGITS), str(tmp_path / "o.onnx"), *(["-v"] if verbose else [])])
    err = capsys.readouterr().err
    assert code == 3 and "internal error: RuntimeError: boom" in err and ("Traceback" in err) is verbose, err


def _external_model(folder: Path) -> Path:
    import onnx

    folder.mkdir()
    proto = onnx.load(str(DIGITS))
    onnx.save(proto, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    return folder / "m.onnx"


def test_reports_never_replace_a_model_s_weights_or_the_scanned_model(tmp_path, capsys):
    # `validate m.onnx m.onnx --report w.bin` replaced the weights with JSON; scan-prune's --html the model
    model = _external_model(tmp_path / "ext")
    weights = (tmp_path / "ext" / "w.bin").read_bytes()
    for flag in ("--report", "--html"):
        code, io = _main(capsys, "validate", model, model, flag, tmp_path / "ext" / "w.bin", "-q")
        assert code == 2 and "would overwrite the original model's external data w.bin" in io.err, io.err
    assert (tmp_path / "ext" / "w.bin").read_bytes() == weights
    before = DIGITS.read_bytes()
    code, io = _main(capsys, "scan-prune", DIGITS, "--calibration-data", MODELS / "digits_calib.npz", "--html", DIGITS, "-q")
    assert code == 2 and "would overwrite the input model" in io.err and DIGITS.read_bytes() == before, io.err


def test_an_os_pathlike_input_is_protected_like_a_path(tmp_path):
    import onnxslim
    from onnxslim.errors import OutputPathError

    class Where(os.PathLike):
        def __init__(self, path):
            self.path = str(path)

        def __fspath__(self):
            return self.path

    model = tmp_path / "m.onnx"
    model.write_bytes(DIGITS.read_bytes())
    with pytest.raises(OutputPathError, match="output path is the input path"):
        onnxslim.optimize(Where(model), model)
    assert model.read_bytes() == DIGITS.read_bytes()


def test_a_small_model_with_torch_named_weights_can_be_optimized_in_place(tmp_path, capsys):
    # "the output model's external data would overwrite the input model's external data m.onnx.data",
    # though a small model is saved inline: no m.onnx.data is written
    import onnx

    proto = onnx.load(str(DIGITS))
    onnx.save(proto, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    code, io = _main(capsys, tmp_path / "m.onnx", tmp_path / "m.onnx", "--overwrite-input", "-q")
    assert code == 0, io.err
    assert not any(t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL
                   for t in onnx.load(str(tmp_path / "m.onnx"), load_external_data=False).graph.initializer)
