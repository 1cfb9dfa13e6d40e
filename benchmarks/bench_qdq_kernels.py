"""What ONNX Runtime's CPU provider runs after static QDQ quantization: onnxslim next to onnxruntime.quantization.

Usage::

    python benchmarks/bench_qdq_kernels.py [--models yolov8n ppocr_det ppocr_rec ppocr_cls minilm vit_tiny
        resnet_mini mobilenet_mini digits_cnn] [--samples 32] [--method minmax] [--rounds 50] [--calls 5] [--json FILE]

A QDQ model is only as fast as the integer kernels ONNX Runtime fuses it into: a QuantizeLinear /
DequantizeLinear pair its QDQ transformers do not recognize leaves a float op between two
conversions. For each model, the float model after our cleanup (bench_quantization.prepare; the
PP-OCR text-direction classifier ``ppocr_cls`` is prepared here) is quantized three ways, each in
a child process, from the same calibration samples in batches of 8:

- ``ours``: QuantizeStatic with ``--method``, no bias correction and no mixed precision (the
  method rows of bench_quantization: the steps ORT's quantizer takes);
- ``ours (default)``: QuantizeStatic's defaults (mse, bias correction, mixed precision on detectors);
- ``ort``: ``quantize_static`` (QDQ, per-channel, uint8 activations / int8 weights, same method) on
  an opset-13 copy of the float model (bench_quantization.opset13_copy).

Each model file, the float one included, is loaded in an ORT CPU session with ``ORT_ENABLE_ALL``
and ``optimized_model_filepath`` (temp folder); in the graph it saves are counted:
"int kernels" (op types QLinear*, QGemm, MatMulInteger*, ConvInteger, DynamicQuantize*, QAttention,
QEmbed*), "float ops" (compute ops whose data input is float: element types propagated through
the saved graph; reshapes, transposes, slices, gathers, casts and layout reorders not counted),
Q / DQ (QuantizeLinear / DequantizeLinear left) and "DQ->W" (float Conv / MatMul / Gemm reading a
DequantizeLinear of an initializer, directly or through a reshape / transpose: a weight
dequantized at every run). Latency: ORT CPU (default level, ORT_ENABLE_ALL), batch 1 (first
held-out input), 2 threads; in each round every variant in turn (order rotated each round) gets
a fresh session, 3 warm-up runs and ``--calls`` timed runs (one live session at a time); "ms" is
the median of ``--rounds`` timed runs per variant; "x float" and "x ORT" are paired: the median
over rounds of the float / ORT round median over this row's in the same round (the shared
machine's load drifts between rounds more than within one). Cosine: first output vs the float
model's, all held-out inputs flattened (bench_quantization.cosine). Held-out data (seed 2;
calibration uses seed 1): 32 YOLOv8n crops, 16 det pages, 64 rec lines, 64 cls lines (48x192),
63 MiniLM sentences, the digits eval split (360).
``--json`` also keeps every op count, the integer and float op types, the per-round medians and
each quantization call's seconds. Nothing is written outside a temp folder and ``--json``. Exit
status 1 when one of our quantizations fails or its model does not load.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quantization as bq  # noqa: E402
from quant_detection import detection_images  # noqa: E402
from quant_ocr import rec_images  # noqa: E402

MODELS = ["yolov8n", "ppocr_det", "ppocr_rec", "ppocr_cls", "minilm", "vit_tiny", "resnet_mini", "mobilenet_mini",
          "digits_cnn"]
CLS = bq.MODELS / ".real" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
CLS_SIZE = (48, 192)
"""PP-OCR mobile v2.0 direction classifier (Paddle export, opset 11): input x, N x 3 x 48 x 192."""
HELDOUT = {"yolov8n": 32, "ppocr_det": 16, "ppocr_rec": 64, "ppocr_cls": 64}
VARIANTS = ("float", "ours", "ours (default)", "ort")

INT_PREFIXES = ("QLinear", "QGemm", "MatMulInteger", "DynamicQuantize", "ConvInteger", "QAttention", "QEmbed")
NOT_COMPUTE = {"QuantizeLinear", "DequantizeLinear", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Shape",
               "Size", "Gather", "GatherElements", "GatherND", "Slice", "Split", "Identity", "Cast", "Constant",
               "ConstantOfShape", "Expand", "Range", "Tile", "Pad", "ReorderInput", "ReorderOutput"}
WEIGHTED = {"Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "FusedGemm"}
FLOATS = {1, 10, 11, 16}  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
INT64, BOOL, UINT8, INT32 = 7, 9, 2, 6


# ---- data and models ---------------------------------------------------------------------

def model_path(name: str) -> Path:
    return CLS if name == "ppocr_cls" else bq.model_path(name)


def calibration(name: str, samples: int) -> dict[str, np.ndarray]:
    return {"x": rec_images(samples, 1, *CLS_SIZE)} if name == "ppocr_cls" else bq.calibration(name, samples)


def heldout(name: str) -> dict[str, np.ndarray]:
    if name == "yolov8n":
        return {"images": detection_images(HELDOUT[name], 2)}
    if name in bq.OCR:
        return {"x": bq.OCR[name][1](HELDOUT[name], 2)}
    if name == "ppocr_cls":
        return {"x": rec_images(HELDOUT[name], 2, *CLS_SIZE)}
    if name == "minilm":
        data = np.load(bq.MODELS / ".real" / "minilm_eval.npz")
        return {k: data[k] for k in data.files}
    return {"input": np.load(bq.MODELS / f"{bq.DATA[name]}_eval.npz")["input"]}


def prepare(name: str, folder: Path) -> str:
    """The float model after our cleanup pipeline (bench_quantization.prepare, which lacks ppocr_cls)."""
    if name != "ppocr_cls":
        return bq.prepare(name, folder)
    from onnxslim import api

    dst = folder / f"{name}_float.onnx"
    api.run(CLS, dst, validate=False)
    return str(dst)


# ---- child processes ---------------------------------------------------------------------

def child(job: dict) -> dict:
    """One quantization in this process (bench_quantization's _ours / _ort); returns its seconds."""
    data = calibration(job["model"], job["samples"])
    batches = [{k: v[i:i + 8] for k, v in data.items()} for i in range(0, job["samples"], 8)]
    work = bq._ours(job, batches) if job["tool"] == "ours" else bq._ort(job, batches)
    started = time.perf_counter()
    work()
    return {"seconds": time.perf_counter() - started}


def run_child(job: dict, folder: Path) -> dict:
    """As bench_quantization.run_child, with TMPDIR and the working folder in ``folder`` (ORT's
    quantizer writes its augmented models into a mkdtemp folder, which then goes with it)."""
    env = {**os.environ, "TMPDIR": str(folder)}
    process = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                             cwd=folder, env=env, timeout=1800)
    if process.returncode != 0:
        tail = (process.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {process.returncode}: {tail[:120]}"}
    return json.loads(process.stdout.strip().splitlines()[-1])


def jobs(method: str) -> dict[str, tuple[str, str, dict]]:
    """variant: (tool, method, QuantizeStaticConfig settings)."""
    return {"ours": ("ours", method, bq.METHOD_ROW), "ours (default)": ("ours", "mse", {}), "ort": ("ort", method, {})}


def quantize(name: str, src: str, samples: int, method: str, folder: Path) -> dict[str, dict]:
    """{variant: {"path": ..., "seconds": ...} or {"error": ...}} for the three quantized variants."""
    out = {}
    for variant, (tool, variant_method, extra) in jobs(method).items():
        dst = str(folder / f"{name}_{variant.replace(' (default)', '_default')}.onnx")
        job = {"tool": tool, "mode": "static", "method": variant_method, "model": name, "samples": samples,
               "src": bq.opset13_copy(src) if tool == "ort" else src, "dst": dst, "extra": dict(extra)}
        result = run_child(job, folder)
        out[variant] = result if "error" in result else {"path": dst, **result}
    return out


# ---- what ORT runs -----------------------------------------------------------------------

def optimized_graph(path: str, folder: Path):
    """The graph ORT's CPU provider runs (ORT_ENABLE_ALL), as it saves it."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.log_severity_level = 2, 3
    options.optimized_model_filepath = str(folder / (Path(path).stem + "_ortopt.onnx"))
    ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    model = onnx.load(options.optimized_model_filepath)
    os.remove(options.optimized_model_filepath)
    return model.graph


def _output_types(node, types: dict[str, int]) -> list[int | None]:
    """Element types of ``node``'s outputs, from its inputs' (enough to tell float from integer)."""
    op, inputs = node.op_type, [types.get(i) for i in node.input]
    if op in ("QuantizeLinear", "DynamicQuantizeLinear"):
        return [inputs[2] if len(inputs) > 2 and inputs[2] else UINT8] + [1, UINT8][:len(node.output) - 1]
    if op == "DequantizeLinear":
        return [1]
    if op in ("MatMulInteger", "ConvInteger"):
        return [INT32]
    if op in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat") or (op == "QGemm" and len(node.input) < 8):
        return [1]
    if op.startswith(INT_PREFIXES):
        return [UINT8] * len(node.output)
    if op in ("Shape", "Size", "ArgMax", "ArgMin", "NonZero"):
        return [INT64]
    if op == "Cast":
        return [next(a.i for a in node.attribute if a.name == "to")]
    if op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "IsNaN"):
        return [BOOL]
    first = next((t for t in inputs if t is not None), None)
    return [first] + [INT64 if op == "TopK" else first] * (len(node.output) - 1)


def kernel_counts(graph) -> dict:
    types = {v.name: v.type.tensor_type.elem_type for v in graph.input}
    types.update({t.name: t.data_type for t in graph.initializer})
    weights, producers = {t.name for t in graph.initializer}, {}
    counts, floats, deq_weights = collections.Counter(), collections.Counter(), []
    for node in graph.node:
        for name, elem in zip(node.output, _output_types(node, types)):
            types[name], producers[name] = elem, node
        counts[node.op_type] += 1
        data = types.get(node.input[0]) if node.input else None
        if not node.op_type.startswith(INT_PREFIXES) and node.op_type not in NOT_COMPUTE and data in FLOATS | {None}:
            floats[node.op_type] += 1
        if node.op_type in WEIGHTED and any(_dequantized_weight(i, producers, weights) for i in node.input):
            deq_weights.append(f"{node.op_type}:{node.name}")
    ints = {k: v for k, v in counts.items() if k.startswith(INT_PREFIXES)}
    return {"int_kernels": sum(ints.values()), "int_ops": ints, "float_ops": sum(floats.values()),
            "float_op_types": dict(floats.most_common()), "Q": counts["QuantizeLinear"],
            "DQ": counts["DequantizeLinear"], "dq_weight": len(deq_weights), "dq_weight_nodes": deq_weights,
            "all_ops": dict(counts.most_common())}


def _dequantized_weight(name: str, producers: dict, weights: set[str]) -> bool:
    """Whether ``name`` is a DequantizeLinear of an initializer, possibly reshaped / transposed after."""
    node = producers.get(name)
    while node is not None and node.op_type in ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten"):
        node = producers.get(node.input[0])
    return node is not None and node.op_type == "DequantizeLinear" and node.input[0] in weights


# ---- latency and accuracy ----------------------------------------------------------------

def latencies(paths: dict[str, str], feeds: dict[str, np.ndarray], runs: int, calls: int) -> dict[str, dict]:
    """Batch-1 latency per variant: rounds in which each variant in turn gets a fresh session, 3
    warm-up runs and ``calls`` timed runs, then is dropped (one live session at a time: several live
    ones interleaved left the spinning worker threads of one slowing the next, a 2-8x outlier now
    and then on 2 cores). Median ms of all ``runs`` timed runs and the per-round medians."""
    one = {k: v[:1] for k, v in feeds.items()}
    times: dict[str, list[list[float]]] = {k: [] for k in paths}
    order = list(paths)
    for round_ in range(-(-runs // calls)):
        for key in order[round_ % len(order):] + order[:round_ % len(order)]:  # rotated: no variant always first
            s = bq.session(paths[key])
            for _ in range(3):
                s.run(None, one)
            times[key].append([])
            for _ in range(calls):
                started = time.perf_counter()
                s.run(None, one)
                times[key][-1].append((time.perf_counter() - started) * 1000)
            del s
    return {k: {"ms": float(np.median(np.concatenate(v)[:runs])), "round_ms": [float(np.median(r)) for r in v]}
            for k, v in times.items()}


def bench_model(name: str, samples: int, method: str, runs: int, calls: int, folder: Path) -> list[dict]:
    src = prepare(name, folder)
    made = {"float": {"path": src}, **quantize(name, src, samples, method, folder)}
    rows, paths = [], {}
    for variant in VARIANTS:
        row = {"model": name, "variant": variant, "method": jobs(method)[variant][1] if variant != "float" else "-"}
        row.update({k: v for k, v in made[variant].items() if k != "path"})
        if "error" not in row:
            try:
                row.update(kernel_counts(optimized_graph(made[variant]["path"], folder)))
                paths[variant] = made[variant]["path"]
            except Exception as exc:  # a model ORT does not load
                row["error"] = f"ORT session: {str(exc).splitlines()[0][-110:]}"
        rows.append(row)
    feeds = heldout(name)
    reference = bq._run(src, feeds)
    lat = latencies(paths, feeds, runs, calls)
    for row in rows:
        if row["variant"] in paths:
            row["cosine"] = bq.cosine(reference, bq._run(paths[row["variant"]], feeds))
            mine = lat[row["variant"]]
            row["latency_ms"], row["round_ms"] = mine["ms"], mine["round_ms"]
            for base in ("float", "ort"):
                if base in lat:  # paired: the baseline's median in the same round over this row's
                    row[f"x_{base}"] = float(np.median(np.divide(lat[base]["round_ms"], mine["round_ms"])))
    return rows


# ---- report ------------------------------------------------------------------------------

def print_table(rows: list[dict], runs: int, calls: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"QDQ kernels in ORT CPU after ORT_ENABLE_ALL (latency: median ms of {runs} runs, batch 1, "
                        f"2 threads, round-robin fresh sessions of {calls} runs, 2 CPU cores shared with other jobs)")
    for column in ("model", "variant", "int kernels", "float ops", "Q", "DQ", "DQ->W", "ms", "x float", "x ORT",
                   "cosine", "float ops left (most)"):
        table.add_column(column, justify="left" if column in ("model", "variant", "float ops left (most)") else "right")
    fmt = lambda v, f: "-" if v is None else format(v, f)
    for r in rows:
        if "error" in r:
            table.add_row(r["model"], r["variant"], r["error"])
            continue
        left = ", ".join(f"{k} {v}" for k, v in list(r["float_op_types"].items())[:4])
        table.add_row(r["model"], r["variant"], str(r["int_kernels"]), str(r["float_ops"]), str(r["Q"]), str(r["DQ"]),
                      str(r["dq_weight"]), fmt(r.get("latency_ms"), ".3f"), fmt(r.get("x_float"), ".2f") + "x",
                      fmt(r.get("x_ort"), ".2f") + "x", fmt(r.get("cosine"), ".5f"), left)
    Console(width=200).print(table)
    for r in rows:
        if r.get("dq_weight"):
            nodes = ", ".join(r["dq_weight_nodes"][:6]) + (" ..." if r["dq_weight"] > 6 else "")
            print(f"{r['model']} {r['variant']}: float op on a weight dequantized at every run: {nodes}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--samples", type=int, default=32, help="calibration samples (batches of 8)")
    parser.add_argument("--method", default="minmax", choices=list(bq.ORT_METHODS))
    parser.add_argument("--rounds", type=int, default=50, help="timed batch-1 runs per variant")
    parser.add_argument("--calls", type=int, default=5, help="timed runs per fresh session (round)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-qdq-kernels-") as folder:
        for name in args.models:
            if not model_path(name).exists():
                print(f"skipping {name}: {model_path(name)} missing (python models/fetch_real_models.py)")
                continue
            rows.extend(bench_model(name, args.samples, args.method, args.rounds, args.calls, Path(folder)))
    print_table(rows, args.rounds, args.calls)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if any("error" in r and r["variant"].startswith("ours") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
