"""A folder of images turned into model inputs by a preprocessing spec.

Spec (``--preprocess``), every key optional::

    size=224x224,mean=0.485;0.456;0.406,std=0.229;0.224;0.225,scale=1/255,layout=NCHW,color=RGB

``size`` is WIDTHxHEIGHT or one number for a square (default: the model input's static or pinned
dims); pixels (0..255) are multiplied by ``scale`` (default 1/255; 1 for an integer input such as
uint8, which then gets the pixels as they are), then ``(x - mean) / std`` per channel; ``layout``
NCHW or NHWC (default: guessed from the input shape); ``color`` RGB, BGR or L (default: from the
channel count). 16-bit grayscale images are read at full precision on the same 0..255 scale;
32-bit integer or float images are refused (no fixed range). A folder holding only subfolders is
read as one class per subfolder (sorted names give the label indices), so accuracy can be
reported. Pillow is needed (``pip install pillow``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import onnx_ir as ir

from onnxslim.data.checks import check_arrays, data_inputs, fitted_batch, input_layout
from onnxslim.input_shapes import is_fixed
from onnxslim.data.folder import IMAGE_SUFFIXES, list_files
from onnxslim.data.identity import digest, files_digest
from onnxslim.data.readers import DataBatch, Reader
from onnxslim.errors import DataError


@dataclasses.dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] | None = None  # (width, height)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float | None = None
    """None: 1/255 for a float input, 1 for an integer one (which takes the pixels as they are)."""
    layout: str | None = None
    color: str | None = None


def parse_preprocess(spec: str | None, *, flag: str = "--preprocess") -> Preprocess:
    """``key=value`` pairs separated by commas; lists use ``;``. Errors name ``flag``."""
    values: dict = {}
    for item in filter(None, (spec or "").split(",")):
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in {f.name for f in dataclasses.fields(Preprocess)}:
            raise DataError(f"{flag}: bad item {item!r} (keys: size, mean, std, scale, layout, color)")
        try:
            values[key] = _parse_value(key, text.strip())
        except (ValueError, ZeroDivisionError) as exc:
            reason = f" ({exc})" if isinstance(exc, _Unusable) else ""
            raise DataError(f"{flag}: bad value for {key}: {text!r}{reason}") from None
    return Preprocess(**values)


class _Unusable(ValueError):
    """A value of the right form that cannot be used (a size of 0, a std of 0): said why."""


def _parse_value(key: str, text: str):
    if key == "size":  # WIDTHxHEIGHT, or one number for a square
        parts = [int(v) for v in text.lower().split("x")]
        if len(parts) not in (1, 2):
            raise ValueError(text)
        if min(parts) <= 0:
            raise _Unusable("sizes must be positive")
        return parts[0], parts[-1]
    if key in ("mean", "std"):
        values = tuple(float(v) for v in text.split(";"))
        if key == "std" and 0 in values:  # else every pixel is NaN/Inf, reported as the data's fault
            raise _Unusable("std must not be 0")
        return values
    if key == "scale":
        num, _, den = text.partition("/")
        return float(num) / float(den or 1)
    upper = text.upper()
    allowed = ("NCHW", "NHWC") if key == "layout" else ("RGB", "BGR", "L")
    if upper not in allowed:
        raise ValueError(text)
    return upper


class ImageFolderReader(Reader):
    """Images (optionally in one subfolder per class) as batches of one input: float, or integer (uint8 pixels)."""

    def __init__(self, folder: Path, model: ir.Model, *, spec: str | None = None, batch_size: int = 32,
                 input_shapes: Mapping[str, tuple] | None = None, flag: str = "--preprocess"):
        if len(data_inputs(model)) != 1:
            raise DataError(f"a folder of images needs a single-input model; this one has {len(data_inputs(model))}", path=folder)
        self.model, self.folder, self.path, self.pins = model, folder, folder, input_shapes
        self.value = data_inputs(model)[0]
        self.dtype = np.dtype(self.value.dtype.numpy() if self.value.dtype is not None else np.float32)
        self.items = _list_images(folder)
        layout = input_layout(model, input_shapes)
        self.pre = _complete(parse_preprocess(spec, flag=flag), layout.shapes[self.value.name], self.value.name,
                             self.dtype, folder, flag)
        self.fixed_batch = layout.fixed_batch
        self.batch_size = fitted_batch(layout, batch_size, len(self.items), folder)
        self.flag = flag
        self.source = f"{folder} ({len(self.items)} images)"

    def identity(self) -> str:
        """The images (and class labels), the completed preprocessing and the batch size."""
        return digest("images", files_digest([path for path, _ in self.items], self.folder),
                      [label for _, label in self.items], self.pre, self.batch_size)

    def __iter__(self) -> Iterator[DataBatch]:
        for start in range(0, len(self.items), self.batch_size):
            chunk = self.items[start:start + self.batch_size]
            arrays = [_to_dtype(_load_image(path, self.pre), self.dtype, path, self.flag, rounded=_identity(self.pre))
                      for path, _ in chunk]
            inputs = {self.value.name: np.stack(arrays)}
            check_arrays(inputs, self.model, chunk[0][0], self.pins)
            labels = None if chunk[0][1] is None else np.array([label for _, label in chunk], dtype=np.int64)
            source = f"{self.folder} (images {start}-{start + len(chunk) - 1}, from {chunk[0][0].relative_to(self.folder)})"
            yield DataBatch(inputs, labels, source)


def _list_images(folder: Path) -> list[tuple[Path, int | None]]:
    files = list_files(folder)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if files or not classes:
        items = [(p, None) for p in files]
    else:  # hidden files (.DS_Store, ._x.png) skipped as at the top level
        items = [(p, label) for label, sub in enumerate(classes) for p in sorted(sub.iterdir())
                 if p.is_file() and not p.name.startswith(".")]
    if not items:
        raise DataError("folder has no images", path=folder)
    for path, _ in items:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"not an image file (expected {', '.join(sorted(IMAGE_SUFFIXES))})", path=path)
    return items


def _complete(pre: Preprocess, shape: tuple | None, name: str, dtype: np.dtype, folder: Path, flag: str) -> Preprocess:
    """Fills size, layout, color and scale from the model input's shape [N, C, H, W] or [N, H, W, C] and dtype."""
    dims = list(shape) if shape is not None else []
    if len(dims) != 4:
        raise DataError(f"input {name!r} is not an image batch (rank {len(dims) or 'unknown'}, expected 4)", path=folder)
    layout = pre.layout or ("NHWC" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "NCHW")
    channels, height, width = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
    size = pre.size or (width, height)
    if not all(is_fixed(d) and d > 0 for d in size):  # Paddle writes -1 for a dynamic dim
        raise DataError(f"input {name!r} has dynamic height/width; give {flag} size=WxH", path=folder)
    color = pre.color or ("L" if channels == 1 else "RGB")
    for key in ("mean", "std"):
        if len(getattr(pre, key)) not in (1, 1 if color == "L" else 3):
            raise DataError(f"{flag} {key} needs 1 or {1 if color == 'L' else 3} values for color {color}")
    # an integer input (uint8 images) takes the pixels as they are: 1/255 turned them into 0 and 1
    scale = pre.scale if pre.scale is not None else 1.0 if np.issubdtype(dtype, np.integer) else 1 / 255
    return dataclasses.replace(pre, size=size, layout=layout, color=color, scale=scale)


def _identity(pre: Preprocess) -> bool:
    """Pixels pass as they are (scale 1, mean 0, std 1): what an integer input gets by default."""
    return pre.scale == 1 and all(m == 0 for m in pre.mean) and all(s == 1 for s in pre.std)


def _to_dtype(pixels: np.ndarray, dtype: np.dtype, path: Path, flag: str, *, rounded: bool = False) -> np.ndarray:
    """The pixels in the input's dtype; for an integer input, refused unless they are integers in its
    range. ``rounded``: the spec is the identity, so non-integers can only come from a 16-bit image
    put on the 8-bit scale, which an 8-bit input takes rounded."""
    if np.issubdtype(dtype, np.integer) and rounded:
        pixels = np.round(pixels)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if not (np.all(pixels == np.round(pixels)) and pixels.min() >= info.min and pixels.max() <= info.max):
            raise DataError(f"{flag} makes values in [{pixels.min():g}, {pixels.max():g}] that are not all {dtype} "
                            f"integers ({info.min}..{info.max}), which the model's {dtype} input takes; "
                            "leave scale, mean and std at 1, 0, 1 for it", path=path)
    return pixels.astype(dtype)


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
"""Pillow's 16-bit grayscale modes; Pillow < 10 reads a 16-bit PNG as mode "I" instead."""


def _load_image(path: Path, pre: Preprocess) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading images needs Pillow (pip install pillow)") from None
    try:
        with Image.open(path) as image:
            pixels = _pixels(image, pre, path)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read as an image: {exc}", path=path) from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pre.color == "BGR":
        pixels = pixels[:, :, ::-1]
    scale = 1 / 255 if pre.scale is None else pre.scale
    pixels = (pixels * scale - np.array(pre.mean, np.float32)) / np.array(pre.std, np.float32)
    return pixels.transpose(2, 0, 1) if pre.layout == "NCHW" else pixels


def _pixels(image, pre: Preprocess, path: Path) -> np.ndarray:
    """HxW or HxWxC float pixels on the 8-bit scale (0..255), in ``pre.color``, resized to ``pre.size``.
    A 16-bit image keeps its precision, scaled by 255/65535 so that one spec serves 8 and 16 bits
    (``convert("L")`` clipped it at 255: most pixels became white)."""
    if image.mode in SIXTEEN_BIT or (image.mode == "I" and image.format == "PNG"):
        gray = np.asarray(image.convert("F").resize(pre.size), np.float32) * np.float32(255 / 65535)
        return gray if pre.color == "L" else np.repeat(gray[:, :, np.newaxis], 3, axis=2)
    if image.mode in ("I", "F"):  # 32-bit: no range to map onto 0..255, and convert() would clip it
        raise DataError(f"a 32-bit {'float' if image.mode == 'F' else 'integer'} image (mode {image.mode}) has no "
                        "fixed value range: convert it to 8 or 16 bits, or save the arrays as .npy files in a folder",
                        path=path)
    image = image.convert("RGB" if pre.color == "BGR" else pre.color).resize(pre.size)
    return np.asarray(image, dtype=np.float32)
