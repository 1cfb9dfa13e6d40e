"""Calibration speed of this checkout against an earlier commit, paired round by round.

Usage::

    python benchmarks/bench_calibration_ab.py --old COMMIT [--models ppocr_rec yolov8n ppocr_det]
        [--samples 32] [--rounds 7] [--method minmax]

On a shared machine the float floor itself moves by 30% between runs, so a ratio read in one
session does not compare with one read in another. Here each round runs, in fresh processes, the
float floor, the old commit's quantize-static and this checkout's (``bench_quantization.run_child``,
calibration and rewrite only), one after the other; the table shows the medians of the calibration
phase in seconds and of its per-round ratio to the floor, and of the whole quantization (load,
calibration, rewrite, save): what a change that moves work into or out of the phase saved. The old commit is exported with ``git
archive`` into a temporary folder (removed afterwards) and put first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quantization import METHOD_ROW, ROOT, prepare, run_child  # noqa: E402


def export(commit: str, folder: Path) -> Path:
    """``commit``'s tree under ``folder``, importable as ``onnxslim`` (with ``onnxslim.passes``)."""
    tree = folder / "old"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (tree / "onnxslim" / "passes").symlink_to(tree / "passes", target_is_directory=True)
    return tree


def measure(name: str, old: Path, args, folder: Path) -> dict[str, list[tuple[float, float, float]]]:
    src = prepare(name, folder)
    job = {"tool": "ours", "mode": "static", "method": args.method, "model": name, "samples": args.samples,
           "src": src, "dst": str(folder / f"{name}_ab.onnx"), "extra": dict(METHOD_ROW)}
    runs: dict[str, list[tuple[float, float, float]]] = {"old": [], "new": []}
    saved = os.environ.get("PYTHONPATH")
    try:
        for _ in range(args.rounds):
            floor = run_child({"tool": "floor", "model": name, "samples": args.samples, "src": src})["seconds"]
            for variant in ("old", "new"):
                os.environ["PYTHONPATH"] = str(old) if variant == "old" else (saved or "")
                result = run_child(job)
                if "error" in result:
                    raise SystemExit(f"{name} {variant}: {result['error']}")
                runs[variant].append((result["calibration_s"], result["calibration_s"] / floor, result["seconds"]))
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the commit to compare against (any git revision)")
    parser.add_argument("--models", nargs="*", default=["ppocr_rec", "yolov8n", "ppocr_det"])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--method", default="minmax")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"calibration phase, {args.old} vs this checkout: {args.method}, {args.samples} samples, "
                        f"{args.rounds} paired rounds (median, min-max)")
    for column in ("model", "old phase s", "new phase s", "new / old", "old phase x floor", "new phase x floor",
                   "old whole s", "new whole s"):
        table.add_column(column)
    with tempfile.TemporaryDirectory(prefix="onnxslim-ab-") as folder:
        old = export(args.old, Path(folder))
        for name in args.models:
            runs = measure(name, old, args, Path(folder))
            seconds = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
            ratios = {k: [r[1] for r in v] for k, v in runs.items()}
            whole = {k: statistics.median(r[2] for r in v) for k, v in runs.items()}
            table.add_row(name, f"{seconds['old']:.3f}", f"{seconds['new']:.3f}", f"{seconds['new'] / seconds['old']:.2f}",
                          *(f"{statistics.median(ratios[k]):.2f} ({min(ratios[k]):.2f}-{max(ratios[k]):.2f})"
                            for k in ("old", "new")), f"{whole['old']:.3f}", f"{whole['new']:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
