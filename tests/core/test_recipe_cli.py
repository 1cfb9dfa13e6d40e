"""Recipes end to end on a real model: data-aware [[pass]] tables get the calibration data, and
wrongly typed values are one-line errors (exit 2) before anything is written."""

import json

import numpy as np
import onnx
import pytest

import onnxslim
from onnxslim import cli
from onnxslim.errors import ConfigError
from tests.helpers import MODELS, run_ort

RESNET = MODELS / "resnet_mini.onnx"
CALIB = MODELS / "digits16_calib.npz"
EVAL = MODELS / "digits16_eval.npz"

QUANTIZE = '[[pass]]\nname = "quantize-static"\nmethod = "minmax"\n'
PRUNE = ('[[pass]]\nname = "prune-channels"\namount = 0.3\nskip = ["/fc/Gemm"]\nreconstruct = true\n'
         'max_rows = 512\n')  # the pruning docs' recipe, with fewer refit rows to stay fast


def _recipe(tmp_path, text, *, calibration=True):
    path = tmp_path / "recipe.toml"
    options = "[options]\nvalidate = false\n"
    if calibration:
        options += f'calibration_data = "{CALIB}"\ncalibration_samples = 32\n'
    path.write_text(options + text)
    return path


def _ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _top1(path):
    data = np.load(EVAL)
    (logits,) = run_ort(path, {"input": data["input"]})
    return float(np.mean(logits.argmax(1) == data["labels"]))


def test_quantize_static_recipe_gets_the_recipes_calibration_data(tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert cli.main([str(RESNET), str(out), "--recipe", str(_recipe(tmp_path, QUANTIZE)), "-q"]) == 0, capsys.readouterr().err
    ops = _ops(out)
    assert ops.count("QuantizeLinear") >= 10 and "DequantizeLinear" in ops
    assert _top1(out) >= 0.95  # ranges from the real calibration data: accuracy holds (float: 0.997)


def test_calibration_data_from_the_command_line_reaches_a_recipe_pass(tmp_path, capsys):
    recipe = _recipe(tmp_path, QUANTIZE, calibration=False)
    out = tmp_path / "q.onnx"
    code = cli.main([str(RESNET), str(out), "--recipe", str(recipe), "--calibration-data", str(CALIB),
                     "--calibration-samples", "32", "-q"])
    assert code == 0, capsys.readouterr().err
    assert "QuantizeLinear" in _ops(out)


def test_command_line_calibration_data_overrides_the_recipes(tmp_path, capsys):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[options]\nvalidate = false\ncalibration_data = "{tmp_path / "missing.npz"}"\n' + QUANTIZE)
    out = tmp_path / "q.onnx"
    code = cli.main([str(RESNET), str(out), "--recipe", str(recipe), "--calibration-data", str(CALIB),
                     "--calibration-samples", "32", "-q"])
    assert code == 0, capsys.readouterr().err
    assert "QuantizeLinear" in _ops(out)


@pytest.mark.parametrize("text, need", [(QUANTIZE, "needs calibration data"), (PRUNE, "reconstruct needs calibration data")])
def test_data_aware_recipe_pass_without_any_data_is_one_error(tmp_path, capsys, text, need):
    recipe = _recipe(tmp_path, text, calibration=False)
    out = tmp_path / "o.onnx"
    assert cli.main([str(RESNET), str(out), "--recipe", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"onnxslim: error: {recipe}: pass ")
    assert need in err[0] and "--calibration-data" in err[0]
    assert not out.exists()


def test_prune_channels_recipe_reconstructs_with_the_recipes_data(tmp_path, capsys):
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    code = cli.main([str(RESNET), str(out), "--recipe", str(_recipe(tmp_path, PRUNE)), "--report", str(report), "-q"])
    assert code == 0, capsys.readouterr().err
    record = json.loads(report.read_text())["pipeline"]["passes"][-1]
    assert record["name"] == "prune-channels" and record["status"] == "applied"
    assert record["stats"]["channels_removed"] > 0 and record["stats"]["layers_refit"] > 0
    assert record["after"]["params"] < 0.8 * record["before"]["params"]
    assert _top1(out) >= 0.9  # refit on the calibration data (without it, 30% of the channels cost far more)


def test_api_run_with_a_recipe_and_calibration_data(tmp_path):
    recipe = _recipe(tmp_path, QUANTIZE, calibration=False)
    result = onnxslim.run(RESNET, tmp_path / "q.onnx", recipe=recipe, calibration_data=CALIB, calibration_samples=32)
    assert "QuantizeLinear" in [n.op_type for n in result.model.graph]
    with pytest.raises(ConfigError, match="needs calibration data"):
        onnxslim.run(RESNET, recipe=recipe)


@pytest.mark.parametrize("text, names", [
    ('[options]\nstrict = "false"\nprune = 0.5\nprune_method = "channel"\n', ("[options] strict", "true or false")),
    ('[options]\nstrict = "banana"\n', ("[options] strict", "true or false")),
    ('[options]\nprune = "0.5"\n', ("[options] prune", "a number")),
    ('[[pass]]\nname = "prune-channels"\namount = "0.3"\n', ("pass prune-channels.amount", "a number")),
    ('[[pass]]\nname = "fold-constants"\nlift_constants = "no"\n', ("pass fold-constants.lift_constants", "true or false")),
    ('[options]\ninput_shapes = { input = "1,1,x,16" }\n', ("[options] input_shapes.input", "a list of integers")),
])
def test_wrongly_typed_recipe_values_exit_2_with_one_line(tmp_path, capsys, text, names):
    recipe = tmp_path / "typed.toml"
    recipe.write_text(text)
    out = tmp_path / "o.onnx"
    assert cli.main([str(RESNET), str(out), "--recipe", str(recipe), "--data", str(EVAL)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"onnxslim: error: {recipe}: {names[0]}: expected {names[1]}")
    assert not out.exists()


def test_input_shapes_in_the_command_lines_dims_syntax(tmp_path, capsys):
    recipe = tmp_path / "shapes.toml"
    recipe.write_text('[options]\nvalidate = false\ninput_shapes = { input = "1,1,16,16" }\n')
    out = tmp_path / "o.onnx"
    assert cli.main([str(RESNET), str(out), "--recipe", str(recipe), "-q"]) == 0, capsys.readouterr().err
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 1, 16, 16]
