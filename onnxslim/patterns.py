"""Graph patterns that both the passes and the validation harness recognize."""

from __future__ import annotations

import onnx_ir as ir


def is_softmax(node: ir.Node) -> bool:
    """A Softmax, or one written out as ``e / ReduceSum(e)`` with ``e = Exp(...)`` (expand-inner-
    softmax's form; exporters that write their own, as magika's jax2tf export does)."""
    if node.op_type == "Softmax":
        return True
    if node.op_type != "Div" or len(node.inputs) != 2 or None in node.inputs:
        return False
    exps, total = (v.producer() for v in node.inputs)
    # the sum may be broadcast back first (magika: Div(e, Expand(ReduceSum(e)))
    while total is not None and total.op_type in _BROADCASTS and total.inputs and total.inputs[0] is not None:
        total = total.inputs[0].producer()
    return (exps is not None and exps.op_type == "Exp" and total is not None and total.op_type == "ReduceSum"
            and total.inputs[0] is node.inputs[0])


_BROADCASTS = ("Expand", "Reshape", "Unsqueeze", "Identity")
