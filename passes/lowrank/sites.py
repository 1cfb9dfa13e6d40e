"""Where a constant weight can be split: MatMul (either side), Gemm, 1x1 Conv.

Every weight is brought to one canonical matrix ``W`` (K x N) with K the dimension contracted
with the activation, so that the factorization and the activation statistics do not depend
on the consuming op. Uses of one initializer are grouped; a group is split once.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

FACTOR_SUFFIXES = (".lowrank_u", ".lowrank_v")
_FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE}


@dataclasses.dataclass
class Use:
    node: ir.Node
    kind: str
    """``matmul_right`` (X @ W), ``matmul_left`` (W @ X), ``gemm``, ``conv`` (1x1)."""

    @property
    def activation(self) -> ir.Value:
        """The input the weight multiplies, read from the node each time: never a cached Value, which
        would go stale once the layer producing it is split (its users are rewired to the new output)."""
        return self.node.inputs[1 if self.kind == "matmul_left" else 0]

    @property
    def layout(self) -> str:
        """``N``: the canonical W is the stored tensor; ``T``: its transpose; ``conv``: (N, K, 1..) reshaped."""
        if self.kind == "conv":
            return "conv"
        if self.kind == "matmul_left" or (self.kind == "gemm" and self.node.attributes.get_int("transB", 0)):
            return "T"
        return "N"


@dataclasses.dataclass
class Group:
    weight: ir.Value
    uses: list[Use]
    array: np.ndarray
    """The stored weight tensor as numpy."""

    @property
    def layout(self) -> str:
        return self.uses[0].layout

    @property
    def matrix(self) -> np.ndarray:
        """Canonical W, K x N."""
        if self.layout == "conv":
            return self.array.reshape(self.array.shape[0], -1).T
        return self.array.T if self.layout == "T" else self.array

    def to_stored(self, matrix: np.ndarray) -> np.ndarray:
        """A canonical K x N matrix in the stored tensor's layout and dtype."""
        stored = matrix.T.reshape(self.array.shape) if self.layout in ("T", "conv") else matrix
        return np.ascontiguousarray(stored, dtype=self.array.dtype)

    @property
    def shape(self) -> tuple[int, int]:
        k, n = self.matrix.shape
        return int(k), int(n)

    @property
    def params(self) -> int:
        return int(self.array.size)

    @property
    def name(self) -> str:
        return self.weight.name or "?"


def find_groups(graph: ir.Graph, *, ops: tuple[str, ...], opset: int, min_params: int) -> tuple[list[Group], list[dict]]:
    """Splittable weight groups, and a row (weight, reason) for each constant weight that is not."""
    uses: dict[int, list[Use]] = {}
    weights: dict[int, ir.Value] = {}
    skipped: list[dict] = []
    for node in graph:
        if node.op_type not in ops or node.domain not in ("", "ai.onnx"):
            continue
        use, reason, weight = _use(node, opset)
        if weight is None:
            continue
        if use is None:
            skipped.append({"weight": weight.name, "node": node.name, "reason": reason})
            continue
        uses.setdefault(id(weight), []).append(use)
        weights[id(weight)] = weight
    groups = []
    for key, group_uses in uses.items():
        weight = weights[key]
        reason = _group_problem(weight, group_uses, min_params)
        if reason:
            skipped.append({"weight": weight.name, "node": group_uses[0].node.name, "reason": reason})
        else:
            groups.append(Group(weight, group_uses, ir.convenience.get_const_tensor(weight).numpy()))
    return groups, skipped


def _group_problem(weight: ir.Value, uses: list[Use], min_params: int) -> str | None:
    tensor = ir.convenience.get_const_tensor(weight)
    if weight.name and weight.name.endswith(FACTOR_SUFFIXES):
        return "already a low-rank factor"
    if weight.is_graph_output():
        return "weight is a graph output"
    if len(weight.uses()) != len(uses):
        return "weight also read by nodes that are not split"
    if len({use.layout for use in uses}) > 1:
        return "weight used in mixed layouts"
    if tensor.dtype not in _FLOAT_TYPES:
        return f"weight dtype {tensor.dtype} is not floating point"
    if tensor.size < min_params:
        return f"{tensor.size} parameters < min_params {min_params}"
    return None


def _const(value: ir.Value | None) -> bool:
    return value is not None and not value.is_graph_input() and ir.convenience.get_const_tensor(value) is not None


def _use(node: ir.Node, opset: int) -> tuple[Use | None, str, ir.Value | None]:
    """(use, reason it is not one, the constant weight if any) for one node."""
    inputs = list(node.inputs)
    if node.op_type == "MatMul":
        a, b = inputs[0], inputs[1]
        if _const(b) and not _const(a):
            return _checked(Use(node, "matmul_right"), b)
        if _const(a) and not _const(b):
            return _checked(Use(node, "matmul_left"), a)
        return None, "", None
    if node.op_type == "Gemm":
        a, b = inputs[0], inputs[1]
        if not _const(b):
            return None, "Gemm weight is not the B input", a if _const(a) else None
        if opset < 11:
            return None, "Gemm without C needs opset 11", b
        return _checked(Use(node, "gemm"), b)
    if node.op_type == "Conv" and len(inputs) > 1 and _const(inputs[1]):
        return _conv_use(node, inputs)
    return None, "", None


def _checked(use: Use, weight: ir.Value) -> tuple[Use | None, str, ir.Value]:
    shape = ir.convenience.get_const_tensor(weight).shape
    if len(shape) != 2:
        return None, f"{len(shape)}-D weight (only 2-D weights are split)", weight
    return use, "", weight


def _conv_use(node: ir.Node, inputs: list) -> tuple[Use | None, str, ir.Value]:
    weight = inputs[1]
    shape = tuple(ir.convenience.get_const_tensor(weight).shape)
    if len(shape) < 3 or any(d != 1 for d in shape[2:]):
        return None, "not a 1x1 convolution", weight
    if node.attributes.get_int("group", 1) != 1:
        return None, "grouped convolution", weight
    return Use(node, "conv"), "", weight


def activation_rows(use: Use, value: np.ndarray) -> np.ndarray:
    """The activation of ``use`` as rows of K values (the vectors multiplied by the canonical W)."""
    value = np.asarray(value)
    if use.kind == "matmul_left":
        value = value.reshape(-1, 1) if value.ndim == 1 else np.swapaxes(value, -1, -2)
    elif use.kind == "gemm" and use.node.attributes.get_int("transA", 0):
        value = value.T
    elif use.kind == "conv":
        value = np.moveaxis(value, 1, -1)
    return value.reshape(-1, value.shape[-1])
