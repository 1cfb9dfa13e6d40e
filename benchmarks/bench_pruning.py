"""Pruning benchmark: size, params, FLOPs, ORT CPU latency and accuracy of pruned bundled models.

Usage::

    python benchmarks/bench_pruning.py [--models NAME ...] [--amounts 0.3 0.5 0.7] [--rounds 5] [--json FILE]

Every variant is made with ``onnxslim.api.run`` from the original in the same run (default
cleanup first, then the pruning pass; ``+rec`` = ``reconstruct=True`` with the model's calibration
split). Accuracy is task accuracy on the eval split (the bundled models are digit classifiers)
and the cosine of the logits against the original's. Latency: ORT CPU, 2 threads, batch 32,
median over ``--rounds`` round-robin rounds (one live session at a time). The machine is shared,
so compare ratios within one run only.
"""

from __future__ import annotations

import argparse
import json
import sys
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
MODELS = {"digits_cnn": "digits", "resnet_mini": "digits16", "mobilenet_mini": "digits16"}
BATCH = 32


def variants(amounts):
    yield "baseline", {}
    for amount in amounts:
        for method in ("channel", "magnitude"):
            yield f"{method} {amount:.0%}", {"prune": amount, "prune_method": method}
            yield f"{method} {amount:.0%} +rec", {"prune": amount, "prune_method": method, "reconstruct": True}
    yield "nm 2:4", {"prune": 0.5, "prune_method": "nm"}
    yield "nm 2:4 +rec", {"prune": 0.5, "prune_method": "nm", "reconstruct": True}


def macs(model: ir.Model) -> int:
    """Multiply-accumulates of Conv/Gemm/MatMul at batch 1 (shapes from onnx inference)."""
    proto = ir.serde.serialize_model(model)
    for value in proto.graph.input:
        value.type.tensor_type.shape.dim[0].dim_value = 1
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


def evaluate(model: ir.Model, data: dict, reference: np.ndarray) -> dict:
    session = make_session(model, threads=2)
    logits = session.run(None, {"input": data["input"]})[0]
    del session
    cos = np.sum(logits * reference, 1) / (np.linalg.norm(logits, axis=1) * np.linalg.norm(reference, axis=1))
    proto = ir.serde.serialize_model(model).SerializeToString()
    stats = graph_stats(model)
    return {"accuracy": float(np.mean(logits.argmax(1) == data["labels"])), "cosine": float(np.mean(cos)),
            "bytes": len(proto), "zip_bytes": len(zlib.compress(proto, 6)), "params": stats.params, "macs": macs(model)}


def latencies(models: dict[str, bytes], batch: np.ndarray, rounds: int, runs: int = 20) -> dict[str, float]:
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, data in models.items():
            session = make_session(data, threads=2)
            for _ in range(3):
                session.run(None, {"input": batch})
            for _ in range(runs):
                start = time.perf_counter()
                session.run(None, {"input": batch})
                times[name].append((time.perf_counter() - start) * 1000)
            del session
    return {name: float(np.median(t)) for name, t in times.items()}


def bench_model(name: str, amounts, rounds: int, console: Console) -> list[dict]:
    data_name = MODELS[name]
    path = ROOT / "models" / f"{name}.onnx"
    data = dict(np.load(ROOT / "models" / f"{data_name}_eval.npz"))
    calib = ROOT / "models" / f"{data_name}_calib.npz"
    original = ir.load(path)
    session = make_session(original, threads=2)
    reference = session.run(None, {"input": data["input"]})[0]
    del session
    rows, blobs = [], {}
    for label, options in variants(amounts):
        started = time.perf_counter()
        extra = {"calibration_data": calib} if options.get("reconstruct") else {}
        result = onnxslim.api.run(path, validate=False, **options, **extra)
        record = result.pipeline.records[-1] if options else None
        row = {"model": name, "variant": label, "seconds": time.perf_counter() - started,
               "status": record.status if record else "-", **evaluate(result.model, data, reference)}
        rows.append(row)
        if label == "baseline" or label.startswith("channel"):
            blobs[label] = ir.serde.serialize_model(result.model).SerializeToString()
        console.log(f"{name:15s} {label:22s} acc {row['accuracy']:.4f} cos {row['cosine']:.4f}")
    timed = latencies(blobs, data["input"][:BATCH], rounds)
    for row in rows:
        row["latency_ms"] = timed.get(row["variant"], timed["baseline"] if not row["variant"].startswith("channel") else None)
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
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--amounts", nargs="*", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    console = Console(width=170)
    rows = [row for name in args.models for row in bench_model(name, args.amounts, args.rounds, console)]
    render(console, rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
