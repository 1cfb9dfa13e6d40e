"""User-fixed input shapes (``--input-shape NAME:1,3,224,224``)."""

from __future__ import annotations

import numbers
from typing import Any, Mapping

import numpy as np
import onnx_ir as ir

from onnxslim.errors import ConfigError


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``"images:1,3,640,640"`` -> ``("images", (1, 3, 640, 640))``."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise ConfigError(f"--input-shape {text!r}: expected NAME:D1,D2,... (e.g. input:1,3,224,224)")
    return name, checked_dims(dims, where=f"--input-shape {text!r}")


def checked_dims(dims: Any, *, where: str) -> tuple[int, ...]:
    """A user-given shape as positive integer dims, whatever its form: the CLI's text
    (``"1,3,224,224"``), a recipe's list or text, the API's sequence. One check for all three: a
    dim the CLI refuses must not reach the model's input contract through another door (a -5
    written there makes a model ONNX Runtime cannot load). ConfigError naming ``where`` otherwise."""
    text = isinstance(dims, str)
    try:
        items = list(dims.split(",") if text else dims)
    except TypeError:
        items = None
    if items is None or not all(_is_int(item, text=text) for item in items):
        raise ConfigError(f"expected a list of integers such as [1, 3, 224, 224], got {dims!r}", where=where)
    shape = tuple(int(item) for item in items)
    if any(d <= 0 for d in shape):
        raise ConfigError(f"expected positive dims such as [1, 3, 224, 224], got {list(shape)}", where=where)
    return shape


def checked_input_shapes(shapes: Any, *, where: str) -> dict[str, tuple[int, ...]]:
    """``{input name: dims}`` given through a recipe or the API, each checked by ``checked_dims``."""
    if not isinstance(shapes, Mapping):
        raise ConfigError(f"expected a table such as {{ input = [1, 3, 224, 224] }}, got {shapes!r}", where=where)
    return {name: checked_dims(dims, where=f"{where}.{name}") for name, dims in shapes.items()}


def _is_int(item: Any, *, text: bool) -> bool:
    if text:
        try:
            int(item.strip())
        except ValueError:
            return False
        return True
    return isinstance(item, numbers.Integral) and not isinstance(item, bool)


def parse_input_shapes(texts: list[str] | None) -> dict[str, tuple[int, ...]]:
    return dict(parse_input_shape(t) for t in texts or [])


def check_input_shapes(model: ir.Model, shapes: Mapping[str, tuple[int, ...]], *, error: type = ConfigError,
                       where: str = "--input-shape", path: object | None = None) -> None:
    """User-given shapes must name inputs and agree with their rank and static dims. ``where`` and
    ``path``: where the shapes were given (a recipe's ``[options] input_shapes`` and its file, so
    that the error does not name a flag the user never passed)."""
    inputs = {v.name: v for v in model.graph.inputs}
    for name, dims in shapes.items():
        value = inputs.get(name)
        if value is None:
            raise error(f"model has no input {name!r} (inputs: {', '.join(inputs)})", path=path, where=where)
        if value.shape is None:
            continue
        if len(value.shape) != len(dims):
            raise error(f"input {name!r} has rank {len(value.shape)}, got {len(dims)} dims", path=path, where=where)
        for axis, (old, new) in enumerate(zip(value.shape, dims)):
            if isinstance(old, int) and old >= 0 and old != new:  # Paddle writes -1 for a dynamic dim
                raise error(f"input {name!r} dim {axis} is fixed at {old}, got {new}", path=path, where=where)


def fix_input_shapes(model: ir.Model, shapes: Mapping[str, tuple[int, ...]], *, where: str = "--input-shape",
                     path: object | None = None) -> None:
    """Pins the named inputs' dims (after checking them, errors naming ``where`` in ``path``), and
    the graph outputs' dims that the pins fix: the declared outputs stay the shapes the graph
    computes (YOLOv8n pinned to 1x3x320x320 declared ``[batch, 22, <expression of height and
    width>]``, symbols no input carried any more)."""
    check_input_shapes(model, shapes, where=where, path=path)
    inputs = {v.name: v for v in model.graph.inputs}
    pinned: dict[str, int] = {}
    for name, dims in shapes.items():
        for old, new in zip(inputs[name].shape or (), dims):
            if isinstance(old, ir.SymbolicDim) and old.value:
                pinned[old.value] = int(new)
        inputs[name].shape = ir.Shape(dims)
    # a symbol an unpinned input still carries stays a symbol: that input may take other sizes
    for value in model.graph.inputs:
        for dim in value.shape or ():
            if isinstance(dim, ir.SymbolicDim):
                pinned.pop(dim.value, None)
    _pin_outputs(model, pinned)


def _pin_outputs(model: ir.Model, pinned: Mapping[str, int]) -> None:
    """Each symbolic output dim becomes the pinned value of its symbol, or what onnx's shape
    inference computes from the pinned inputs when that is a number; other dims stay as declared."""
    inferred = _inferred_output_dims(model)
    for value in model.graph.outputs:
        if value.shape is None:
            continue
        computed = inferred.get(value.name) or ()
        dims = []
        for axis, dim in enumerate(value.shape):
            if isinstance(dim, ir.SymbolicDim):
                known = pinned.get(dim.value) if dim.value else None
                if known is None and axis < len(computed) and isinstance(computed[axis], int):
                    known = computed[axis]
                dim = dim if known is None else known
            dims.append(dim)
        value.shape = ir.Shape(dims)


def _inferred_output_dims(model: ir.Model) -> dict[str, tuple]:
    """Output dims (int, or None when unknown) by onnx shape inference with the outputs' declared
    shapes cleared (inference keeps a declared symbol); {} when inference fails."""
    import onnx

    from onnxslim.proto import graph_proto

    try:
        proto = graph_proto(model)
        for output in proto.graph.output:
            output.type.tensor_type.ClearField("shape")
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # best effort: without it, only the pinned symbols themselves are replaced
        return {}
    return {o.name: tuple(d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim)
            for o in proto.graph.output if o.type.tensor_type.HasField("shape")}


def resolve_shape(value: ir.Value, shapes: Mapping[str, tuple[int, ...]], *, default_batch: int | None = None) -> tuple[int, ...]:
    """Concrete dims for an input: user-given, static, or (leading dim only) ``default_batch``."""
    if value.name in shapes:
        return tuple(shapes[value.name])
    if value.shape is None:
        raise ConfigError(f"input {value.name!r} has no declared shape; give --input-shape {value.name}:D1,D2,...")
    dims = []
    for axis, dim in enumerate(value.shape):
        if isinstance(dim, int) and dim >= 0:  # Paddle writes -1 for a dynamic dim
            dims.append(dim)
        elif axis == 0 and default_batch is not None:
            dims.append(default_batch)
        else:
            label = getattr(dim, "value", None) or "?"
            raise ConfigError(
                f"input {value.name!r} dim {axis} ({label}) is dynamic; give --input-shape {value.name}:D1,D2,..."
            )
    return tuple(dims)


def batch_axis_is_dynamic(model: ir.Model) -> bool:
    """Whether every input's first axis is the same symbolic dimension, and no other axis carries it:
    a batch can then be cut along it. A graph's nodes ``x[N, F]`` with its adjacency ``adj[N, N]``
    share a first axis that is no batch axis: cut, the model refused them."""
    shapes = [v.shape for v in model.graph.inputs]
    firsts = [s[0] if s is not None and len(s) else 0 for s in shapes]
    if not (firsts and not any(is_fixed(d) for d in firsts) and len({_symbol(d) for d in firsts}) == 1):
        return False
    symbol = _symbol(firsts[0])
    return symbol is None or not any(isinstance(d, ir.SymbolicDim) and d.value == symbol
                                     for s in shapes for d in list(s)[1:])


def is_fixed(dim) -> bool:
    """A static dim; Paddle writes -1 (any negative) for a dynamic one, onnx-ir a SymbolicDim."""
    return isinstance(dim, int) and dim >= 0


def _symbol(dim) -> str | None:
    return dim.value if isinstance(dim, ir.SymbolicDim) else None


def batch_length(feeds) -> int | None:
    """The batch length shared by all fed arrays: where a batch can be cut (None when their first
    axes disagree, an input is a scalar, or there is at most one sample)."""
    lengths = {np.shape(v)[0] if np.ndim(v) else None for v in feeds.values()}
    return next(iter(lengths)) if len(lengths) == 1 and None not in lengths and min(lengths) > 1 else None


def split_batch(feeds, at: int, splittable: bool) -> tuple[dict, dict] | None:
    """``feeds`` cut after ``at`` samples, or None when ``at`` is not inside the batch or the batch
    cannot be cut (``splittable``: the model's ``batch_axis_is_dynamic``; every array must share
    the batch length)."""
    size = batch_length(feeds) if splittable else None
    if size is None or not 0 < at < size:
        return None
    return {k: v[:at] for k, v in feeds.items()}, {k: v[at:] for k, v in feeds.items()}
