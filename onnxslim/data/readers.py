"""Readers that turn a data source into batches of named input arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx_ir as ir

from onnxslim.errors import DataError
from onnxslim.input_shapes import resolve_shape

Batch = dict[str, np.ndarray]


def random_samples(model: ir.Model, count: int, *, seed: int = 0, input_shapes: Mapping[str, tuple] | None = None,
                   batch: int = 1) -> list[Batch]:
    """Seeded random inputs that respect each input's dtype and shape."""
    rng = np.random.default_rng(seed)
    shapes = {v.name: resolve_shape(v, input_shapes or {}, default_batch=batch) for v in model.graph.inputs}
    batches = []
    for _ in range(count):
        sample = {}
        for value in model.graph.inputs:
            dtype = value.dtype.numpy() if value.dtype is not None else np.float32
            sample[value.name] = _random_array(rng, shapes[value.name], dtype)
        batches.append(sample)
    return batches


def _random_array(rng: np.random.Generator, shape: tuple, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 8, shape).astype(dtype)
    raise DataError(f"cannot make random inputs of dtype {dtype}")


def load_samples(path: str | Path, model: ir.Model, *, batch_size: int = 32) -> tuple[list[Batch], np.ndarray | None]:
    """Batches from a .npz whose keys are input names (samples along axis 0), plus ``labels`` if present."""
    path = Path(path)
    if not path.exists():
        raise DataError("data file not found", path=path)
    try:
        archive = np.load(path, allow_pickle=False)
        arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:
        raise DataError(f"cannot read as .npz: {exc}", path=path) from None
    labels = arrays.pop("labels", None)
    names = [v.name for v in model.graph.inputs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(f"no array for input(s) {', '.join(missing)} (keys: {', '.join(arrays) or 'none'})", path=path)
    extra = sorted(set(arrays) - set(names))
    if extra:
        raise DataError(f"key(s) {', '.join(extra)} match no model input (inputs: {', '.join(names)})", path=path)
    _check_arrays(arrays, model, path)
    total = len(next(iter(arrays.values())))
    batches = [{k: v[i:i + batch_size] for k, v in arrays.items()} for i in range(0, total, batch_size)]
    return batches, labels


def _check_arrays(arrays: Mapping[str, np.ndarray], model: ir.Model, path: Path) -> None:
    counts = set()
    for value in model.graph.inputs:
        array = arrays[value.name]
        counts.add(len(array))
        expected = value.dtype.numpy() if value.dtype is not None else None
        if expected is not None and array.dtype != expected:
            raise DataError(f"input {value.name!r} is {array.dtype}, the model expects {np.dtype(expected)}", path=path)
        if value.shape is not None:
            if array.ndim != len(value.shape):
                raise DataError(f"input {value.name!r} has rank {array.ndim}, the model expects {len(value.shape)}", path=path)
            for axis, dim in enumerate(value.shape):
                if axis and isinstance(dim, int) and array.shape[axis] != dim:
                    raise DataError(f"input {value.name!r} dim {axis} is {array.shape[axis]}, the model expects {dim}", path=path)
    if len(counts) > 1:
        raise DataError(f"inputs have different sample counts {sorted(counts)}", path=path)

