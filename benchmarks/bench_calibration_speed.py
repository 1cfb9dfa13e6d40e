"""Calibration speed, paired: the float floor, our static quantization and ORT's, round-robin.

Usage::

    python benchmarks/bench_calibration_speed.py [--models yolov8n ppocr_det ppocr_rec] [--method minmax]
        [--samples 32] [--rounds 5] [--skip-ort]

bench_quantization.py times each variant once, so on a shared machine one slow moment moves a
ratio by 30%. Here every round runs, each in a fresh subprocess, the plain float forward passes
over the calibration samples (the floor), our quantize-static (calibration and rewrite only:
no bias correction, no mixed precision, as ORT does) and ORT's quantize_static with the same
method, and the table shows medians and the per-round ratios' medians (with their spread).
Ours is shown whole (load, calibration, rewrite, save) and as its calibration phase alone.

The floor is the forward passes alone, session made beforehand; the calibration phase includes
making its session. "phase x (floor + session)" puts the float session's creation (the same
``make_session`` call, without the extra outputs) on the floor's side too: it is what
calibration costs over running the same float passes from the same loaded model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quantization import METHOD_ROW, opset13_copy, prepare, run_child  # noqa: E402


def measure(name: str, method: str, samples: int, rounds: int, folder: Path, with_ort: bool = True) -> dict:
    src = prepare(name, folder)
    jobs = {
        "floor": {"tool": "floor", "model": name, "samples": samples, "src": src},
        "ours": {"tool": "ours", "mode": "static", "method": method, "model": name, "samples": samples, "src": src,
                 "dst": str(folder / f"{name}_ours.onnx"), "extra": dict(METHOD_ROW)},
        "ort": {"tool": "ort", "mode": "static", "method": method, "model": name, "samples": samples,
                "src": opset13_copy(src), "dst": str(folder / f"{name}_ort.onnx")},
    }
    if not with_ort:  # at 256 samples ORT buffers every activation of YOLOv8n / PP-OCR det (> 20 GB)
        del jobs["ort"]
    runs: dict[str, list[dict]] = {key: [] for key in jobs}
    for _ in range(rounds):
        for key, job in jobs.items():
            result = run_child(job)
            if "error" in result:
                raise SystemExit(f"{name} {key}: {result['error']}")
            runs[key].append(result)
    floor = [r["seconds"] for r in runs["floor"]]
    with_session = [r["seconds"] + r["session_s"] for r in runs["floor"]]
    ours = [r["seconds"] for r in runs["ours"]]
    phase = [r["calibration_s"] for r in runs["ours"]]
    ort = [r["seconds"] for r in runs.get("ort", [])] or [float("nan")] * rounds
    return {"model": name, "floor": floor, "ours": ours, "phase": phase, "ort": ort,
            "ours_x_floor": [o / f for o, f in zip(ours, floor)], "phase_x_floor": [p / f for p, f in zip(phase, floor)],
            "floor_session": with_session, "phase_x_floor_session": [p / f for p, f in zip(phase, with_session)],
            "ort_over_ours": [t / o for t, o in zip(ort, ours)]}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["yolov8n", "ppocr_det", "ppocr_rec"])
    parser.add_argument("--method", default="minmax")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-ort", action="store_true", help="floor and ours only (for large sample counts)")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"calibration speed, {args.method}, {args.samples} samples, {args.rounds} paired rounds "
                        "(median, min-max)")
    for column in ("model", "floor s", "floor + session s", "ours s", "ours calib phase s", "ORT s", "ours x floor",
                   "phase x floor", "phase x (floor + session)", "ORT / ours"):
        table.add_column(column)
    with tempfile.TemporaryDirectory(prefix="calibspeed-") as folder:
        for name in args.models:
            r = measure(name, args.method, args.samples, args.rounds, Path(folder), with_ort=not args.skip_ort)
            table.add_row(name, *(f"{statistics.median(r[k]):.2f}" for k in ("floor", "floor_session", "ours", "phase",
                                                                              "ort")),
                          _spread(r["ours_x_floor"]), _spread(r["phase_x_floor"]), _spread(r["phase_x_floor_session"]),
                          _spread(r["ort_over_ours"]))
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
