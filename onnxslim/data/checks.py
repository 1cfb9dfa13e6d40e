"""Checks that a batch of arrays fits a model's inputs; each problem is one DataError naming the source."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx_ir as ir

from onnxslim.input_shapes import check_input_shapes as validate_shapes
from onnxslim.errors import DataError

LABELS = "labels"


def data_inputs(model: ir.Model) -> list[ir.Value]:
    """The graph inputs data is fed to: not the initializers also listed as inputs (constants in
    IR < 4 models, which ONNX Runtime does not even accept as inputs; defaults in later IRs)."""
    return [v for v in model.graph.inputs if v.const_value is None]


def input_names(model: ir.Model) -> list[str]:
    return [v.name for v in data_inputs(model)]


def check_keys(keys: list[str], model: ir.Model, path: Path | str) -> None:
    """The keys (besides ``labels``) must be exactly the model's input names."""
    names = input_names(model)
    keys = [k for k in keys if k != LABELS]
    missing = [n for n in names if n not in keys]
    if missing:
        raise DataError(f"no array for input(s) {', '.join(missing)} (keys: {', '.join(keys) or 'none'})", path=path)
    extra = sorted(set(keys) - set(names))
    if extra:
        raise DataError(f"key(s) {', '.join(extra)} match no model input (inputs: {', '.join(names)})", path=path)


def check_arrays(arrays: Mapping[str, np.ndarray], model: ir.Model, path: Path | str) -> int:
    """Dtype, rank and static dims of each input; all inputs share one sample count, which is returned."""
    counts = set()
    for value in data_inputs(model):
        array = arrays[value.name]
        _check_one(value, array, path)
        counts.add(len(array))
    if len(counts) > 1:
        raise DataError(f"inputs have different sample counts {sorted(counts)}", path=path)
    if counts == {0}:  # caught here, before a pass calibrates on nothing and fits to nothing
        raise DataError("no samples (every input array has length 0)", path=path)
    return counts.pop() if counts else 0


def _check_one(value: ir.Value, array: np.ndarray, path: Path | str) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        # validation would compare NaN with NaN and blame the first pass; calibration would range it
        bad = int((~np.isfinite(array)).sum())
        raise DataError(f"input {value.name!r} holds {bad} NaN/Inf value(s)", path=path)
    expected = value.dtype.numpy() if value.dtype is not None else None
    # a string input takes numpy text arrays (what .npz holds without pickling); ORT accepts them
    text = expected is not None and np.dtype(expected) == np.object_ and array.dtype.kind in "US"
    if expected is not None and array.dtype != expected and not text:
        raise DataError(f"input {value.name!r} is {array.dtype}, the model expects {np.dtype(expected)}", path=path)
    if value.shape is None:
        return
    if array.ndim != len(value.shape):
        raise DataError(f"input {value.name!r} has rank {array.ndim} (shape {list(array.shape)}), "
                        f"the model expects rank {len(value.shape)}", path=path)
    for axis, dim in enumerate(value.shape):
        if axis and isinstance(dim, int) and array.shape[axis] != dim:
            raise DataError(f"input {value.name!r} dim {axis} is {array.shape[axis]}, the model expects {dim}", path=path)


def check_labels(labels: np.ndarray | None, count: int, path: Path | str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != count or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"'labels' must be 1-D integers, one per sample ({count}); got {labels.dtype} {list(labels.shape)}", path=path)
    return labels


def check_input_shapes(model: ir.Model, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """User-given shapes (--input-shape) must name inputs and agree with their rank and static dims."""
    validate_shapes(model, shapes, error=DataError)
