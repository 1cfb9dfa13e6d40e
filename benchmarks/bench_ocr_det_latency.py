"""PP-OCRv4 detector: our quantized model vs ONNX Runtime's, paired latency and accuracy.

Usage::

    python benchmarks/bench_ocr_det_latency.py [--variants float ours-mse ours-minmax ort-minmax ...]
        [--rounds 8] [--calls 5] [--samples 32] [--ours-extra '{"hardswish": true}'] [--profile]

Variants: ``float`` (our cleanup), ``ours-<method>`` (QuantizeStatic defaults, that method),
``ort-minmax`` (onnxruntime.quantization.quantize_static, QDQ, per-channel, uint8/int8, MinMax,
on an opset-13 copy of the same cleaned model), ``*-old`` (the same, but from the cleanup
without ``fuse-affine-conv``), ``ours-<method>+x`` (``--ours-extra`` config on top).
Latency: ORT CPU, batch 1, 2 threads; ``--rounds`` interleaved rounds, each creating one session
per variant in turn, 3 warm-up calls, ``--calls`` timed calls, session dropped before the next
(one live session at a time). Prints per-variant median ms over all calls, the spread (min-max
of the per-round medians) and the ratio to the ``ort-minmax`` median of the same round
(median and quartiles over rounds). Accuracy: bench_quantization's det IoU / cosine on 64 evaluation pages.
``--profile`` writes ORT's per-op-type time for each variant (temp dir, deleted).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quantization as bq  # noqa: E402

NAME = "ppocr_det"


def build(variant: str, folder: Path, samples: int, extra: dict) -> str:
    """The model file of ``variant`` (quantizations run in child processes, as in bench_quantization)."""
    from onnxslim import api
    from onnxslim.passes import SIMPLIFY_PIPELINE

    old = variant.endswith("-old")
    src = folder / f"float{'-old' if old else ''}.onnx"
    if not src.exists():
        steps = [s for s in SIMPLIFY_PIPELINE if not (old and s == "fuse-affine-conv")]
        api.run(bq.model_path(NAME), src, simplify=False, passes=steps, validate=False)
    base = variant.removesuffix("-old")
    if base == "float":
        return str(src)
    tool, method = base.split("-", 1)
    method, _, plus = method.partition("+")
    dst = folder / f"{variant}.onnx"
    job = {"tool": tool, "mode": "static", "method": method, "model": NAME, "samples": samples, "dst": str(dst),
           "src": bq.opset13_copy(str(src)) if tool == "ort" else str(src), "extra": extra if plus else {}}
    out = bq.run_child(job)
    if "error" in out:
        raise SystemExit(f"{variant}: {out['error']}")
    return str(dst)


def timings(paths: dict[str, str], feeds: dict[str, np.ndarray], rounds: int, calls: int) -> dict[str, list[list[float]]]:
    """ms per call, per round, per variant; one live session at a time (2 threads, as in bench_quantization)."""
    from onnxslim.validation.latency import time_round_robin

    times: dict[str, list[list[float]]] = {k: [] for k in paths}
    for _ in range(rounds):
        for key, got in time_round_robin(paths, feeds, runs=calls, warmup=3, threads=2).items():
            times[key].append(got)
    return times


def profile(path: str, feeds: dict[str, np.ndarray], calls: int = 20) -> dict[str, float]:
    """ms per call by op type (ORT's profiler; the trace goes to a temp dir, deleted)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ortprof-") as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 2, 1, 3
        options.enable_profiling, options.profile_file_prefix = True, str(Path(folder) / "p")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for _ in range(3 + calls):
            session.run(None, feeds)
        trace = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted(e["ts"] for e in trace if e.get("name") == "model_run")
    per_op: dict[str, float] = collections.defaultdict(float)
    for event in trace:  # node kernels after the 3 warm-up runs
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= runs[3]:
            per_op[event["args"]["op_name"]] += event["dur"] / 1000 / calls
    return dict(per_op)


def report(times: dict[str, list[list[float]]], qualities: dict[str, str]) -> None:
    base = "ort-minmax" if "ort-minmax" in times else next(iter(times))
    print(f"{'variant':<22} {'median ms':>9} {'round medians min-max':>22} {'x ' + base + ' (q1-q3)':>26}  quality")
    for key, rounds in times.items():
        medians = [float(np.median(r)) for r in rounds]
        ratios = [m / float(np.median(b)) for m, b in zip(medians, times[base])]
        q1, q2, q3 = np.percentile(ratios, [25, 50, 75])
        print(f"{key:<22} {np.median(sum(rounds, [])):9.1f} {min(medians):10.1f} - {max(medians):<9.1f} "
              f"{q2:12.3f}x ({q1:.3f}-{q3:.3f})  {qualities.get(key, '')}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", nargs="+", default=["float", "ours-mse", "ours-minmax", "ort-minmax"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--ours-extra", default="{}", help="QuantizeStatic config for the ours-*+x variants (JSON)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    extra = json.loads(args.ours_extra)
    with tempfile.TemporaryDirectory(prefix="bench-ocrdet-") as name:
        folder = Path(name)
        paths = {v: build(v, folder, args.samples, extra) for v in args.variants}
        reference = bq._run(paths.get("float") or build("float", folder, args.samples, extra), bq.evaluation(NAME)[0])
        feeds = {"x": bq.evaluation(NAME)[0]["x"][:1]}
        qualities = {k: _quality(reference, p) for k, p in paths.items()}
        report(timings(paths, feeds, args.rounds, args.calls), qualities)
        if args.profile:
            for key, path in paths.items():
                ops = sorted(profile(path, feeds).items(), key=lambda kv: -kv[1])
                print(key, "total %.1f ms:" % sum(v for _, v in ops), ", ".join(f"{k} {v:.1f}" for k, v in ops[:12]))


def _quality(reference: np.ndarray, path: str) -> str:
    output = bq._run(path, bq.evaluation(NAME)[0])
    return f"IoU {bq.mask_iou(reference, output):.3f} cos {bq.cosine(reference, output):.4f}"


if __name__ == "__main__":
    main()
