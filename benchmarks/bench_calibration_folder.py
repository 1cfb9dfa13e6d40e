"""Calibration from a folder of JPEGs against a plain float loop over the same folder.

Usage::

    python benchmarks/bench_calibration_folder.py [--models yolov8n ppocr_det] [--samples 32] [--rounds 5]

bench_calibration_speed.py hands calibration arrays already in memory. Users usually give a
folder of images (``--calibration-data DIR --calibration-preprocess size=WxH``), whose decoding
and resizing costs as much as the forward passes. Each round runs, each in a fresh subprocess:

- floor: the image reader's batches, then the float forward passes, one after the other (what a
  plain float loop over the folder costs; session made beforehand);
- ours: quantize-static's calibration phase on the same reader (``calibration_s``: its session,
  the reader's batches, the runs and the statistics).

Reading the next batch on a worker thread while ORT runs the current one was tried (fourteenth
session) and measured no faster on 2 cores, where ORT's own threads already use both
(benchmarks/RESULTS.md).

The images are crops of scikit-learn's two sample photos, 1280x960 JPEGs, made in a temporary
folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

SIZES = {"yolov8n": "320x320", "ppocr_det": "640x640"}


def make_images(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for i in range(count):
        y, x = rng.integers(0, 100), rng.integers(0, 160)
        crop = photos[i % 2][y:y + 320, x:x + 480]
        Image.fromarray(crop).resize((1280, 960)).save(folder / f"{i:03d}.jpg", quality=90)


def child(job: dict) -> dict:
    from onnxslim import io
    from onnxslim.core.checks import check_model
    from onnxslim.core.pass_base import PassContext
    from onnxslim.data.images import ImageFolderReader
    from onnxslim.passes.cleanup.expand_inner_softmax import ExpandInnerSoftmax
    from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
    from onnxslim.runtime.session import make_session

    model = ExpandInnerSoftmax()(io.load(job["src"])).model
    reader = ImageFolderReader(Path(job["folder"]), model, spec=f"size={job['size']}", batch_size=8)
    check_model(model)  # as `onnxslim` does before any pass: no timed session is the process's first
    if job["tool"] == "floor":
        session = make_session(model)
        started = time.perf_counter()
        for batch in reader:
            session.run(None, batch.inputs)
        return {"seconds": time.perf_counter() - started}
    config = QuantizeStaticConfig(method="minmax", detector_min_cosine=None, bias_correction=False)
    result = QuantizeStatic(config, context=PassContext(calibration=reader))(model)
    return {"seconds": result.stats["calibration_s"]}


def run_child(job: dict) -> dict:
    process = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                             cwd=ROOT, timeout=1800)
    if process.returncode != 0:
        raise SystemExit(f"{job['model']} {job['tool']}: {(process.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(SIZES))
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from bench_quantization import prepare
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"calibration from a folder of {args.samples} JPEGs, minmax, {args.rounds} paired rounds "
                        "(median, min-max)")
    for column in ("model", "floor s (read + runs)", "ours s", "ours x floor"):
        table.add_column(column)
    with tempfile.TemporaryDirectory(prefix="calibfolder-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.samples)
        for name in args.models:
            src = prepare(name, Path(tmp))
            runs = {tool: [] for tool in ("floor", "ours")}
            for _ in range(args.rounds):
                for tool in runs:
                    job = {"tool": tool, "model": name, "src": src, "folder": str(folder), "size": SIZES[name]}
                    runs[tool].append(run_child(job)["seconds"])
            ratio = [a / b for a, b in zip(runs["ours"], runs["floor"])]
            table.add_row(name, *(f"{statistics.median(runs[t]):.2f}" for t in runs),
                          f"{statistics.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f})")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
