"""What a pass may treat as a constant: a value with a known tensor that no caller can replace.

An initializer that is also a graph input (IR >= 4) is a default the caller may override at run
time: folding it into a fused weight or dropping ``x * one`` made the optimized model ignore the
override (max abs error 41.6 on a Conv whose weight was fed), and validation, which feeds only the
ordinary inputs, could not see it.
"""

from __future__ import annotations

import onnx_ir as ir


def fixed_tensor(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The value's tensor (an initializer or a Constant node's), unless it is a graph input."""
    if value is None or value.is_graph_input():
        return None
    return ir.convenience.get_const_tensor(value)


def is_fixed(value: ir.Value | None) -> bool:
    return fixed_tensor(value) is not None
