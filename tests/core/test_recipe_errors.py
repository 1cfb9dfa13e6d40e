"""A recipe path that cannot be read is a RecipeError naming it (exit 2), not an OSError (exit 3)."""

import pytest

import onnxslim
from onnxslim import cli
from onnxslim.core.recipe import load_recipe
from onnxslim.errors import ConfigError, RecipeError
from tests.helpers import MODELS


def test_a_recipe_path_that_is_a_folder(tmp_path, capsys):
    folder = tmp_path / "r.toml"
    folder.mkdir()
    with pytest.raises(RecipeError, match="recipe path is a folder"):
        load_recipe(folder)
    with pytest.raises(RecipeError, match="recipe path is a folder"):
        onnxslim.optimize(MODELS / "digits_cnn.onnx", tmp_path / "out.onnx", recipe=folder)
    assert cli.main([str(MODELS / "digits_cnn.onnx"), str(tmp_path / "out.onnx"), "--recipe", str(folder)]) == 2
    assert capsys.readouterr().err == f"onnxslim: error: {folder}: recipe path is a folder; give a .toml file\n"
    assert not (tmp_path / "out.onnx").exists()


def test_a_zero_calibration_sample_count_is_refused_where_it_is_written(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[options]\ncalibration_data = "c.npz"\ncalibration_samples = 0\n')
    with pytest.raises(RecipeError, match=r"r\.toml: \[options\] calibration_samples: expected a sample count of at least 1"):
        load_recipe(recipe)
    with pytest.raises(ConfigError, match=r"^calibration_samples: expected a sample count of at least 1, got 0"):
        onnxslim.optimize(MODELS / "digits_cnn.onnx", calibration_data=str(MODELS / "digits_calib.npz"),
                          calibration_samples=0, quantize="static")
