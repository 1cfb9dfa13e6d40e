"""Weight-only block-wise int4/int8 MatMul: ONNX Runtime's MatMulNBits (com.microsoft)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import graph_stats
from onnxslim.passes.quantization.common import refused, tensor_dtypes
from onnxslim.passes.quantization.ort_tools import import_quietly, in_scratch_folder, replace_contents, to_proto
from onnxslim.passes.quantization.plan import is_constant

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantizeWeightsConfig:
    bits: Literal[4, 8] = 4
    block_size: int = 32
    """Weights along K share one scale per block of this many rows (a power of two >= 16);
    a K that is not a multiple is padded inside the packed weight."""
    symmetric: bool = True
    """Symmetric blocks (no zero points); asymmetric stores a zero point per block."""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_elements: int = 0
    """Weights with fewer elements stay float."""

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {self.bits}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two >= 16, got {self.block_size}")
        if self.min_elements < 0:
            raise ValueError("min_elements must be >= 0")


class QuantizeWeights(Pass):
    """Store MatMul weights in int4/int8 blocks, dequantized inside ONNX Runtime's MatMulNBits kernel.

    Before: ``y = MatMul(x, W)`` with a constant float32 ``W [K, N]``. After:
    ``y = com.microsoft.MatMulNBits(x, W_packed uint8 [N, K/block, block*bits/8], scales [N*K/block])``;
    activations stay float32 (no calibration). Wraps onnxruntime.quantization's
    ``MatMulNBitsQuantizer`` (run in a scratch folder), restricted to the MatMuls this pass
    selects: float32 input, constant 2-D weight, ``include``/``exclude``/``min_elements``.
    MatMulNBits is a contrib op: ONNX Runtime runs it (CPU, CUDA), other runtimes do not.
    """

    name = "quantize-weights"
    Config = QuantizeWeightsConfig
    lossy = True

    def call(self, model: ir.Model) -> PassResult:
        if (unchanged := refused(model, self.name)) is not None:
            return unchanged
        _name_matmuls(model.graph)
        dtypes = tensor_dtypes(model)
        rows = [{"node": n.name, "kept_float": self._reason(n, dtypes)} for n in model.graph if n.op_type == "MatMul"]
        chosen = {row["node"] for row in rows if row["kept_float"] is None}
        if not chosen:
            return PassResult(model, modified=False, details=[r for r in rows if r["kept_float"] != "-"])
        before = graph_stats(model).param_bytes
        excluded = [n.name for n in model.graph.all_nodes() if n.op_type == "MatMul" and n.name not in chosen]
        config = self.config
        quantizer_module = import_quietly("onnxruntime.quantization.matmul_nbits_quantizer")
        with in_scratch_folder():
            quantizer = quantizer_module.MatMulNBitsQuantizer(
                to_proto(model), bits=config.bits, block_size=config.block_size, is_symmetric=config.symmetric,
                nodes_to_exclude=excluded)
            quantizer.process()
        replace_contents(model, quantizer.model.model)
        remaining = {n.name for n in model.graph if n.op_type == "MatMul"}
        for row in rows:
            if row["kept_float"] is None and row["node"] in remaining:
                row["kept_float"] = "not converted by MatMulNBitsQuantizer"
        done = [{"node": r["node"], "bits": config.bits, "block_size": config.block_size} for r in rows if r["kept_float"] is None]
        kept = [r for r in rows if r["kept_float"] not in (None, "-")]
        return PassResult(model, modified=bool(done), details=done + kept,
                          stats={"nodes_quantized": len(done), "bytes_saved": before - graph_stats(model).param_bytes,
                                 "kept_float": len(kept)})

    def _reason(self, node: ir.Node, dtypes) -> str | None:
        config = self.config
        if node.op_type in config.exclude or node.name in config.exclude:
            return "excluded by --quantize-exclude"
        if config.include and node.op_type not in config.include and node.name not in config.include:
            return "not in --quantize-include"
        if dtypes.get(node.inputs[0].name) != ir.DataType.FLOAT:
            return "input is not float32"
        weight = node.inputs[1]
        tensor = ir.convenience.get_const_tensor(weight) if is_constant(weight) else None
        if tensor is None and _computed_from_constants(weight):
            return "weight is computed from constants (Transpose(W)...): folding, on unless --no-simplify, makes it one"
        if tensor is None or weight.name not in node.graph.initializers or weight.is_graph_input():
            return "-" if tensor is None else "weight is not an initializer (fed by a Constant node)"
        if len(tensor.shape) != 2 or tensor.dtype != ir.DataType.FLOAT:
            return "weight is not a 2-D float32 tensor"
        if np.prod(tensor.shape) < config.min_elements:
            return f"weight has fewer than {config.min_elements} elements"
        return None


def _computed_from_constants(value: ir.Value) -> bool:
    """Whether ``value`` is computed by ops whose inputs are all constants (an unfolded weight)."""
    producer = value.producer()
    if producer is None or not producer.inputs:
        return False
    return all(v is not None and (is_constant(v) or _computed_from_constants(v)) for v in producer.inputs)


def _name_matmuls(graph: ir.Graph) -> None:
    """The quantizer selects nodes by name: unnamed MatMuls get one."""
    names = {n.name for n in graph.all_nodes() if n.name}
    for index, node in enumerate(n for n in graph.all_nodes() if n.op_type == "MatMul" and not n.name):
        name = f"MatMul_{index}"
        while name in names:
            name += "_"
        node.name = name
        names.add(name)
