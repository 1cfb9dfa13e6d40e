"""A folder of images turned into model inputs by a preprocessing spec.

Spec (``--preprocess``), every key optional::

    size=224x224,mean=0.485;0.456;0.406,std=0.229;0.224;0.225,scale=1/255,layout=NCHW,color=RGB

``size`` is WIDTHxHEIGHT or one number for a square (default: the model input's static dims); pixels are multiplied by
``scale`` (default 1/255), then ``(x - mean) / std`` per channel; ``layout`` NCHW or NHWC
(default: guessed from the input shape); ``color`` RGB, BGR or L (default: from the channel
count). A folder holding only subfolders is read as one class per subfolder (sorted names
give the label indices), so accuracy can be reported. Pillow is needed (``pip install pillow``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx_ir as ir

from onnxslim.data.checks import check_arrays, data_inputs
from onnxslim.data.folder import IMAGE_SUFFIXES, list_files
from onnxslim.data.identity import digest, files_digest
from onnxslim.data.readers import DataBatch, Reader
from onnxslim.errors import DataError


@dataclasses.dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] | None = None  # (width, height)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1 / 255
    layout: str | None = None
    color: str | None = None


def parse_preprocess(spec: str | None) -> Preprocess:
    """``key=value`` pairs separated by commas; lists use ``;``."""
    values: dict = {}
    for item in filter(None, (spec or "").split(",")):
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in {f.name for f in dataclasses.fields(Preprocess)}:
            raise DataError(f"--preprocess: bad item {item!r} (keys: size, mean, std, scale, layout, color)")
        try:
            values[key] = _parse_value(key, text.strip())
        except (ValueError, ZeroDivisionError):
            raise DataError(f"--preprocess: bad value for {key}: {text!r}") from None
    return Preprocess(**values)


def _parse_value(key: str, text: str):
    if key == "size":  # WIDTHxHEIGHT, or one number for a square
        parts = [int(v) for v in text.lower().split("x")]
        if len(parts) not in (1, 2):
            raise ValueError(text)
        return parts[0], parts[-1]
    if key in ("mean", "std"):
        return tuple(float(v) for v in text.split(";"))
    if key == "scale":
        num, _, den = text.partition("/")
        return float(num) / float(den or 1)
    upper = text.upper()
    allowed = ("NCHW", "NHWC") if key == "layout" else ("RGB", "BGR", "L")
    if upper not in allowed:
        raise ValueError(text)
    return upper


class ImageFolderReader(Reader):
    """Images (optionally in one subfolder per class) as batches of one float input."""

    def __init__(self, folder: Path, model: ir.Model, *, spec: str | None = None, batch_size: int = 32):
        if len(data_inputs(model)) != 1:
            raise DataError(f"a folder of images needs a single-input model; this one has {len(data_inputs(model))}", path=folder)
        self.model, self.batch_size, self.folder = model, batch_size, folder
        self.value = data_inputs(model)[0]
        self.items = _list_images(folder)
        self.pre = _complete(parse_preprocess(spec), self.value, folder)
        self.source = f"{folder} ({len(self.items)} images)"

    def identity(self) -> str:
        """The images (and class labels), the completed preprocessing and the batch size."""
        return digest("images", files_digest([path for path, _ in self.items], self.folder),
                      [label for _, label in self.items], self.pre, self.batch_size)

    def __iter__(self) -> Iterator[DataBatch]:
        for start in range(0, len(self.items), self.batch_size):
            chunk = self.items[start:start + self.batch_size]
            array = np.stack([_load_image(path, self.pre) for path, _ in chunk])
            dtype = self.value.dtype.numpy() if self.value.dtype is not None else np.float32
            inputs = {self.value.name: array.astype(dtype)}
            check_arrays(inputs, self.model, chunk[0][0])
            labels = None if chunk[0][1] is None else np.array([label for _, label in chunk], dtype=np.int64)
            yield DataBatch(inputs, labels)


def _list_images(folder: Path) -> list[tuple[Path, int | None]]:
    files = list_files(folder)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if files or not classes:
        items = [(p, None) for p in files]
    else:
        items = [(p, label) for label, sub in enumerate(classes) for p in sorted(sub.iterdir()) if p.is_file()]
    if not items:
        raise DataError("folder has no images", path=folder)
    for path, _ in items:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"not an image file (expected {', '.join(sorted(IMAGE_SUFFIXES))})", path=path)
    return items


def _complete(pre: Preprocess, value: ir.Value, folder: Path) -> Preprocess:
    """Fills size, layout and color from the model input's shape [N, C, H, W] or [N, H, W, C]."""
    dims = list(value.shape) if value.shape is not None else []
    if len(dims) != 4:
        raise DataError(f"input {value.name!r} is not an image batch (rank {len(dims) or 'unknown'}, expected 4)", path=folder)
    layout = pre.layout or ("NHWC" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "NCHW")
    channels, height, width = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
    size = pre.size or (width, height)
    if not all(isinstance(d, int) for d in size):
        raise DataError(f"input {value.name!r} has dynamic height/width; give --preprocess size=WxH", path=folder)
    color = pre.color or ("L" if channels == 1 else "RGB")
    for key in ("mean", "std"):
        if len(getattr(pre, key)) not in (1, 1 if color == "L" else 3):
            raise DataError(f"--preprocess {key} needs 1 or {1 if color == 'L' else 3} values for color {color}")
    return dataclasses.replace(pre, size=size, layout=layout, color=color)


def _load_image(path: Path, pre: Preprocess) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading images needs Pillow (pip install pillow)") from None
    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if pre.color == "BGR" else pre.color).resize(pre.size)
            pixels = np.asarray(image, dtype=np.float32)
    except Exception as exc:
        raise DataError(f"cannot read as an image: {exc}", path=path) from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pre.color == "BGR":
        pixels = pixels[:, :, ::-1]
    pixels = (pixels * pre.scale - np.array(pre.mean, np.float32)) / np.array(pre.std, np.float32)
    return pixels.transpose(2, 0, 1) if pre.layout == "NCHW" else pixels
