"""What a pass may treat as a constant: a value with a known tensor that no caller can replace.

An initializer that is also a graph input (IR >= 4) is a default the caller may override at run
time: folding it into a fused weight or dropping ``x * one`` made the optimized model ignore the
override (max abs error 41.6 on a Conv whose weight was fed), and validation, which feeds only the
ordinary inputs, could not see it.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def fixed_tensor(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The value's tensor (an initializer or a Constant node's), unless it is a graph input."""
    if value is None or value.is_graph_input():
        return None
    return ir.convenience.get_const_tensor(value)


def is_fixed(value: ir.Value | None) -> bool:
    return fixed_tensor(value) is not None


def slice_arguments(node: ir.Node) -> list[np.ndarray] | None:
    """(starts, ends, axes, steps) of a Slice whose arguments are all fixed, as int64 arrays, with
    ONNX's defaults for omitted axes and steps (attributes before opset 10); else None."""
    arrays = []
    for index, name in enumerate(("starts", "ends", "axes", "steps"), start=1):
        if name in node.attributes:
            arrays.append(np.array(node.attributes[name].as_ints(), np.int64))
            continue
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None:
            if index < 3:
                return None
            arrays.append(np.arange(len(arrays[0])) if name == "axes" else np.ones(len(arrays[0])))
            arrays[-1] = arrays[-1].astype(np.int64)
            continue
        tensor = fixed_tensor(value)
        if tensor is None:
            return None
        arrays.append(tensor.numpy().astype(np.int64).ravel())
    return arrays
