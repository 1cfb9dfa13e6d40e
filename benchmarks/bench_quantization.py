"""Quantization benchmark: onnxslim's static/dynamic int8 next to onnxruntime.quantization.

Usage::

    python benchmarks/bench_quantization.py [--models digits_cnn resnet_mini mobilenet_mini vit_tiny yolov8n ppocr_det ppocr_rec]
        [--methods minmax percentile entropy mse] [--extras ours+bc ours+mp ours+det] [--min-cosine 0.99995]
        [--samples 32 256] [--rounds 30] [--json FILE]

Each quantization runs in its own subprocess (peak RSS is that process's VmHWM; ORT's
quantizer also runs chdir'ed into a temp dir, since it writes files to the working folder).
Both tools get the same cleaned float model (our simplify pipeline), the same calibration
samples in batches of 8, QDQ format, per-channel int8 weights, uint8 activations and the
same calibration method. "floor" is the time of plain float forward passes over the same
samples, of the float model as our static quantizer calibrates it (after expand-inner-softmax). Latency: ORT CPU, batch 1, 2 threads, variants timed round-robin (median).
Data: digits models use models/digits*_calib.npz (tiled with noise to 256 samples) and
their eval split; YOLOv8n uses 320x320 crops of 14 photos shipped in scikit-image's wheel and
scikit-learn (benchmarks/quant_detection.py; calibration seed 1, 320 evaluation images seed 2),
detection agreement = F1 of boxes (score >= 0.05 and >= 0.25, IoU >= 0.5, same class) against
the float model. The method rows run calibration and rewrite only (no bias correction, no
mixed precision), as ORT does. Rows "ours+bc" (bias correction), "ours+mp" (mixed precision,
``--min-cosine``) and "ours+det" (the plain default) use the default mse method; their time
includes those steps.
"calib s" is the whole quantization call (load, calibration, rewrite, save; on YOLOv8n also the
detector default's mixed-precision search); "stats s (x)" is our calibration phase alone (the
pass's ``calibration_s``: session with the ranged tensors as outputs, runs, statistics) and its
ratio to the floor.
No timed session is the process's first: the floor times a second session, ours runs after the
load check that ``onnxslim`` makes before any pass, ORT's after one session of the model (a
process's first ONNX Runtime session also pays for warming its heap and kernel registry).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quant_detection import detection_f1, detection_images  # noqa: E402
from quant_ocr import det_images, mask_iou, rec_images, string_agreement  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
YOLO_EVAL = 960  # F1 at score >= 0.25 rests on ~345 float detections (320 images: ~110, +-0.03 noise)
OCR = {"ppocr_det": ("ch_PP-OCRv4_det_infer.onnx", det_images, 64), "ppocr_rec": ("ch_PP-OCRv4_rec_infer.onnx", rec_images, 256)}
"""PP-OCRv4 (Paddle exports, opset 12): file, image maker, evaluation images (quant_ocr.py)."""
DATA = {"digits_cnn": "digits", "vit_tiny": "digits", "resnet_mini": "digits16", "mobilenet_mini": "digits16"}


def model_path(name: str) -> Path:
    if name == "minilm":  # made by models/make_minilm.py; quality rows in bench_quant_minilm.py
        return MODELS / ".real" / "minilm.onnx"
    if name in OCR:
        return MODELS / ".real" / OCR[name][0]
    return MODELS / ".real" / "320n.onnx" if name == "yolov8n" else MODELS / f"{name}.onnx"


def calibration(name: str, samples: int) -> dict[str, np.ndarray]:
    if name == "yolov8n":
        return {"images": detection_images(samples, 1)}
    if name in OCR:
        return {"x": OCR[name][1](samples, 1)}
    if name == "minilm":
        data = np.load(MODELS / ".real" / "minilm_calib.npz")
        return {k: data[k][:samples] for k in data.files}
    base = np.load(MODELS / f"{DATA[name]}_calib.npz")["input"]
    tiles = [base] + [np.clip(base + np.random.default_rng(i).normal(0, 0.05, base.shape), 0, 1).astype(np.float32)
                      for i in range(1, samples // len(base) + 1)]
    return {"input": np.concatenate(tiles)[:samples]}


@functools.lru_cache(maxsize=1)
def _yolo_eval() -> np.ndarray:
    return detection_images(YOLO_EVAL, 2)


@functools.lru_cache(maxsize=2)
def _ocr_eval(name: str) -> np.ndarray:
    return OCR[name][1](OCR[name][2], 2)


def evaluation(name: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if name == "yolov8n":
        return {"images": _yolo_eval()}, None
    if name in OCR:
        return {"x": _ocr_eval(name)}, None
    if name == "minilm":
        raise SystemExit("minilm: embedding quality is measured by benchmarks/bench_quant_minilm.py")
    data = np.load(MODELS / f"{DATA[name]}_eval.npz")
    return {"input": data["input"]}, data["labels"]


# ---- child processes -------------------------------------------------------------------

def child(job: dict) -> dict:
    """One quantization (or float floor) in this process; returns seconds and peak RSS in MB."""
    data = calibration(job["model"], job["samples"])
    batches = [{k: v[i:i + 8] for k, v in data.items()} for i in range(0, job["samples"], 8)]
    reset_peak_rss()  # making the data (decoding and resizing images) peaked above what quantizing costs
    started = time.perf_counter()
    if job["tool"] == "floor":
        from onnxslim import io
        from onnxslim.passes.cleanup.expand_inner_softmax import ExpandInnerSoftmax
        from onnxslim.runtime.session import make_session

        # the float model as our static quantizer calibrates it (YOLOv8's DFL softmax written
        # out runs faster): the floor must not flatter the calibration phase
        floor_model = ExpandInnerSoftmax()(io.load(job["src"])).model
        # made as calibration makes its session (weights as arrays beside the graph), so that
        # "floor + session" differs from the calibration phase only by what calibration adds;
        # timed the second time, as a process's first session also pays for warming its heap
        make_session(floor_model)
        created = time.perf_counter()
        session = make_session(floor_model)
        started = time.perf_counter()
        session_s = started - created
        for batch in batches:
            session.run(None, batch)
    else:
        work = _ours(job, batches) if job["tool"] == "ours" else _ort(job, batches)
        started = time.perf_counter()  # imports excluded: only the quantization call is timed
        stats = work() or {}
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_mb": peak_rss_mb(), **({"session_s": session_s} if job["tool"] == "floor" else {}),
            **({"calibration_s": stats["calibration_s"]} if job["tool"] == "ours" and job["mode"] == "static"
               and "calibration_s" in stats else {})}


def reset_peak_rss() -> None:
    """Start VmHWM afresh from the current RSS (Linux >= 4.0), so the peak is the tool's, with the
    calibration arrays it is given still counted (they stay resident)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:  # not Linux, or not allowed: the peak then includes making the data
        pass


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, which a new program image starts afresh. (Linux
    keeps ru_maxrss across exec, so a child forked from a large parent reported the parent's peak.)"""
    for line in open("/proc/self/status", encoding="ascii"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ours(job: dict, batches: list):
    from onnxslim import io
    from onnxslim.core.checks import check_model
    from onnxslim.core.pass_base import PassContext
    from onnxslim.data import DataBatch
    from onnxslim.passes.cleanup.expand_inner_softmax import ExpandInnerSoftmax
    from onnxslim.passes.quantization.quantize_auto import QuantizeAuto
    from onnxslim.passes.quantization.quantize_dynamic import QuantizeDynamic
    from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig

    # `onnxslim` checks the model it loads in ONNX Runtime before any pass (preflight.check_runnable),
    # so its calibration session is never the process's first; the floor, too, times a second session
    check_model(io.load(job["src"]))

    def work():
        model = io.load(job["src"])
        if job["mode"] in ("static", "auto"):  # as `--quantize static|auto` runs it (quantization/flags.py)
            model = ExpandInnerSoftmax()(model).model
        if job["mode"] == "dynamic":
            result = QuantizeDynamic()(model)
        elif job["mode"] == "auto":
            result = QuantizeAuto(context=PassContext(calibration=[DataBatch(b) for b in batches]))(model)
        else:
            context = PassContext(calibration=[DataBatch(b) for b in batches])
            config = QuantizeStaticConfig(method=job["method"], **job.get("extra", {}))
            result = QuantizeStatic(config, context=context)(model)
        io.save(result.model, job["dst"])
        return result.stats

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
    import onnxruntime

    onnxruntime.InferenceSession(job["src"], providers=["CPUExecutionProvider"])  # as ours: not the first session

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


def _load_error(path: str) -> str | None:
    try:
        session(path)
    except Exception as exc:  # ORT's quantizer can emit per-axis DequantizeLinear below opset 13
        return str(exc).splitlines()[0][-110:]
    return None


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


@functools.lru_cache(maxsize=4)
def _reference(float_path: str) -> np.ndarray:
    feeds = evaluation(Path(float_path).name.split("_float")[0])[0]
    return _run(float_path, feeds)


def _run(path: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    s = session(path)
    first = next(iter(feeds.values()))
    return np.concatenate([s.run(None, {k: v[i:i + 16] for k, v in feeds.items()})[0] for i in range(0, len(first), 16)])


def quality(name: str, float_path: str, path: str) -> str:
    feeds, labels = evaluation(name)
    output = _run(path, feeds)
    if labels is not None:
        return f"acc {100 * (output.argmax(1) == labels).mean():.1f}%"
    reference = _reference(float_path)
    if name == "ppocr_det":
        return f"mask IoU {mask_iou(reference, output):.3f} cos {cosine(reference, output):.4f}"
    if name == "ppocr_rec":
        return f"same string {100 * string_agreement(reference, output):.1f}% cos {cosine(reference, output):.4f}"
    return (f"F1@.05 {detection_f1(reference, output):.3f} F1@.25 {detection_f1(reference, output, 0.25):.3f} "
            f"cos {cosine(reference, output):.4f}")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- main ------------------------------------------------------------------------------

def prepare(name: str, folder: Path) -> str:
    """The float model after our cleanup pipeline: both quantizers start from it."""
    from onnxslim import api

    dst = folder / f"{name}_float.onnx"
    api.run(model_path(name), dst, validate=False)
    return str(dst)


def opset13_copy(src: str) -> str:
    """``src`` converted to opset 13 (onnx's version converter) when older, else ``src``.

    ORT's quantize_static writes per-axis DequantizeLinear nodes even below opset 13, which do not
    load (PP-OCR is opset 12); users must convert first, so its rows start from this copy.
    """
    import onnx

    model = onnx.load(src)
    if next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13:
        return src
    dst = src.replace("_float.onnx", "_float_opset13.onnx")
    onnx.save(onnx.version_converter.convert_version(model, 13), dst)
    return dst


EXTRAS = {"ours+bc": {"bias_correction": True, "detector_min_cosine": None}, "ours+mp": {"min_cosine": None},
          "ours+det": {}}
"""Our accuracy tools, run with the default method at the first sample count. The method rows
quantize everything without bias correction (``detector_min_cosine=None, bias_correction=False``):
the steps ORT's quantizer takes, so their times compare. "ours+bc" adds the bias correction;
"ours+det" is the plain default (bias correction, and on a detector the mixed-precision search;
docs/quantization.md)."""
METHOD_ROW = {"detector_min_cosine": None, "bias_correction": False}


def variants(name: str, methods: list[str], samples: list[int], extras: list[str]):
    """(mode, method, tool, samples, extra config) per quantization to run."""
    for method in methods:
        for tool in ("ours", "ort"):
            for n in samples:
                yield "static", method, tool, n, dict(METHOD_ROW) if tool == "ours" else {}
    for extra in extras:
        yield "static", "mse", extra, samples[0], EXTRAS[extra]
    if name == "vit_tiny":
        yield from (("dynamic", "-", tool, samples[0], {}) for tool in ("ours", "ort"))
    yield "auto", "-", "ours", samples[0], {}  # --quantize auto: the format it measures fastest


def bench_model(name: str, methods: list[str], samples: list[int], rounds: int, folder: Path, extras: list[str],
                min_cosine: float) -> list[dict]:
    src = prepare(name, folder)
    rows, paths = [], {"float": src}
    floor = {n: run_child({"tool": "floor", "model": name, "samples": n, "src": src}) for n in samples}
    for mode, method, tool, n, extra in variants(name, methods, samples, extras):
        skip = None
        if tool == "ort" and method not in ORT_METHODS and mode == "static":
            skip = "no such method in onnxruntime.quantization"
        elif tool == "ort" and name in ("yolov8n", "ppocr_det") and n > 64:
            skip = "skipped: ORT buffers every activation (est. >20 GB here)"
        if skip:
            rows.append({"model": name, "mode": mode, "method": method, "tool": tool, "samples": n, "error": skip})
            continue
        extra = {k: (min_cosine if v is None and k == "min_cosine" else v) for k, v in extra.items()}
        dst = str(folder / f"{name}_{mode}_{method}_{tool}_{n}.onnx")
        job = {"tool": "ours" if tool.startswith("ours") else tool, "mode": mode, "method": method, "model": name,
               "samples": n, "src": opset13_copy(src) if tool == "ort" else src, "dst": dst, "extra": extra}
        row = {"model": name, "mode": mode, "method": method, "tool": tool, "samples": n, **run_child(job)}
        if "error" not in row and (broken := _load_error(dst)):
            row["error"] = f"output does not load in ORT: {broken}"
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
    for column in ("model", "mode", "method", "tool", "N", "calib s", "x floor", "stats s (x)", "RSS MB", "size KB", "ms", "x float", "quality"):
        table.add_column(column)
    fmt = lambda v, f: "-" if v is None else format(v, f)
    for r in rows:
        if "error" in r:
            table.add_row(r["model"], r["mode"], r.get("method", ""), r["tool"], str(r.get("samples", "")), r["error"])
            continue
        ratio = r["seconds"] / r["floor_s"] if r.get("floor_s") else None
        phase = r.get("calibration_s")
        phase = f"{phase:.2f} ({phase / r['floor_s']:.2f})" if phase is not None and r.get("floor_s") else "-"
        speed = r["float_ms"] / r["latency_ms"] if r.get("latency_ms") else None
        table.add_row(r["model"], r["mode"], r.get("method", ""), r["tool"], str(r.get("samples", "")),
                      fmt(r.get("seconds"), ".2f"), fmt(ratio, ".2f"), phase, fmt(r.get("rss_mb"), ".0f"), fmt(r.get("size_kb"), ".0f"),
                      fmt(r.get("latency_ms"), ".2f"), fmt(speed, ".2f") + "x", r.get("quality", ""))
    Console(width=170).print(table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "resnet_mini", "mobilenet_mini", "vit_tiny", "yolov8n"])
    parser.add_argument("--methods", nargs="+", default=["minmax", "percentile", "entropy", "mse"])
    parser.add_argument("--extras", nargs="*", default=list(EXTRAS), choices=list(EXTRAS))
    parser.add_argument("--min-cosine", type=float, default=0.99995, help="target of the ours+mp rows")
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
            rows.extend(bench_model(name, args.methods, args.samples, args.rounds, Path(folder), args.extras,
                                    args.min_cosine))
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
