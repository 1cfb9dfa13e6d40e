"""Shared bits of the quantization tests: calibration batches, ORT's optimized graph, error bounds."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxslim.core.pass_base import PassContext
from onnxslim.data import DataBatch
from tests.helpers import run_ort

# int8 with ranges calibrated on the same distribution: outputs stay within 5% relative L2
# error of float on these tiny graphs (measured 0.3-2%; uint8 steps are 1/255 of the range).
REL_L2_BOUND = 0.05


def batches(shapes: dict[str, tuple], count: int = 4, seed: int = 0) -> list[DataBatch]:
    rng = np.random.default_rng(seed)
    return [DataBatch({k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}) for _ in range(count)]


def context(shapes: dict[str, tuple], **kwargs) -> PassContext:
    return PassContext(calibration=batches(shapes, **kwargs))


def fused_ops(model: ir.Model) -> collections.Counter:
    """Op types of the graph ONNX Runtime's CPU EP actually runs (saved with optimized_model_filepath)."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    return collections.Counter(node.op_type for node in optimized.graph.node)


def rel_l2(before, after, feeds) -> float:
    expected, actual = run_ort(before, feeds)[0], run_ort(after, feeds)[0]
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def ops(model: ir.Model) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph)
