"""What a run promises its caller: the exit code, the one error line and the report agree; flags
override a recipe; no output replaces an input or another output; a recipe's paths are its own."""

import errno
import json
import os
import shutil

import pytest

import onnxslim
from onnxslim import api, cli
from onnxslim.core import registry
from onnxslim.core.recipe import load_recipe
from onnxslim.errors import ConfigError, OutputPathError, PipelineFailed, ValidationFailed
from onnxslim.validation import ValidationReport, harness
from tests.core.test_manager import LossyNoop, PerturbWeight, _slow_latency
from tests.helpers import MODELS

DIGITS = MODELS / "digits_cnn.onnx"
CALIB = MODELS / "digits_calib.npz"
EVAL = MODELS / "digits_eval.npz"


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr()


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("onnxslim: error:")]


@pytest.fixture
def test_passes(monkeypatch):
    """The test-only passes by name, for --pass."""
    original = registry.all_passes
    monkeypatch.setattr(registry, "all_passes", lambda: {**original(), LossyNoop.name: LossyNoop,
                                                         PerturbWeight.name: PerturbWeight})


@pytest.fixture
def slower(monkeypatch):
    """Every latency measurement says the optimized model is 2x slower (no timing in tests)."""
    monkeypatch.setattr(harness, "measure_latency", _slow_latency)


# 1. strict + slower than the original


def test_strict_slower_is_a_failure_in_the_report_and_on_stderr_even_quiet(tmp_path, capsys, test_passes, slower):
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    code, io = _main(capsys, DIGITS, out, "--pass", "lossy-noop", "--strict", "--report", report, "-q")
    assert code == 1 and not out.exists()
    assert _error_lines(io.err) == io.err.strip().splitlines() and len(_error_lines(io.err)) == 1, io.err
    assert "slower than the original" in io.err
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["output"] is None and data["slower_than_original"] is True
    assert "slower than the original" in data["failure"]

    code, io = _main(capsys, DIGITS, out, "--pass", "lossy-noop", "--strict")
    assert code == 1 and "FAILED" in io.err and "PASSED" not in io.err and len(_error_lines(io.err)) == 1


def test_strict_slower_in_the_api(tmp_path, slower):
    out = tmp_path / "out.onnx"
    result = onnxslim.run(DIGITS, out, passes=[LossyNoop()], strict=True)
    assert not result.passed and "slower" in result.failure and result.output is None and not out.exists()
    assert result.to_dict()["passed"] is False
    with pytest.raises(ValidationFailed, match="slower"):
        onnxslim.optimize(DIGITS, out, passes=[LossyNoop()], strict=True)
    relaxed = onnxslim.run(DIGITS, out, passes=[LossyNoop()])  # only strict makes slower a failure
    assert relaxed.passed and relaxed.failure is None and relaxed.slower_than_original and out.exists()


def test_a_failed_validation_prints_one_error_line_under_quiet(tmp_path, capsys, test_passes):
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    code, io = _main(capsys, DIGITS, out, "--pass", "perturb-weight", "--data", EVAL, "--strict", "-q", "--report", report)
    assert code == 1 and not out.exists()
    assert len(_error_lines(io.err)) == 1 and "validation failed" in io.err and "perturb-weight" in io.err, io.err
    assert json.loads(report.read_text())["failure"].startswith("validation failed")
    with pytest.raises(ValidationFailed, match="validation failed"):
        onnxslim.optimize(DIGITS, passes=[PerturbWeight()], data=str(EVAL), strict=True)
    code, io = _main(capsys, DIGITS, out, "--pass", "perturb-weight", "--data", EVAL, "-q")  # written, still exit 1
    assert code == 1 and out.exists() and len(_error_lines(io.err)) == 1


def test_a_strict_rollback_still_raises_pipeline_failed(tmp_path):
    from tests.core.test_manager import BreakModel

    with pytest.raises(PipelineFailed, match="break-model"):
        onnxslim.optimize(DIGITS, passes=[BreakModel()], strict=True)


# 2. the calibration cache is a core option


def test_calibration_cache_with_a_quantize_static_pass_table(tmp_path, capsys):
    recipe = tmp_path / "q.toml"
    recipe.write_text(f'[options]\ncalibration_data = "{CALIB}"\ncalibration_cache = "c.npz"\n\n'
                      '[[pass]]\nname = "quantize-static"\n')
    code, io = _main(capsys, DIGITS, tmp_path / "out.onnx", "--recipe", recipe, "--no-validate", "-q")
    assert code == 0 and (tmp_path / "c.npz").exists(), io.err

    cache = tmp_path / "flag.npz"
    code, io = _main(capsys, DIGITS, tmp_path / "out2.onnx", "--pass", "quantize-static", "--calibration-data", CALIB,
                     "--calibration-cache", cache, "--no-validate", "-q")
    assert code == 0 and cache.exists(), io.err
    api_cache = tmp_path / "api.npz"
    onnxslim.run(DIGITS, passes=["quantize-static"], calibration_data=CALIB, calibration_cache=api_cache, validate=False)
    assert api_cache.exists()


# 3. flags given on the command line override the recipe, default values included


def test_validation_flags_equal_to_their_defaults_override_the_recipe(tmp_path, capsys, monkeypatch):
    recipe = tmp_path / "v.toml"
    recipe.write_text('[options]\nvalidation = { providers = "cpu,cuda", latency_runs = 5, capture = "off", '
                      'batch_size = 4, random_samples = 2, seed = 3 }\n')
    seen = []

    def fake_validate(original, model, options):
        seen.append(options)
        return ValidationReport(passed=True, outputs=[], samples=1)

    monkeypatch.setattr(api, "validate_models", fake_validate)
    code, io = _main(capsys, DIGITS, tmp_path / "out.onnx", "--recipe", recipe, "--providers", "cpu", "--latency", "0",
                     "--capture", "auto", "--batch-size", "32", "--random", "4", "--seed", "0", "-q")
    assert code == 0, io.err
    options = seen[-1]
    assert (options.providers, options.latency_runs, options.capture) == ("cpu", 0, "auto")
    assert (options.batch_size, options.random_samples, options.seed) == (32, 4, 0)

    code, io = _main(capsys, DIGITS, tmp_path / "out.onnx", "--recipe", recipe, "-q")  # no flags: the recipe's
    options = seen[-1]
    assert (options.providers, options.latency_runs, options.capture, options.seed) == ("cpu,cuda", 5, "off", 3)


# 4. no output replaces an input or another output


@pytest.fixture
def model_copy(tmp_path):
    path = tmp_path / "in.onnx"
    shutil.copyfile(DIGITS, path)
    return path


@pytest.mark.parametrize("flags, clash", [
    (("--report", "{in}"), "input model"),
    (("--html", "{in}"), "input model"),
    (("--report", "{out}"), "output model"),
    (("--calibration-cache", "{out}", "--quantize", "static", "--calibration-data", "{calib}"), "output model"),
    (("--calibration-cache", "{calib}", "--quantize", "static", "--calibration-data", "{calib}"), "calibration data"),
    (("--report", "{eval}", "--data", "{eval}"), "validation data"),
    (("--report", "{dir}/r.html", "--html", "{dir}/r.html"), "HTML report"),
])
def test_an_output_that_would_replace_another_file_is_refused_up_front(tmp_path, capsys, model_copy, flags, clash):
    calib, evaluation = tmp_path / "calib.npz", tmp_path / "eval.npz"
    shutil.copyfile(CALIB, calib), shutil.copyfile(EVAL, evaluation)
    before = {p: p.read_bytes() for p in (model_copy, calib, evaluation)}
    out = tmp_path / "out.onnx"
    names = {"in": model_copy, "out": out, "calib": calib, "eval": evaluation, "dir": tmp_path}
    code, io = _main(capsys, model_copy, out, *(f.format(**names) for f in flags))
    assert code == 2 and len(io.err.strip().splitlines()) == 1, io.err
    assert f"would overwrite the {clash}" in io.err and "Traceback" not in io.err
    assert not out.exists() and all(p.read_bytes() == data for p, data in before.items())


def test_an_existing_output_is_not_replaced_by_the_report(tmp_path, capsys):
    out = tmp_path / "out.onnx"
    shutil.copyfile(DIGITS, out)  # a previous run's model: --report out.onnx must not turn it into JSON
    code, io = _main(capsys, DIGITS, out, "--report", out, "-q")
    assert code == 2 and out.read_bytes() == DIGITS.read_bytes()
    assert str(out) in io.err and io.err.count(str(out)) == 2  # both paths named


def test_validate_refuses_a_report_over_a_model(tmp_path, capsys, model_copy):
    code, io = _main(capsys, "validate", DIGITS, model_copy, "--report", model_copy, "-q")
    assert code == 2 and "would overwrite the optimized model" in io.err
    assert model_copy.read_bytes() == DIGITS.read_bytes()
    with pytest.raises(OutputPathError, match="would overwrite the optimized model"):
        onnxslim.validate(DIGITS, model_copy, html=str(model_copy))
    assert model_copy.read_bytes() == DIGITS.read_bytes()


def test_the_api_checks_the_paths_its_caller_will_write(tmp_path, model_copy):
    with pytest.raises(OutputPathError, match="would overwrite the input model"):
        onnxslim.run(model_copy, tmp_path / "out.onnx", other_outputs={"JSON report": model_copy})


# 5. the calibration cache's folder


def test_a_cache_in_a_missing_folder_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out.onnx"
    code, io = _main(capsys, DIGITS, out, "--quantize", "static", "--calibration-data", CALIB, "--no-validate",
                     "--calibration-cache", tmp_path / "nodir" / "c.npz")
    assert code == 2 and "calibration cache folder does not exist" in io.err and not out.exists()
    assert "internal error" not in io.err and len(io.err.strip().splitlines()) == 1


def test_a_cache_without_calibration_data_is_refused(tmp_path, capsys):
    code, io = _main(capsys, DIGITS, tmp_path / "out.onnx", "--pass", "quantize-static",
                     "--calibration-cache", tmp_path / "c.npz")
    assert code == 2 and "--calibration-cache needs --calibration-data" in io.err and not (tmp_path / "out.onnx").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_cache_in_a_read_only_folder_is_refused_before_any_work(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    out = tmp_path / "out.onnx"
    code, io = _main(capsys, DIGITS, out, "--quantize", "static", "--calibration-data", CALIB, "--no-validate",
                     "--calibration-cache", folder / "c.npz")
    assert code == 2 and "not writable" in io.err and not out.exists()


def test_a_cache_that_cannot_be_saved_is_a_warning_and_the_model_is_written(tmp_path, capsys, monkeypatch):
    from onnxslim.passes.quantization import cache

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "save_calibration_cache", full_disk)
    out = tmp_path / "out.onnx"
    code, io = _main(capsys, DIGITS, out, "--quantize", "static", "--calibration-data", CALIB, "--no-validate",
                     "--calibration-cache", tmp_path / "c.npz")
    assert code == 0 and out.exists(), io.err
    assert "calibration cache not written" in io.err and "No space left" in io.err


# 6. errors of the recipe's family options name the recipe


def test_a_family_option_error_names_the_recipe_and_its_key(tmp_path, capsys):
    recipe = tmp_path / "a.toml"
    recipe.write_text('[options]\nquantize = "dynamic"\ncalibration_method = "mse"\n')
    code, io = _main(capsys, DIGITS, tmp_path / "o.onnx", "--recipe", recipe, "-q")
    assert code == 2 and f"{recipe}: [options] calibration_method:" in io.err, io.err
    with pytest.raises(ConfigError) as caught:
        onnxslim.run(DIGITS, recipe=recipe)
    assert caught.value.path == str(recipe) and caught.value.where == "[options] calibration_method"

    mixed = tmp_path / "b.toml"  # the method from the recipe, the mode from the command line
    mixed.write_text('[options]\ncalibration_method = "mse"\n')
    code, io = _main(capsys, DIGITS, tmp_path / "o.onnx", "--recipe", mixed, "--quantize", "dynamic", "-q")
    assert code == 2 and f"{mixed}: [options] calibration_method:" in io.err, io.err


def test_a_family_option_error_from_flags_does_not_blame_the_recipe(tmp_path, capsys):
    recipe = tmp_path / "plain.toml"
    recipe.write_text("[options]\nstrict = false\n")
    code, io = _main(capsys, DIGITS, tmp_path / "o.onnx", "--recipe", recipe, "--quantize", "dynamic",
                     "--calibration-method", "mse", "-q")
    assert code == 2 and "--calibration-method applies to --quantize static|auto only" in io.err
    assert str(recipe) not in io.err


# 7. a recipe's relative paths are relative to the recipe


def test_recipe_paths_are_relative_to_the_recipe_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    shutil.copyfile(CALIB, folder / "calib.npz")
    shutil.copyfile(EVAL, folder / "eval.npz")
    recipe = folder / "r.toml"
    recipe.write_text(f'[options]\ncalibration_data = "calib.npz"\ncalibration_cache = "{tmp_path / "abs.npz"}"\n'
                      'validation = { data = "eval.npz", html = "report.html" }\n')
    options = load_recipe(recipe).options
    assert options["calibration_data"] == str(folder / "calib.npz")
    assert options["calibration_cache"] == str(tmp_path / "abs.npz")  # absolute: as written
    assert options["validation"]["data"] == str(folder / "eval.npz")
    assert options["validation"]["html"] == str(folder / "report.html")

    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a CI job's working directory, not the recipe's
    result = onnxslim.run(DIGITS, "out.onnx", recipe=os.path.relpath(recipe), passes=["quantize-static"])
    assert result.passed and (elsewhere / "out.onnx").exists()
    assert (folder / "report.html").exists() and (tmp_path / "abs.npz").exists()


def test_strict_does_not_judge_the_latency_of_a_lossless_pipeline(tmp_path, slower):
    # cleanup only, --strict --latency: a noisy "slower" reading failed 2 runs in 6
    result = onnxslim.run(DIGITS, tmp_path / "out.onnx", strict=True, validation={"latency_runs": 5})
    assert result.validation.latency.slower and not result.slower_than_original
    assert result.passed and result.output is not None


def test_no_output_replaces_the_input_s_weights_or_the_recipe(tmp_path, capsys):
    import onnx

    folder = tmp_path / "ext"
    folder.mkdir()
    proto = onnx.load(str(DIGITS))
    onnx.save_model(proto, str(folder / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    weights = (folder / "w.bin").read_bytes()
    recipe = tmp_path / "r.toml"
    recipe.write_text("[options]\nvalidate = false\n")
    for argv in (["--report", folder / "w.bin"], ["--html", folder / "w.bin"], ["--recipe", recipe, "--report", recipe]):
        code, io = _main(capsys, folder / "m.onnx", tmp_path / "out.onnx", *argv, "-q")
        assert code == 2 and "would overwrite the" in io.err, io.err
    code, io = _main(capsys, folder / "m.onnx", folder / "w.bin", "-q")  # the output model over the weights
    assert code == 2 and "input model's external data" in io.err, io.err
    assert (folder / "w.bin").read_bytes() == weights and recipe.read_text() == "[options]\nvalidate = false\n"


@pytest.mark.parametrize("flag", ["--report", "--html", "--calibration-cache"])
def test_an_output_that_is_a_folder_is_refused_before_any_work(tmp_path, capsys, flag):
    (tmp_path / "adir").mkdir()
    extra = ["--calibration-data", CALIB, "--quantize", "static"] if flag == "--calibration-cache" else []
    code, io = _main(capsys, DIGITS, tmp_path / "out.onnx", flag, tmp_path / "adir", *extra, "-q")
    assert code == 2 and "is a folder" in io.err and not (tmp_path / "out.onnx").exists(), io.err


def test_validate_takes_a_quantized_model_as_lossy_and_a_failure_is_one_line(tmp_path, capsys):
    # `onnxslim validate` held an int8 model to the exact tolerances and, failing, printed nothing under -q
    quantized = tmp_path / "q.onnx"
    assert _main(capsys, DIGITS, quantized, "--quantize", "dynamic", "--no-validate", "-q")[0] == 0
    code, io = _main(capsys, "validate", DIGITS, quantized, "--data", EVAL, "-q", "--report", tmp_path / "r.json")
    assert code == 0 and json.loads((tmp_path / "r.json").read_text())["lossy"] is True, io.err
    pruned = tmp_path / "p.onnx"
    assert _main(capsys, DIGITS, pruned, "--prune", "0.5", "--no-validate", "-q")[0] == 0
    code, io = _main(capsys, "validate", DIGITS, pruned, "--data", EVAL, "-q")
    assert code == 1 and len(_error_lines(io.err)) == 1 and "add --lossy" in io.err, io.err
    code, io = _main(capsys, "validate", DIGITS, pruned, "--data", EVAL, "-q", "--lossy")
    assert "add --lossy" not in io.err


def test_the_tolerances_that_judged_are_printed_with_why_they_are_lossy(tmp_path, capsys):
    # a pass under the lossy tolerances showed nowhere but in the JSON
    quantized = tmp_path / "q.onnx"
    assert _main(capsys, DIGITS, quantized, "--quantize", "dynamic", "--no-validate", "-q")[0] == 0
    code, io = _main(capsys, "validate", DIGITS, quantized, "--data", EVAL)
    assert code == 0 and "tolerances: lossy (the optimized model has quantized ops the original lacks): " \
                         "cosine >= 0.99, SNR >= 17 dB, top-1 >= 0.9; no elementwise check" in " ".join(io.err.split()), io.err
    code, io = _main(capsys, "validate", DIGITS, DIGITS, "--data", EVAL)
    assert code == 0 and "tolerances: lossless: atol 0.0001 + rtol 0.0001 x |ref|, cosine >= 0.9999" in io.err
    code, io = _main(capsys, DIGITS, tmp_path / "p.onnx", "--prune", "0.3", "--data", EVAL)
    assert "tolerances: lossy (lossy passes ran: prune-magnitude)" in " ".join(io.err.split()), io.err


def test_the_lossy_hint_only_follows_failures_that_tolerances_decide(tmp_path, capsys):
    import numpy as np
    import onnx
    from onnx import helper

    def save(shape, path):  # the declared output is [M, K]: only the run shows [N, 6] vs [2N, 3]
        target = onnx.numpy_helper.from_array(np.array(shape, np.int64), "target")
        graph = helper.make_graph([helper.make_node("Reshape", ["x", "target"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["M", "K"])], [target])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
        return path

    wide, narrow = save([-1, 6], tmp_path / "a.onnx"), save([-1, 3], tmp_path / "b.onnx")
    code, io = _main(capsys, "validate", wide, narrow, "-q")
    assert code == 1 and "--lossy" not in io.err, io.err
    assert "shape [4, 3] != reference [2, 6] (first batch)" in io.err, io.err  # not the batches joined: [16, 3], [8, 6]


def test_strict_with_a_provider_that_cannot_run_says_so(tmp_path, capsys):
    from onnxslim.runtime import unavailable_reason

    if unavailable_reason("cuda") is None:
        pytest.skip("CUDA runs here: nothing is skipped")
    # every output agreed, yet the line and the report's failure said "the outputs differ"
    code, io = _main(capsys, DIGITS, tmp_path / "o.onnx", "--providers", "all", "--strict", "-q", "--report", tmp_path / "r.json")
    assert code == 1 and "cuda could not run" in io.err and "outputs differ" not in io.err, io.err
    assert "cuda could not run" in json.loads((tmp_path / "r.json").read_text())["failure"]
    code, io = _main(capsys, "validate", DIGITS, DIGITS, "--providers", "all", "--strict", "-q")
    assert code == 1 and "cuda could not run" in io.err, io.err


def test_slower_than_original_is_null_when_no_latency_was_measured(tmp_path, capsys):
    code, io = _main(capsys, DIGITS, tmp_path / "o.onnx", "--quantize", "dynamic", "--no-validate", "--json")
    assert code == 0 and json.loads(io.out)["slower_than_original"] is None
    code, io = _main(capsys, DIGITS, tmp_path / "o.onnx", "--quantize", "dynamic", "--data", EVAL, "--json")
    assert code in (0, 1) and isinstance(json.loads(io.out)["slower_than_original"], bool)
