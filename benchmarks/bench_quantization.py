"""Quantization benchmark: onnxslim's static/dynamic int8 next to onnxruntime.quantization.

Usage::

    python benchmarks/bench_quantization.py [--models digits_cnn resnet_mini mobilenet_mini vit_tiny yolov8n]
        [--methods minmax percentile entropy] [--samples 32 256] [--rounds 30] [--json FILE]

Each quantization runs in its own subprocess (peak RSS is that process's ru_maxrss; ORT's
quantizer also runs chdir'ed into a temp dir, since it writes files to the working folder).
Both tools get the same cleaned float model (our simplify pipeline), the same calibration
samples in batches of 8, QDQ format, per-channel int8 weights, uint8 activations and the
same calibration method. "floor" is the time of plain float forward passes over the same
samples. Latency: ORT CPU, batch 1, 2 threads, variants timed round-robin (median).
Data: digits models use models/digits*_calib.npz (tiled with noise to 256 samples) and
their eval split; YOLOv8n uses 320x320 crops of scikit-learn's two sample photos (no
dataset download needed), detection agreement = F1 of boxes (score >= 0.05, IoU >= 0.5,
same class) against the float model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
DATA = {"digits_cnn": "digits", "vit_tiny": "digits", "resnet_mini": "digits16", "mobilenet_mini": "digits16"}


def model_path(name: str) -> Path:
    return MODELS / ".real" / "320n.onnx" if name == "yolov8n" else MODELS / f"{name}.onnx"


def yolo_images(count: int, seed: int) -> np.ndarray:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng, out = np.random.default_rng(seed), []
    for i in range(count):
        photo = photos[i % 2].astype(np.float32) / 255
        size = int(rng.integers(200, 427))
        y, x = int(rng.integers(0, 427 - size + 1)), int(rng.integers(0, 640 - size + 1))
        index = (np.arange(320) * size / 320).astype(int)
        crop = photo[y:y + size, x:x + size][index][:, index]
        out.append((crop[:, ::-1] if rng.random() < 0.5 else crop).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def calibration(name: str, samples: int) -> dict[str, np.ndarray]:
    if name == "yolov8n":
        return {"images": yolo_images(samples, 1)}
    base = np.load(MODELS / f"{DATA[name]}_calib.npz")["input"]
    tiles = [base] + [np.clip(base + np.random.default_rng(i).normal(0, 0.05, base.shape), 0, 1).astype(np.float32)
                      for i in range(1, samples // len(base) + 1)]
    return {"input": np.concatenate(tiles)[:samples]}


def evaluation(name: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if name == "yolov8n":
        return {"images": yolo_images(32, 2)}, None
    data = np.load(MODELS / f"{DATA[name]}_eval.npz")
    return {"input": data["input"]}, data["labels"]


# ---- child processes -------------------------------------------------------------------

def child(job: dict) -> dict:
    """One quantization (or float floor) in this process; returns seconds and peak RSS in MB."""
    data = calibration(job["model"], job["samples"])
    batches = [{k: v[i:i + 8] for k, v in data.items()} for i in range(0, job["samples"], 8)]
    started = time.perf_counter()
    if job["tool"] == "floor":
        import onnxruntime as ort

        session = ort.InferenceSession(job["src"], providers=["CPUExecutionProvider"])
        started = time.perf_counter()
        for batch in batches:
            session.run(None, batch)
    else:
        work = _ours(job, batches) if job["tool"] == "ours" else _ort(job, batches)
        started = time.perf_counter()  # imports excluded: only the quantization call is timed
        work()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _ours(job: dict, batches: list):
    from onnxslim import io
    from onnxslim.core.pass_base import PassContext
    from onnxslim.data import DataBatch
    from onnxslim.passes.quantization.quantize_dynamic import QuantizeDynamic
    from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig

    def work():
        model = io.load(job["src"])
        if job["mode"] == "dynamic":
            result = QuantizeDynamic()(model)
        else:
            context = PassContext(calibration=[DataBatch(b) for b in batches])
            result = QuantizeStatic(QuantizeStaticConfig(method=job["method"]), context=context)(model)
        io.save(result.model, job["dst"])

    return work


def _ort(job: dict, batches: list):
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_dynamic, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches)

        def get_next(self):
            return next(self.items, None)

    os.chdir(tempfile.mkdtemp(prefix="ortq-"))  # ORT writes augmented models here

    def work():
        if job["mode"] == "dynamic":
            quantize_dynamic(job["src"], job["dst"], weight_type=QuantType.QInt8, per_channel=True)
            return
        quantize_static(job["src"], job["dst"], Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, ORT_METHODS[job["method"]]))

    return work


def run_child(job: dict) -> dict:
    process = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                             cwd=ROOT, timeout=1800)
    if process.returncode != 0:
        tail = (process.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {process.returncode}: {tail[:120]}"}
    return json.loads(process.stdout.strip().splitlines()[-1])


# ---- measurements in the parent ------------------------------------------------------

def session(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 2, 1, 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def latencies(paths: dict[str, str], feeds: dict[str, np.ndarray], rounds: int) -> dict[str, float]:
    """Median ms per batch-1 run, variants interleaved round-robin."""
    sessions = {k: session(p) for k, p in paths.items()}
    one = {k: v[:1] for k, v in feeds.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, one)
    for _ in range(rounds):
        for key, s in sessions.items():
            started = time.perf_counter()
            s.run(None, one)
            times[key].append(time.perf_counter() - started)
    return {k: float(np.median(v) * 1000) for k, v in times.items()}


def quality(name: str, float_path: str, path: str) -> str:
    feeds, labels = evaluation(name)
    reference = session(float_path).run(None, feeds)[0]
    output = session(path).run(None, feeds)[0]
    if labels is not None:
        return f"acc {100 * (output.argmax(1) == labels).mean():.1f}%"
    return f"F1 {detection_f1(reference, output):.3f} cos {cosine(reference, output):.4f}"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


def detections(output: np.ndarray, threshold: float = 0.05) -> list[np.ndarray]:
    """Per image: rows (class, score, x1, y1, x2, y2) after class-wise greedy NMS (IoU 0.5)."""
    result = []
    for image in output:
        boxes, scores = image[:4].T, image[4:].T
        cls, best = scores.argmax(1), scores.max(1)
        keep = best >= threshold
        xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)[keep]
        rows = np.column_stack([cls[keep], best[keep], xyxy])
        rows = rows[np.argsort(-rows[:, 1])]
        kept: list[np.ndarray] = []
        for row in rows:
            if all(k[0] != row[0] or iou(k[2:], row[2:]) < 0.5 for k in kept):
                kept.append(row)
        result.append(np.array(kept).reshape(-1, 6))
    return result


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def detection_f1(reference: np.ndarray, output: np.ndarray) -> float:
    matched = total_ref = total_out = 0
    for ref, out in zip(detections(reference), detections(output)):
        total_ref, total_out, used = total_ref + len(ref), total_out + len(out), set()
        for row in ref:
            for j, other in enumerate(out):
                if j not in used and other[0] == row[0] and iou(row[2:], other[2:]) >= 0.5:
                    used.add(j)
                    matched += 1
                    break
    return 2 * matched / (total_ref + total_out) if total_ref + total_out else 1.0


# ---- main ------------------------------------------------------------------------------

def prepare(name: str, folder: Path) -> str:
    """The float model after our cleanup pipeline: both quantizers start from it."""
    from onnxslim import api

    dst = folder / f"{name}_float.onnx"
    api.run(model_path(name), dst, validate=False)
    return str(dst)


def bench_model(name: str, methods: list[str], samples: list[int], rounds: int, folder: Path) -> list[dict]:
    src = prepare(name, folder)
    rows, paths = [], {"float": src}
    floor = {n: run_child({"tool": "floor", "model": name, "samples": n, "src": src}) for n in samples}
    mode_methods = [("static", m) for m in methods] + ([("dynamic", "-")] if name == "vit_tiny" else [])
    for mode, method in mode_methods:
        for tool in ("ours", "ort"):
            for n in samples if mode == "static" else samples[:1]:
                if tool == "ort" and name == "yolov8n" and n > 64:
                    rows.append({"model": name, "mode": mode, "method": method, "tool": tool, "samples": n,
                                 "error": "skipped: ORT buffers every activation (est. >20 GB here)"})
                    continue
                dst = str(folder / f"{name}_{mode}_{method}_{tool}_{n}.onnx")
                job = {"tool": tool, "mode": mode, "method": method, "model": name, "samples": n, "src": src, "dst": dst}
                row = {"model": name, "mode": mode, "method": method, "tool": tool, "samples": n, **run_child(job)}
                if "error" not in row:
                    row["floor_s"] = floor[n].get("seconds")
                    row["size_kb"] = os.path.getsize(dst) / 1024
                    row["quality"] = quality(name, src, dst)
                    paths[f"{mode}/{method}/{tool}"] = dst
                rows.append(row)
    lat = latencies(paths, evaluation(name)[0], rounds)
    for row in rows:
        row["latency_ms"] = lat.get(f"{row['mode']}/{row['method']}/{row['tool']}")
        row["float_ms"] = lat["float"]
    rows.insert(0, {"model": name, "mode": "float", "tool": "-", "size_kb": os.path.getsize(src) / 1024,
                    "quality": quality(name, src, src), "latency_ms": lat["float"], "float_ms": lat["float"]})
    return rows


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="quantization (2 shared CPU cores; latency = median ms, batch 1, round-robin)")
    for column in ("model", "mode", "method", "tool", "N", "calib s", "x floor", "RSS MB", "size KB", "ms", "x float", "quality"):
        table.add_column(column)
    fmt = lambda v, f: "-" if v is None else format(v, f)
    for r in rows:
        if "error" in r:
            table.add_row(r["model"], r["mode"], r.get("method", ""), r["tool"], str(r.get("samples", "")), r["error"])
            continue
        ratio = r["seconds"] / r["floor_s"] if r.get("floor_s") else None
        speed = r["float_ms"] / r["latency_ms"] if r.get("latency_ms") else None
        table.add_row(r["model"], r["mode"], r.get("method", ""), r["tool"], str(r.get("samples", "")),
                      fmt(r.get("seconds"), ".2f"), fmt(ratio, ".2f"), fmt(r.get("rss_mb"), ".0f"), fmt(r.get("size_kb"), ".0f"),
                      fmt(r.get("latency_ms"), ".2f"), fmt(speed, ".2f") + "x", r.get("quality", ""))
    Console(width=170).print(table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "resnet_mini", "mobilenet_mini", "vit_tiny", "yolov8n"])
    parser.add_argument("--methods", nargs="+", default=["minmax", "percentile", "entropy"])
    parser.add_argument("--samples", nargs="+", type=int, default=[32, 256])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as folder:
        for name in args.models:
            if not model_path(name).exists():
                print(f"skipping {name}: {model_path(name)} missing (python models/fetch_real_models.py)")
                continue
            rows.extend(bench_model(name, args.methods, args.samples, args.rounds, Path(folder)))
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
