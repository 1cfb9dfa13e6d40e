"""Cost of the validation harness against just running both models.

Builds a ~100 MB float32 model (a stack of MatMul + Add + Relu layers, numpy + onnx.helper, no
torch) and a copy of it in a temporary folder, then times, on 32 samples:

  baseline:   ONNX Runtime sessions from both files, each run on the 32 samples (one session at a time)
  validation: onnxslim.validate(original, copy) with intermediate capture on (--capture always)

and prints the ratio (target: below 3x). Usage: python benchmarks/bench_validation.py [--layers 25 --width 1024]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxslim
from onnxslim.validation import ValidationOptions, validate_models


def build_model(layers: int, width: int, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, last = [], [], "x"
    for i in range(layers):
        weight = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits += [numpy_helper.from_array(weight, f"w{i}"), numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"mm{i}"], name=f"layer{i}/MatMul"),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"], name=f"layer{i}/Add"),
                  helper.make_node("Relu", [f"add{i}"], [f"h{i}" if i < layers - 1 else "y"], name=f"layer{i}/Relu")]
        last = f"h{i}"
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def run_both(paths: list[Path], inputs: dict[str, np.ndarray]) -> float:
    started = time.perf_counter()
    for path in paths:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session.run(None, inputs)
        del session
    return time.perf_counter() - started


def validate(original: Path, copy: Path, data: Path) -> tuple[float, float, onnxslim.validation.ValidationReport]:
    """(seconds of onnxslim.validate from paths, seconds of the harness on loaded models, report)."""
    started = time.perf_counter()
    report = onnxslim.validate(original, copy, data=str(data), capture="always")
    from_paths = time.perf_counter() - started
    models = onnxslim.load(original), onnxslim.load(copy)
    started = time.perf_counter()
    validate_models(*models, ValidationOptions(data=str(data), capture="always"))
    return from_paths, time.perf_counter() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=25)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onnxslim-bench-") as folder:
        original, copy, data = Path(folder, "model.onnx"), Path(folder, "copy.onnx"), Path(folder, "data.npz")
        model = build_model(args.layers, args.width)
        onnx.save(model, str(original))
        onnx.save(model, str(copy))
        inputs = {"x": np.random.default_rng(1).standard_normal((args.samples, args.width)).astype(np.float32)}
        np.savez(data, **inputs)
        run_both([original, copy], inputs)  # warm the page cache
        base = statistics.median(run_both([original, copy], inputs) for _ in range(args.repeat))
        timings = [validate(original, copy, data) for _ in range(args.repeat)]
        full = statistics.median(t for t, _, _ in timings)
        harness = statistics.median(t for _, t, _ in timings)
        report = timings[-1][2]
        size_mb = original.stat().st_size / 1e6
    captured = report.localization.compared if report.localization else 0
    print(f"model: {args.layers} x MatMul[{args.width}x{args.width}]+Add+Relu, {size_mb:.1f} MB; {args.samples} samples; "
          f"{captured} intermediate tensors captured; passed={report.passed}")
    print(f"{'what':<44}{'seconds':>10}{'ratio':>10}")
    print(f"{'run both models (ORT sessions from files)':<44}{base:>10.3f}")
    print(f"{'onnxslim.validate(paths), capture always':<44}{full:>10.3f}{full / base:>9.2f}x")
    print(f"{'validate_models(loaded models), capture always':<44}{harness:>10.3f}{harness / base:>9.2f}x")
    print("(the first includes onnxslim.load of both files: protobuf parse and onnx checker;"
          " the second is what `onnxslim optimize` runs after its passes)")


if __name__ == "__main__":
    main()
