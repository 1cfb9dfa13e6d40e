"""Shared test helpers: tiny models from ONNX text, ORT runs, output comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


def make_model(text: str, *, initializers: Mapping[str, np.ndarray] | None = None) -> ir.Model:
    """A model from ONNX text; ``initializers`` adds seeded weights by name."""
    proto = onnx.parser.parse_model(text)
    for name, array in (initializers or {}).items():
        proto.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
    onnx.checker.check_model(proto, full_check=True)
    return ir.serde.deserialize_model(proto)


def run_ort(model: ir.Model | onnx.ModelProto | str | Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    if isinstance(model, ir.Model):
        model = ir.serde.serialize_model(model)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    # Reference runs without ORT's own fusions, so a wrong rewrite cannot hide behind them.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def assert_same_outputs(before, after, feeds, *, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    expected, actual = run_ort(before, feeds), run_ort(after, feeds)
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        assert e.shape == a.shape and e.dtype == a.dtype
        np.testing.assert_allclose(a, e, atol=atol, rtol=rtol)


def op_types(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def check_full(model: ir.Model) -> None:
    onnx.checker.check_model(ir.serde.serialize_model(model), full_check=True)


def assert_cli_rejects_data(capfd, model: Path, data: Path, out: Path, *flags: str, mark: str = "idx=999999") -> None:
    """``onnxslim MODEL OUT FLAGS --calibration-data DATA`` on data the model rejects: exit 2, one line
    on stderr naming ``mark``, no ONNX Runtime log line of its own, nothing written."""
    from onnxslim.cli import main

    code = main([str(model), str(out), *flags, "--calibration-data", str(data), "--no-validate"])
    err = capfd.readouterr().err  # file descriptor level: ORT writes its log to the C stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and not Path(out).exists()
    assert len(lines) == 1 and mark in lines[0], err
    assert "[E:onnxruntime" not in err and "\x1b[" not in err
