"""Shared helpers for the harness tests: bundled models, perturbed copies, CLI runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxslim import cli
from tests.helpers import MODELS

DIGITS = MODELS / "digits_cnn.onnx"
DIGITS_DATA = MODELS / "digits_eval.npz"
CHROMIUM = Path("/usr/bin/chromium")


def scale_weight(src: Path, dst: Path, node_index: int, factor: float = 1.05) -> str:
    """Copies ``src`` with the weight (input 1) of its ``node_index``-th weighted node scaled; returns that node's name."""
    proto = onnx.load(str(src))
    inits = {t.name: t for t in proto.graph.initializer}
    weighted = [n for n in proto.graph.node if len(n.input) > 1 and n.input[1] in inits]
    node = weighted[node_index]
    tensor = inits[node.input[1]]
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(factor), tensor.name))
    onnx.save(proto, str(dst))
    return node.name


def nan_in_output(src: Path, dst: Path) -> None:
    """Copies ``src`` with NaN in the last node's bias: one output column becomes NaN."""
    proto = onnx.load(str(src))
    bias = next(t for t in proto.graph.initializer if t.name == proto.graph.node[-1].input[2])
    array = numpy_helper.to_array(bias).copy()
    array[0] = np.nan
    bias.CopyFrom(numpy_helper.from_array(array, bias.name))
    onnx.save(proto, str(dst))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(args: list[str], tmp_path: Path, capsys) -> tuple[int, dict]:
    report = tmp_path / "report.json"
    code, _, err = run_cli([*args, "--report", report, "-q"], capsys)
    assert report.exists(), err
    return code, json.loads(report.read_text())


@pytest.fixture
def digits_copy(tmp_path: Path) -> Path:
    path = tmp_path / "copy.onnx"
    shutil.copy(DIGITS, path)
    return path
