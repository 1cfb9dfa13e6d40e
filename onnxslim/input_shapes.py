"""User-fixed input shapes (``--input-shape NAME:1,3,224,224``)."""

from __future__ import annotations

from typing import Mapping

import onnx_ir as ir

from onnxslim.errors import ConfigError


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``"images:1,3,640,640"`` -> ``("images", (1, 3, 640, 640))``."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise ConfigError(f"--input-shape {text!r}: expected NAME:D1,D2,... (e.g. input:1,3,224,224)")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise ConfigError(f"--input-shape {text!r}: dims must be integers") from None
    if any(d <= 0 for d in shape):
        raise ConfigError(f"--input-shape {text!r}: dims must be positive")
    return name, shape


def parse_input_shapes(texts: list[str] | None) -> dict[str, tuple[int, ...]]:
    return dict(parse_input_shape(t) for t in texts or [])


def check_input_shapes(model: ir.Model, shapes: Mapping[str, tuple[int, ...]], *, error: type = ConfigError) -> None:
    """User-given shapes must name inputs and agree with their rank and static dims."""
    inputs = {v.name: v for v in model.graph.inputs}
    for name, dims in shapes.items():
        value = inputs.get(name)
        if value is None:
            raise error(f"--input-shape: model has no input {name!r} (inputs: {', '.join(inputs)})")
        if value.shape is None:
            continue
        if len(value.shape) != len(dims):
            raise error(f"--input-shape: input {name!r} has rank {len(value.shape)}, got {len(dims)} dims")
        for axis, (old, new) in enumerate(zip(value.shape, dims)):
            if isinstance(old, int) and old >= 0 and old != new:  # Paddle writes -1 for a dynamic dim
                raise error(f"--input-shape: input {name!r} dim {axis} is fixed at {old}, got {new}")


def fix_input_shapes(model: ir.Model, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Pins the named inputs' dims (after checking them)."""
    check_input_shapes(model, shapes)
    inputs = {v.name: v for v in model.graph.inputs}
    for name, dims in shapes.items():
        inputs[name].shape = ir.Shape(dims)


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
    """Whether every input's first axis is the same symbolic dimension: a batch can then be cut along it."""
    firsts = [v.shape[0] if v.shape is not None and len(v.shape) else 0 for v in model.graph.inputs]
    return bool(firsts) and all(isinstance(d, ir.SymbolicDim) for d in firsts) and len({d.value for d in firsts}) == 1
