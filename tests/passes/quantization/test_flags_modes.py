"""Quantization flags name the --quantize modes they apply to, the same way in every error."""

import pytest

from onnxslim import cli
from tests.helpers import MODELS


@pytest.mark.parametrize("argv, line", [
    (["--quantize-min-cosine", "0.99"], "--quantize-min-cosine given without --quantize static|auto"),
    (["--quantize", "dynamic", "--quantize-min-cosine", "0.99"], "--quantize-min-cosine applies to --quantize static|auto only"),
    (["--quantize-smoothing", "0.5"], "--quantize-smoothing given without --quantize static"),
    (["--quantize", "auto", "--quantize-smoothing", "0.5"], "--quantize-smoothing applies to --quantize static only"),
    (["--quantize-exclude", "conv"], "--quantize-exclude given without --quantize static|dynamic|auto"),
])
def test_a_flag_without_its_mode_names_the_modes_it_takes(tmp_path, capsys, argv, line):
    # "--quantize-min-cosine given without --quantize static|dynamic", then "applies to static only" with dynamic
    code = cli.main([str(MODELS / "digits_cnn.onnx"), str(tmp_path / "o.onnx"), *argv, "-q"])
    assert code == 2 and line in capsys.readouterr().err
