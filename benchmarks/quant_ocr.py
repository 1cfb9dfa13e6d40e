"""OCR benchmark data and metrics for the PP-OCRv4 detector and recognizer (rapidocr-onnxruntime's Paddle exports).

No dataset download: images are rendered here with Pillow. Detection: 320x320 pages of random
words (letters, digits, punctuation; DejaVu fonts when installed, else Pillow's built-in font)
in dark ink on light backgrounds that are faded crops of the photos shipped in scikit-image /
scikit-learn (``quant_detection.photos``). Recognition: 48x320 single-line crops of 1-3 words.
Calibration and evaluation use different seeds.

Metrics against the float model: detection, IoU of the text masks (probability > 0.3, the
DB post-processing's threshold) and cosine of the probability maps; recognition, the share of
crops whose greedy CTC decoding (argmax per step, repeats collapsed, blank 0 dropped) equals
the float model's, i.e. the same string.
"""

from __future__ import annotations

import functools
import glob
import string

import numpy as np

from quant_detection import photos

CHARS = string.ascii_letters + string.digits + ".,:-/%()"
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


@functools.lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    found = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf"))
    return ImageFont.truetype(found[size % len(found)], size) if found else ImageFont.load_default(size=size)


def _word(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list(CHARS), int(rng.integers(2, 10))))


def _background(rng: np.random.Generator, sources: list[np.ndarray], height: int, width: int) -> np.ndarray:
    photo = sources[int(rng.integers(len(sources)))]
    y, x = int(rng.integers(0, photo.shape[0] - height + 1)), int(rng.integers(0, photo.shape[1] - width + 1))
    fade = rng.uniform(0.6, 0.9)
    return (255 * (fade + (1 - fade) * photo[y:y + height, x:x + width])).astype(np.uint8)


def _render(rng, sources, height: int, width: int, lines: int, sizes: tuple[int, int]) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.fromarray(_background(rng, sources, height, width))
    draw = ImageDraw.Draw(image)
    y = int(rng.integers(2, 12))
    for _ in range(lines):
        size = int(rng.integers(*sizes))
        ink = tuple(int(c) for c in rng.integers(0, 90, 3))
        text = " ".join(_word(rng) for _ in range(int(rng.integers(1, 4))))
        draw.text((int(rng.integers(2, max(3, width // 6))), y), text, fill=ink, font=_font(size))
        y += int(size * rng.uniform(1.3, 2.2))
        if y > height - sizes[0]:
            break
    return np.asarray(image, np.float32) / 255


def det_images(count: int, seed: int, size: int = 320) -> np.ndarray:
    """NCHW float32, PP-OCR det normalization (BGR, ImageNet mean/std)."""
    rng, sources = np.random.default_rng(seed), [p for p in photos() if min(p.shape[:2]) >= size]
    pages = [_render(rng, sources, size, size, int(rng.integers(3, 9)), (14, 40)) for _ in range(count)]
    return np.stack([((p - MEAN) / STD)[:, :, ::-1].transpose(2, 0, 1) for p in pages]).astype(np.float32)


def rec_images(count: int, seed: int, height: int = 48, width: int = 320) -> np.ndarray:
    """NCHW float32 single text lines, PP-OCR rec normalization ((x - 0.5) / 0.5, BGR)."""
    rng, sources = np.random.default_rng(seed), [p for p in photos() if p.shape[0] >= height and p.shape[1] >= width]
    lines = [_render(rng, sources, height, width, 1, (22, 34)) for _ in range(count)]
    return np.stack([((p - 0.5) / 0.5)[:, :, ::-1].transpose(2, 0, 1) for p in lines]).astype(np.float32)


def mask_iou(reference: np.ndarray, output: np.ndarray, threshold: float = 0.3) -> float:
    a, b = reference > threshold, output > threshold
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def ctc_strings(probabilities: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of [N, T, classes] into index sequences (blank = 0)."""
    result = []
    for best in probabilities.argmax(-1):
        keep = np.concatenate([[True], best[1:] != best[:-1]]) & (best != 0)
        result.append(tuple(int(i) for i in best[keep]))
    return result


def string_agreement(reference: np.ndarray, output: np.ndarray) -> float:
    return float(np.mean([a == b for a, b in zip(ctc_strings(reference), ctc_strings(output))]))
