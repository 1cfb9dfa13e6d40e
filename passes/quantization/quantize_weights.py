"""Weight-only block-wise int4/int8 MatMul: ONNX Runtime's MatMulNBits (com.microsoft)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import graph_stats
from onnxslim.passes.quantization.common import missing_weight_reason, refused, tensor_dtypes, unmatched_selections
from onnxslim.passes.quantization.gemm_as_matmul import gemm_obstacle, gemm_to_matmul
from onnxslim.passes.quantization.ort_tools import import_quietly, in_scratch_folder, replace_contents, to_proto
from onnxslim.passes.quantization.plan import is_constant
from onnxslim.passes.quantization.qdq import NAMES_KEY, unique_name

logger = logging.getLogger(__name__)

BLOCK_SIZES = (16, 32, 64, 128, 256)
"""What ONNX Runtime's MatMulNBits kernels run (MLAS refuses a model with another at load)."""


@dataclasses.dataclass(frozen=True)
class QuantizeWeightsConfig:
    bits: Literal[4, 8] = 4
    block_size: int = 32
    """Weights along K share one scale per block of this many rows (16, 32, 64, 128 or 256: ONNX
    Runtime's kernels take no other); a K that is not a multiple is padded inside the packed weight."""
    symmetric: bool = True
    """Symmetric blocks (no zero points); asymmetric stores a zero point per block."""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_elements: int = 0
    """Weights with fewer elements stay float."""

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {self.bits}")
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block_size must be one of {', '.join(map(str, BLOCK_SIZES))}, got {self.block_size}")
        if self.min_elements < 0:
            raise ValueError("min_elements must be >= 0")


class QuantizeWeights(Pass):
    """Store MatMul weights in int4/int8 blocks, dequantized inside ONNX Runtime's MatMulNBits kernel.

    Before: ``y = MatMul(x, W)`` with a constant float32 ``W [K, N]``. After:
    ``y = com.microsoft.MatMulNBits(x, W_packed uint8 [N, K/block, block*bits/8], scales [N*K/block])``;
    activations stay float32 (no calibration). A Gemm with a constant weight first becomes MatMul
    (+ Add for its bias; ``gemm_as_matmul.py``). Wraps onnxruntime.quantization's
    ``MatMulNBitsQuantizer`` (run in a scratch folder), restricted to the layers this pass
    selects: float32 input, constant 2-D weight, ``include``/``exclude``/``min_elements``, and
    packed blocks smaller than the float weight.
    MatMulNBits is a contrib op: ONNX Runtime runs it (CPU, CUDA), other runtimes do not.
    """

    name = "quantize-weights"
    Config = QuantizeWeightsConfig
    lossy = True

    def call(self, model: ir.Model) -> PassResult:
        if (unchanged := refused(model, self.name)) is not None:
            return unchanged
        graph = model.graph
        graph.meta.pop(NAMES_KEY, None)
        _name_layers(graph)
        dtypes = tensor_dtypes(model)
        layers = [n for n in graph if n.op_type in ("MatMul", "Gemm")]
        rows = [{"node": n.name, "op": n.op_type, "kept_float": self._reason(n, dtypes)} for n in layers]
        chosen = [n for n, row in zip(layers, rows) if row["kept_float"] is None]
        kept = [r for r in rows if r["kept_float"] not in (None, "-")]
        kept = unmatched_selections(model, self.config.include, self.config.exclude) + kept
        if not chosen:
            graph.meta.pop(NAMES_KEY, None)
            return PassResult(model, modified=False, details=kept, stats={"nodes_quantized": 0, "kept_float": sum("kept_float" in r for r in kept)})
        before = graph_stats(model).param_bytes
        chosen = [gemm_to_matmul(graph, n) if n.op_type == "Gemm" else n for n in chosen]
        _separate_names(graph, chosen, self.config.bits)
        graph.meta.pop(NAMES_KEY, None)
        names = {n.name: row for n, row in zip(chosen, (r for r in rows if r["kept_float"] is None))}
        self._quantize(model, list(names))
        remaining = {n.name for n in model.graph if n.op_type == "MatMul"}
        for name, row in names.items():
            row["node"] = name
            if name in remaining:
                row["kept_float"] = "not converted by MatMulNBitsQuantizer"
                kept.append(row)
        done = [{"node": r["node"], "op": r["op"], "bits": self.config.bits, "block_size": self.config.block_size}
                for r in names.values() if r["kept_float"] is None]
        return PassResult(model, modified=bool(done), details=done + kept,
                          stats={"nodes_quantized": len(done), "bytes_saved": before - graph_stats(model).param_bytes,
                                 "kept_float": sum("kept_float" in r for r in kept)})

    def _quantize(self, model: ir.Model, names: list[str]) -> None:
        """Runs ORT's quantizer on the MatMuls named ``names`` (unique in every scope) and nothing else."""
        config = self.config
        quantizer_module = import_quietly("onnxruntime.quantization.matmul_nbits_quantizer")
        others = [n.name for n in model.graph.all_nodes() if n.op_type == "MatMul" and n.name not in names]
        with in_scratch_folder():
            quantizer = quantizer_module.MatMulNBitsQuantizer(
                to_proto(model), bits=config.bits, block_size=config.block_size, is_symmetric=config.symmetric,
                nodes_to_exclude=others, nodes_to_include=names)
            quantizer.process()
        replace_contents(model, quantizer.model.model)

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
        if tensor is None:
            return missing_weight_reason(node)
        if weight.name not in node.graph.initializers:
            return "weight is not an initializer (fed by a Constant node)"
        if len(tensor.shape) != 2 or tensor.dtype != ir.DataType.FLOAT:
            return "weight is not a 2-D float32 tensor"
        if node.op_type == "Gemm" and (obstacle := gemm_obstacle(node)) is not None:
            return obstacle
        if np.prod(tensor.shape) < config.min_elements:
            return f"weight has fewer than {config.min_elements} elements"
        if _packed_bytes(tensor.shape, node, config) >= tensor.nbytes:
            return f"K = {_k(tensor.shape, node)} rows: blocks of {config.block_size} would take more bytes than the float weight"
        return None


def _k(shape, node: ir.Node) -> int:
    transposed = node.op_type == "Gemm" and "transB" in node.attributes and node.attributes["transB"].value
    return int(shape[1] if transposed else shape[0])


def _packed_bytes(shape, node: ir.Node, config: QuantizeWeightsConfig) -> int:
    """Bytes of the packed weight, its scales and (asymmetric) zero points."""
    k = _k(shape, node)
    blocks = -(-k // config.block_size) * (int(np.prod(shape)) // k)
    return blocks * (config.block_size * config.bits // 8 + 4 + (0 if config.symmetric else 1))


def _separate_names(graph: ir.Graph, chosen: list[ir.Node], bits: int) -> None:
    """ORT's quantizer selects nodes by name in every scope, and names its new tensors ``W_Q{bits}``,
    ``W_scales``, ``W_zero_points`` without checking: a chosen node whose name another node (in a
    branch, say) shares, or a weight whose derived names are taken, gets a fresh name first."""
    names: dict[str, int] = {}
    for node in graph.all_nodes():
        names[node.name] = names.get(node.name, 0) + 1
    tensors = set(graph.initializers) | {v.name for v in graph.inputs}
    tensors |= {v.name for node in graph.all_nodes() for v in node.outputs}
    for node in chosen:
        if names[node.name] > 1:
            names[node.name] -= 1
            node.name = unique_name(graph, node.name)
        weight = node.inputs[1]
        while any(f"{weight.name}{suffix}" in tensors for suffix in (f"_Q{bits}", "_scales", "_zero_points")):
            weight.name = unique_name(graph, f"{weight.name}_w")  # the graph's initializer key follows


def _name_layers(graph: ir.Graph) -> None:
    """The quantizer selects nodes by name: unnamed MatMuls and Gemms get one."""
    names = {n.name for n in graph.all_nodes() if n.name}
    for index, node in enumerate(n for n in graph.all_nodes() if n.op_type in ("MatMul", "Gemm") and not n.name):
        name = f"{node.op_type}_{index}"
        while name in names:
            name += "_"
        node.name = name
        names.add(name)
