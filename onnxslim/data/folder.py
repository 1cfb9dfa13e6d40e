"""A folder of .npz/.npy files, each one sample or one batch, read one file at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import onnx_ir as ir

from onnxslim.data.checks import check_arrays, check_labels, data_inputs, fitted_batch, input_layout, input_names
from onnxslim.data.identity import digest, files_digest
from onnxslim.data.npz import native_order
from onnxslim.data.readers import DataBatch, Reader, read_npz
from onnxslim.errors import DataError, first_line

ARRAY_SUFFIXES = {".npz", ".npy"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def list_files(folder: Path) -> list[Path]:
    """Visible files, sorted by name (subfolders listed by the image reader itself)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files and not any(p.is_dir() for p in folder.iterdir()):
        raise DataError("folder is empty (expected .npz/.npy files or images)", path=folder)
    return files


def folder_kind(folder: Path) -> str:
    """'arrays' when every file is .npz/.npy, 'images' when the folder holds images or class subfolders."""
    files = list_files(folder)
    if not files:
        return "images"  # only subfolders: one per class
    suffixes = {p.suffix.lower() for p in files}
    if suffixes <= ARRAY_SUFFIXES:
        return "arrays"
    if suffixes & ARRAY_SUFFIXES:
        odd = next(p for p in files if p.suffix.lower() not in ARRAY_SUFFIXES)
        raise DataError("not a .npz/.npy file in a folder of arrays", path=odd)
    return "images"


class ArrayFolderReader(Reader):
    """Each file is one batch: an array of the input's rank, or one sample (rank - 1) that gets a batch
    axis. A model that takes one batch size only gets each file cut into batches of it."""

    def __init__(self, folder: Path, model: ir.Model, *, input_shapes: Mapping[str, tuple] | None = None):
        self.model, self.folder, self.path, self.pins = model, folder, folder, input_shapes
        self.files = list_files(folder)
        if not self.files:
            raise DataError("folder has no .npz/.npy files", path=folder)
        if any(p.suffix.lower() == ".npy" for p in self.files) and len(data_inputs(model)) != 1:
            raise DataError(f".npy files need a single-input model; this one has {len(data_inputs(model))} inputs "
                            "(use .npz with one key per input)", path=folder)
        self.layout = input_layout(model, input_shapes)
        self.fixed_batch = self.layout.fixed_batch
        self.source = f"{folder} ({len(self.files)} files)"

    def identity(self) -> str:
        return digest("arrays", files_digest(self.files, self.folder))

    def __iter__(self) -> Iterator[DataBatch]:
        for path in self.files:
            batch = self._read(path)
            size = fitted_batch(self.layout, batch.samples, batch.samples, path)  # the file, or the fixed batch
            if size == batch.samples:
                yield batch
                continue
            for start in range(0, batch.samples, size):
                yield _part(batch, start, start + size, path)

    def _read(self, path: Path) -> DataBatch:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as handle:
                header = handle.read(6)
            if header != b"\x93NUMPY":  # else np.load calls any file "pickled (object) data"
                raise DataError("not a valid .npy file (no NumPy header)", path=path)
            try:
                arrays, labels = {input_names(self.model)[0]: native_order(np.load(path, allow_pickle=False))}, None
            except Exception as exc:
                raise DataError(f"cannot read as .npy: {first_line(exc)}", path=path) from None
        else:
            arrays, labels = read_npz(path, self.model)
        if self._is_single_sample(arrays):
            arrays = {k: v[np.newaxis] if k in self.layout.batched else v for k, v in arrays.items()}
            labels = None if labels is None else np.atleast_1d(labels)
        count = check_arrays(arrays, self.model, path, self.pins)
        return DataBatch(arrays, check_labels(labels, count, path), str(path), frozenset(arrays) - self.layout.batched)

    def _is_single_sample(self, arrays: dict[str, np.ndarray]) -> bool:
        for name in self.layout.batched:
            shape = self.layout.shapes[name]
            if shape is not None and arrays[name].ndim == len(shape) - 1:
                return True
        return False


def _part(batch: DataBatch, start: int, stop: int, path: Path) -> DataBatch:
    inputs = {k: v if k in batch.whole else v[start:stop] for k, v in batch.inputs.items()}
    return DataBatch(inputs, None if batch.labels is None else batch.labels[start:stop],
                     f"{path} (samples {start}-{stop - 1})", batch.whole)
