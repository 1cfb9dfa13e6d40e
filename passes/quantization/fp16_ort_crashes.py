"""float16 patterns that crash ONNX Runtime's CPU provider, kept float32 by the float16 conversion.

ONNX Runtime 1.32 dies with SIGSEGV (no error) creating a CPU session, at its default graph
optimization level, on a float16 3-D ``Transpose(perm=[1, 0, 2])`` whose output a ``MatMul`` with a
constant weight reads: torch's ``nn.MultiheadAttention`` (``batch_first`` or not) and GRU/LSTM models export
exactly that. The same MatMul reading the Transpose in float32 and the Transpose with other
permutations load; keeping the MatMul float32 does not help (ORT moves the Cast). The manager's
check in a child process (``Pass.isolated_check``) still rolls the conversion back on any crash
this list misses.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxslim.passes.quantization.plan import is_constant

REASON = ("ONNX Runtime 1.32's CPU provider crashes (SIGSEGV) on a float16 Transpose(perm=[1, 0, 2]) "
          "feeding a MatMul with a constant weight")


def crashing_nodes(model: ir.Model) -> dict[ir.Node, str]:
    """Main-graph nodes to keep float32, with the reason."""
    found = {}
    for node in model.graph:
        if node.op_type != "Transpose" or _perm(node) != [1, 0, 2]:
            continue
        if any(reader.op_type == "MatMul" and index == 0 and len(reader.inputs) > 1 and is_constant(reader.inputs[1])
               for reader, index in node.outputs[0].uses()):
            found[node] = REASON
    return found


def _perm(node: ir.Node) -> list[int] | None:
    attribute = node.attributes.get("perm")
    return list(attribute.value) if attribute is not None else None
