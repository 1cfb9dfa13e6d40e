"""Pruning benchmark: size, params, FLOPs, ORT CPU latency and accuracy of pruned bundled models.

Usage::

    python benchmarks/bench_pruning.py [--models NAME ...] [--amounts 0.3 0.5 0.7] [--methods channel magnitude nm]
                                       [--rounds 5] [--json FILE]

Every variant is made with ``onnxslim.api.run`` from the original in the same run (default
cleanup first, then the pruning pass; ``+rec`` = ``reconstruct=True`` with the model's calibration
split). Accuracy is task accuracy on the eval split (the bundled models are digit classifiers)
and the cosine of the outputs against the original's. ``yolov8n`` (models/.real/320n.onnx, fetch
with models/fetch_real_models.py) has no labelled data offline: it is calibrated and evaluated on
synthetic smooth-noise 320x320 images, and "accuracy" there is detection agreement (Jaccard of
the (anchor, class) pairs scoring > 0.25, vs the original). Latency: ORT CPU, 2 threads, batch 32
(yolov8n: batch 1), median over ``--rounds`` round-robin rounds (one live session at a time). The
machine is shared, so compare ratios within one run only. ``--json`` is rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from rich.console import Console
from rich.table import Table

import onnxslim
from onnxslim.core.stats import graph_stats
from onnxslim.runtime.session import make_session

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"digits_cnn": "digits", "resnet_mini": "digits16", "mobilenet_mini": "digits16", "yolov8n": None}
BATCH = 32
YOLO = ROOT / "models" / ".real" / "320n.onnx"


def variants(amounts, methods):
    yield "baseline", {}
    for amount in amounts:
        for method in (m for m in ("channel", "magnitude") if m in methods):
            yield f"{method} {amount:.0%}", {"prune": amount, "prune_method": method}
            yield f"{method} {amount:.0%} +rec", {"prune": amount, "prune_method": method, "reconstruct": True}
    if "nm" in methods:
        yield "nm 2:4", {"prune": 0.5, "prune_method": "nm"}
        yield "nm 2:4 +rec", {"prune": 0.5, "prune_method": "nm", "reconstruct": True}


def smooth_images(count: int, seed: int, size: int = 320) -> np.ndarray:
    """Synthetic [count, 3, size, size] images in [0, 1]: random 10x10 colour fields, bilinearly upsampled, plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, 3, 10, 10))
    grid = np.linspace(0, 9, size)
    low, frac = np.floor(grid).astype(int).clip(0, 8), grid - np.floor(grid).clip(0, 8)
    rows = coarse[:, :, low] * (1 - frac)[:, None] + coarse[:, :, low + 1] * frac[:, None]
    images = rows[..., low] * (1 - frac) + rows[..., low + 1] * frac
    return np.clip(images + rng.normal(0, 0.03, images.shape), 0, 1).astype(np.float32)


def model_data(name: str, folder: Path) -> tuple[Path, str, dict, Path]:
    """(model path, input name, eval data {input, labels?}, calibration .npz) for one benchmark model."""
    if name != "yolov8n":
        data_name = MODELS[name]
        data = dict(np.load(ROOT / "models" / f"{data_name}_eval.npz"))
        return ROOT / "models" / f"{name}.onnx", "input", data, ROOT / "models" / f"{data_name}_calib.npz"
    if not YOLO.exists():
        raise SystemExit(f"{YOLO} is missing: run python models/fetch_real_models.py")
    calib = folder / "yolo_calib.npz"
    np.savez(calib, images=smooth_images(16, seed=1))
    return YOLO, "images", {"input": smooth_images(8, seed=2)}, calib


def detections(output: np.ndarray, threshold: float = 0.25) -> list[set]:
    """Per image, the (anchor, class) pairs scoring above ``threshold`` in a [N, 4 + classes, anchors] YOLOv8 output."""
    return [set(zip(*np.nonzero(image[4:].T > threshold))) for image in output]


def agreement(output: np.ndarray, reference: np.ndarray) -> float:
    pairs = zip(detections(output), detections(reference))
    return float(np.mean([len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs]))


def macs(model: ir.Model, shape: tuple) -> int:
    """Multiply-accumulates of Conv/Gemm/MatMul for one input of ``shape`` (batch 1; shapes from onnx inference)."""
    proto = ir.serde.serialize_model(model)
    for dim, size in zip(proto.graph.input[0].type.tensor_type.shape.dim, shape):
        dim.dim_value = size
    proto = onnx.shape_inference.infer_shapes(proto)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*proto.graph.value_info, *proto.graph.output, *proto.graph.input]}
    weights = {t.name: list(t.dims) for t in proto.graph.initializer}
    total = 0
    for node in proto.graph.node:
        out = shapes.get(node.output[0])
        w = weights.get(node.input[1]) if len(node.input) > 1 else None
        if not out or not w:
            continue
        if node.op_type == "Conv":
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            reduction = w[1] if node.op_type == "Gemm" and _trans_b(node) else w[0]
            total += int(np.prod(out)) * reduction
    return total


def _trans_b(node) -> bool:
    return any(a.name == "transB" and a.i for a in node.attribute)


def outputs(model: ir.Model, input_name: str, images: np.ndarray, batch: int) -> np.ndarray:
    session = make_session(model, threads=2)
    result = np.concatenate([session.run(None, {input_name: images[i:i + batch]})[0] for i in range(0, len(images), batch)])
    del session
    return result


def evaluate(model: ir.Model, input_name: str, data: dict, reference: np.ndarray) -> dict:
    out = outputs(model, input_name, data["input"], 256 if "labels" in data else 1)
    flat, ref = out.reshape(len(out), -1), reference.reshape(len(reference), -1)
    cos = np.sum(flat * ref, 1) / (np.linalg.norm(flat, axis=1) * np.linalg.norm(ref, axis=1))
    accuracy = float(np.mean(out.argmax(1) == data["labels"])) if "labels" in data else agreement(out, reference)
    proto = ir.serde.serialize_model(model).SerializeToString()
    stats = graph_stats(model)
    return {"accuracy": accuracy, "cosine": float(np.mean(cos)), "bytes": len(proto),
            "zip_bytes": len(zlib.compress(proto, 6)), "params": stats.params,
            "macs": macs(model, (1, *data["input"].shape[1:]))}


def latencies(models: dict[str, bytes], input_name: str, batch: np.ndarray, rounds: int, runs: int = 20) -> dict[str, float]:
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, data in models.items():
            session = make_session(data, threads=2)
            for _ in range(3):
                session.run(None, {input_name: batch})
            for _ in range(runs):
                start = time.perf_counter()
                session.run(None, {input_name: batch})
                times[name].append((time.perf_counter() - start) * 1000)
            del session
    return {name: float(np.median(t)) for name, t in times.items()}


def bench_model(name: str, amounts, methods, rounds: int, console: Console, sink) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        path, input_name, data, calib = model_data(name, Path(folder))
        return _bench(name, path, input_name, data, calib, amounts, methods, rounds, console, sink)


def _bench(name, path, input_name, data, calib, amounts, methods, rounds, console, sink) -> list[dict]:
    labelled = "labels" in data
    reference = outputs(ir.load(path), input_name, data["input"], 256 if labelled else 1)
    rows, blobs = [], {}
    for label, options in variants(amounts, methods):
        started = time.perf_counter()
        extra = {"calibration_data": calib} if options.get("reconstruct") else {}
        result = onnxslim.api.run(path, validate=False, **options, **extra)
        record = result.pipeline.records[-1] if options else None
        row = {"model": name, "variant": label, "seconds": time.perf_counter() - started,
               "status": record.status if record else "-", **evaluate(result.model, input_name, data, reference)}
        rows.append(row)
        sink(row)
        if label == "baseline" or label.startswith("channel"):
            blobs[label] = ir.serde.serialize_model(result.model).SerializeToString()
        console.log(f"{name:15s} {label:22s} acc {row['accuracy']:.4f} cos {row['cosine']:.4f} {row['seconds']:.0f}s")
    timed = latencies(blobs, input_name, data["input"][:BATCH if labelled else 1], rounds)
    for row in rows:
        row["latency_ms"] = timed.get(row["variant"], timed["baseline"] if not row["variant"].startswith("channel") else None)
        sink(row)
    return rows


def render(console: Console, rows: list[dict]) -> None:
    table = Table(title=f"Pruning (ratios vs the same run's baseline; latency ORT CPU, 2 threads, batch {BATCH}, shared machine)")
    for column in ("model", "variant", "accuracy", "cosine", "params", "MACs", "size", "zip size", "latency ms", "latency x"):
        table.add_column(column)
    base = {r["model"]: r for r in rows if r["variant"] == "baseline"}
    for r in rows:
        b = base[r["model"]]
        dense = not r["variant"].startswith(("channel", "baseline"))
        table.add_row(r["model"], r["variant"], f"{r['accuracy']:.2%}", f"{r['cosine']:.4f}", f"{r['params'] / b['params']:.2f}",
                      f"{r['macs'] / b['macs']:.2f}", f"{r['bytes'] / b['bytes']:.2f}", f"{r['zip_bytes'] / b['zip_bytes']:.2f}",
                      "(dense)" if dense else f"{r['latency_ms']:.2f}", "-" if dense else f"{r['latency_ms'] / b['latency_ms']:.2f}")
    console.print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=[m for m in MODELS if m != "yolov8n"], choices=list(MODELS))
    parser.add_argument("--amounts", nargs="*", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--methods", nargs="*", default=["channel", "magnitude", "nm"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    console = Console(width=170)
    done: list[dict] = []

    def sink(row: dict) -> None:
        if not any(r is row for r in done):
            done.append(row)
        if args.json:
            args.json.write_text(json.dumps(done, indent=1))

    rows = [row for name in args.models for row in bench_model(name, args.amounts, args.methods, args.rounds, console, sink)]
    render(console, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
