"""MiniLM (all-MiniLM-L6-v2) quantized every way: onnxslim vs onnxruntime.quantization, plus fp16 / int4.

Usage::

    python models/make_minilm.py            # once: models/.real/minilm.onnx + calibration/eval .npz
    python benchmarks/bench_quant_minilm.py [--samples 64] [--runs 30]

Rows: onnxslim ``--quantize static`` (default settings) and ``dynamic``; onnxruntime's
``quantize_static`` (QDQ, per-channel, uint8 activations / int8 weights, MinMax, same samples, in
a subprocess chdir'ed into a temp folder since it writes files there) and ``quantize_dynamic``;
onnxslim ``--fp16`` and ``--quantize-weights int4|int8``. Metric: cosine similarity of the
mean-pooled sentence embedding to the float model's on the held-out sentences (63 everyday
sentences, 500 documentation sentences). Latency: ORT CPU, 2 threads, batch 8 x 32 tokens,
variants timed round-robin (median ms); the machine's 2 cores are shared with other jobs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "models" / ".real"
INPUTS = ("input_ids", "attention_mask")

ORT_SCRIPT = """
import sys, numpy as np
from onnxruntime.quantization import quantize_static, quantize_dynamic, QuantFormat, QuantType, CalibrationDataReader
src, dst, mode, calib, samples = sys.argv[1:6]
if mode == "dynamic":
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
else:
    data = np.load(calib)
    feeds = [{k: data[k][i:i + 8] for k in ("input_ids", "attention_mask")} for i in range(0, int(samples), 8)]
    class Reader(CalibrationDataReader):
        def __init__(self): self.items = iter(feeds)
        def get_next(self): return next(self.items, None)
    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
"""


def session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    source = model if isinstance(model, (str, bytes)) else ir.serde.serialize_model(model).SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def ours(mode: str, samples: int) -> tuple[bytes, float]:
    from onnxslim import api

    options = {"static": dict(quantize="static", calibration_data=str(REAL / "minilm_calib.npz"), calibration_samples=samples),
               "dynamic": dict(quantize="dynamic"), "fp16": dict(fp16=True),
               "int4": dict(quantize_weights="int4"), "int8 weights": dict(quantize_weights="int8")}[mode]
    started = time.perf_counter()
    result = api.run(REAL / "minilm.onnx", validate=False, **options)
    status = result.pipeline.records[-1].status
    assert status == "applied", f"{mode}: {status}"
    return ir.serde.serialize_model(result.model).SerializeToString(), time.perf_counter() - started


def theirs(mode: str, samples: int) -> tuple[bytes, float]:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", ORT_SCRIPT, str(REAL / "minilm.onnx"), f"{folder}/q.onnx", mode,
                        str(REAL / "minilm_calib.npz"), str(samples)], cwd=folder, check=True, capture_output=True)
        return Path(f"{folder}/q.onnx").read_bytes(), time.perf_counter() - started


def latencies(sessions: dict, feeds: dict, runs: int) -> dict[str, float]:
    times = {name: [] for name in sessions}
    for _ in range(runs):  # round-robin: load from other jobs hits every variant alike
        for name, s in sessions.items():
            started = time.perf_counter()
            s.run(None, feeds)
            times[name].append(time.perf_counter() - started)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    if not (REAL / "minilm.onnx").exists():
        sys.exit("models/.real/minilm.onnx missing: run python models/make_minilm.py")
    evals = {name: {k: v for k, v in np.load(REAL / f"minilm_{name}.npz").items() if k in INPUTS}
             for name in ("eval", "eval_docs")}
    variants = {"float": ((REAL / "minilm.onnx").read_bytes(), 0.0)}
    for label, make, mode in [("onnxslim static", ours, "static"), ("ORT quantize_static", theirs, "static"),
                              ("onnxslim dynamic", ours, "dynamic"), ("ORT quantize_dynamic", theirs, "dynamic"),
                              ("onnxslim fp16", ours, "fp16"), ("onnxslim int4 weights", ours, "int4"),
                              ("onnxslim int8 weights", ours, "int8 weights")]:
        variants[label] = make(mode, args.samples)
    sessions = {name: session(data) for name, (data, _) in variants.items()}
    reference = {name: sessions["float"].run(None, feeds)[0] for name, feeds in evals.items()}
    timing = {k: v[:8] for k, v in np.load(REAL / "minilm_eval_docs.npz").items() if k in INPUTS}
    latency = latencies(sessions, timing, args.runs)
    table = Table(title=f"MiniLM: embedding cosine vs float ({args.samples} calibration samples)")
    for column in ("variant", "cos everyday mean", "min", "cos docs mean", "min", "size MB", "x float",
                   "ms (b8x32)", "x float", "quantize s"):
        table.add_column(column)
    for name, (data, seconds) in variants.items():
        cos = {k: cosine(sessions[name].run(None, feeds)[0], reference[k]) for k, feeds in evals.items()}
        table.add_row(name, f"{cos['eval'].mean():.4f}", f"{cos['eval'].min():.4f}", f"{cos['eval_docs'].mean():.4f}",
                      f"{cos['eval_docs'].min():.4f}", f"{len(data) / 1e6:.1f}", f"{len(data) / len(variants['float'][0]):.2f}",
                      f"{latency[name]:.1f}", f"{latency[name] / latency['float']:.2f}", f"{seconds:.1f}")
    Console(width=160).print(table)
    print("latency: 2 shared cores, other engineers' jobs running; variants timed round-robin")


if __name__ == "__main__":
    main()
