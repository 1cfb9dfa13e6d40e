"""Checks that a batch of arrays fits a model's inputs; each problem is one DataError naming the source."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx_ir as ir

from onnxslim.input_shapes import check_input_shapes as validate_shapes
from onnxslim.input_shapes import is_fixed
from onnxslim.errors import DataError

LABELS = "labels"


def data_inputs(model: ir.Model) -> list[ir.Value]:
    """The graph inputs data is fed to: not the initializers also listed as inputs (constants in
    IR < 4 models, which ONNX Runtime does not even accept as inputs; defaults in later IRs)."""
    return [v for v in model.graph.inputs if v.const_value is None]


def overridable_inputs(model: ir.Model) -> list[ir.Value]:
    """Graph inputs with an initializer as default (IR >= 4): data may feed them, or leave the default."""
    if (model.ir_version or 0) < 4:
        return []
    return [v for v in model.graph.inputs if v.const_value is not None]


def input_names(model: ir.Model) -> list[str]:
    return [v.name for v in data_inputs(model)]


def labels_key(model: ir.Model) -> str | None:
    """The data key that holds labels: ``labels``, unless the model has an input of that name (a
    training graph's), which the key then feeds."""
    return None if LABELS in input_names(model) else LABELS


def check_keys(keys: list[str], model: ir.Model, path: Path | str) -> None:
    """The keys (besides the labels, ``labels_key``) must be exactly the model's input names, plus any of
    the inputs with a default (``overridable_inputs``)."""
    names = input_names(model)
    keys = [k for k in keys if k != labels_key(model)]
    missing = [n for n in names if n not in keys]
    if missing:
        raise DataError(f"no array for input(s) {', '.join(missing)} (keys: {', '.join(keys) or 'none'})", path=path)
    extra = sorted(set(keys) - set(names) - {v.name for v in overridable_inputs(model)})
    if extra:
        raise DataError(f"key(s) {', '.join(extra)} match no model input (inputs: {', '.join(names)})", path=path)


@dataclasses.dataclass(frozen=True)
class InputLayout:
    """How data is cut into batches for a model. ``batched`` inputs carry the samples along axis 0
    (equal counts, cut into batches); the others, scalars and inputs without the batch axis (a
    table t[8, 16] beside x[N, 8]), are passed whole with every batch. ``shapes``: each input's dims
    with ``--input-shape`` pins applied (None: undeclared); ``pinned``: the inputs pinned.
    ``fixed_batch``: the only batch size the model takes (exported at batch 1, or pinned), else None."""

    shapes: dict[str, tuple | None]
    pinned: frozenset[str]
    batched: frozenset[str]
    fixed_batch: int | None


def input_layout(model: ir.Model, pins: Mapping[str, tuple[int, ...]] | None = None) -> InputLayout:
    """The batch axis is axis 0 of the inputs whose first dim is dynamic; when none is, of every
    input if they share their (fixed) first dim, else of none (each file is one evaluation)."""
    pins = pins or {}
    values = data_inputs(model)
    shapes = {v.name: tuple(pins[v.name]) if v.name in pins else None if v.shape is None else tuple(v.shape)
              for v in values}
    ranked = [v for v in values if v.shape is None or len(v.shape)]  # a rank-0 input is never cut
    batched = [v.name for v in ranked if v.shape is None or not is_fixed(v.shape[0])]
    if not batched and len({v.shape[0] for v in ranked}) == 1:
        batched = [v.name for v in ranked]
    fixed = {shapes[n][0] for n in batched if shapes[n] and is_fixed(shapes[n][0])}
    return InputLayout(shapes, frozenset(pins), frozenset(batched), fixed.pop() if len(fixed) == 1 else None)


def check_arrays(arrays: Mapping[str, np.ndarray], model: ir.Model, path: Path | str,
                 pins: Mapping[str, tuple[int, ...]] | None = None, *, values: bool = True) -> int:
    """Dtype, rank and static (or pinned) dims of each input, and (``values``) no NaN/Inf; the inputs
    that carry the batch axis share one sample count, which is returned (1 when none does: the data
    is one evaluation)."""
    layout = input_layout(model, pins)
    for value in data_inputs(model):
        if values:
            check_finite(value.name, arrays[value.name], path)
        _check_one(value, arrays[value.name], layout, path)
    for value in overridable_inputs(model):  # given: replaces the default, with every batch
        if value.name in arrays:
            _check_override(value, arrays[value.name], path)
    counts = {name: len(arrays[name]) for name in sorted(layout.batched)}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise DataError(f"inputs with the batch axis have different sample counts ({listed})", path=path)
    if counts and set(counts.values()) == {0}:  # caught here, before a pass calibrates on nothing and fits to nothing
        raise DataError("no samples (every input array has length 0)", path=path)
    return next(iter(counts.values())) if counts else 1


def check_finite(name: str, array: np.ndarray, path: Path | str, bad: int | None = None) -> None:
    """No NaN/Inf in a float input (``bad``: their count, when counted elsewhere)."""
    if bad is None and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
    if bad:  # validation would compare NaN with NaN and blame the first pass; calibration would range it
        raise DataError(f"input {name!r} holds {bad} NaN/Inf value(s)", path=path)


def _check_override(value: ir.Value, array: np.ndarray, path: Path | str) -> None:
    default = value.const_value
    if array.dtype != default.dtype.numpy():
        raise DataError(f"input {value.name!r} is {array.dtype}, the model expects {np.dtype(default.dtype.numpy())}", path=path)
    if value.shape is not None and all(is_fixed(d) for d in value.shape) and array.shape != tuple(value.shape):
        raise DataError(f"input {value.name!r} has shape {list(array.shape)}, the model expects {list(value.shape)} "
                        "(an input with a default is passed whole with every batch)", path=path)


def _check_one(value: ir.Value, array: np.ndarray, layout: InputLayout, path: Path | str) -> None:
    expected = value.dtype.numpy() if value.dtype is not None else None
    # a string input takes numpy text arrays (what .npz holds without pickling); ORT accepts them
    text = expected is not None and np.dtype(expected) == np.object_ and array.dtype.kind in "US"
    if expected is not None and array.dtype != expected and not text:
        raise DataError(f"input {value.name!r} is {array.dtype}, the model expects {np.dtype(expected)}", path=path)
    shape = layout.shapes[value.name]
    if shape is None:
        if value.name in layout.batched and array.ndim == 0:
            raise DataError(f"input {value.name!r} is a scalar; samples go along axis 0", path=path)
        return
    if array.ndim != len(shape):
        raise DataError(f"input {value.name!r} has rank {array.ndim} (shape {list(array.shape)}), "
                        f"the model expects rank {len(shape)}", path=path)
    whole = value.name not in layout.batched  # axis 0 is a dim like the others, not the sample count
    expects = "--input-shape gives" if value.name in layout.pinned else "the model expects"
    for axis, dim in enumerate(shape):
        if (axis or whole) and is_fixed(dim) and array.shape[axis] != dim:
            raise DataError(f"input {value.name!r} dim {axis} is {array.shape[axis]}, {expects} {dim}", path=path)


def fitted_batch(layout: InputLayout, requested: int, total: int, path: Path | str) -> int:
    """``requested``, or the model's fixed batch size, which must then divide the sample count: the
    model refuses a smaller last batch, and dropping samples silently would change what is measured."""
    size = layout.fixed_batch or requested
    if layout.fixed_batch and layout.batched and total % size:
        raise DataError(f"{total} samples do not fill batches of {size}, the only batch size the model takes "
                        f"(its first dim is fixed or pinned at {size}): give a multiple of {size} samples", path=path)
    return size


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
