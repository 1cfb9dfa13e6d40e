"""Detection benchmark data and metric: 320x320 images from photos that ship inside Python packages
(no dataset download), and detection F1 of a quantized YOLOv8 output against the float one.

Sources: scikit-image's ``skimage/data`` photos (astronaut, cat, coffee cup, motorcycles,
rocket, camera man, clock, coins...: read straight from the wheel, which ``pip download
scikit-image --no-deps`` fetches once into benchmarks/out/, git-ignored) and scikit-learn's two
sample photos. Each image is a random square crop (35-100% of the short side), resized to
320x320 (nearest), flipped half of the time. Calibration and evaluation sets use different
seeds, so their crops differ (same source photos: in-distribution calibration).
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "motorcycle_right.png", "rocket.jpg",
          "camera.png", "clock_motion.png", "coins.png", "hubble_deep_field.jpg", "color.png", "brick.png")


def _wheel() -> Path:
    folder = OUT / "wheels"
    found = sorted(folder.glob("scikit_image-*.whl")) if folder.exists() else []
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "scikit-image", "--no-deps", "-q", "-d", str(folder)],
                       check=True)
        found = sorted(folder.glob("scikit_image-*.whl"))
    return found[-1]


def photos() -> list[np.ndarray]:
    """RGB float32 photos in [0, 1], HWC."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    result = [np.asarray(p, np.float32) / 255 for p in load_sample_images().images]
    try:
        with zipfile.ZipFile(_wheel()) as archive:
            for name in PHOTOS:
                image = Image.open(io.BytesIO(archive.read(f"skimage/data/{name}"))).convert("RGB")
                result.append(np.asarray(image, np.float32) / 255)
    except (OSError, subprocess.CalledProcessError) as exc:  # offline: fall back to the two sklearn photos
        print(f"scikit-image photos unavailable ({exc}); using scikit-learn's two sample photos", file=sys.stderr)
    return result


def detection_images(count: int, seed: int, size: int = 320) -> np.ndarray:
    """``count`` NCHW float32 images: random square crops of the photos, resized, some flipped."""
    sources = photos()
    rng, out = np.random.default_rng(seed), []
    for i in range(count):
        photo = sources[i % len(sources)]
        height, width = photo.shape[:2]
        side = int(rng.uniform(0.35, 1.0) * min(height, width))
        y, x = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        index = (np.arange(size) * side / size).astype(int)
        crop = photo[y:y + side, x:x + side][index][:, index]
        out.append((crop[:, ::-1] if rng.random() < 0.5 else crop).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


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


def detection_f1(reference: np.ndarray, output: np.ndarray, threshold: float = 0.05) -> float:
    """F1 of ``output``'s boxes against ``reference``'s (same class, IoU >= 0.5), both cut at ``threshold``."""
    matched = total_ref = total_out = 0
    for ref, out in zip(detections(reference, threshold), detections(output, threshold)):
        total_ref, total_out, used = total_ref + len(ref), total_out + len(out), set()
        for row in ref:
            for j, other in enumerate(out):
                if j not in used and other[0] == row[0] and iou(row[2:], other[2:]) >= 0.5:
                    used.add(j)
                    matched += 1
                    break
    return 2 * matched / (total_ref + total_out) if total_ref + total_out else 1.0
