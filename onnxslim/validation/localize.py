"""Where outputs start to diverge: intermediate tensors along the graph, and the pass that broke them."""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.validation.compare import Tolerances, compare_arrays

TOP_OFFENDERS = 5


@dataclasses.dataclass
class TensorError:
    name: str
    op_type: str
    node: str
    """Producing node in the optimized graph."""
    index: int
    """Position of the producer in the original graph (graph order)."""
    rel_l2: float
    max_abs: float
    diverged: bool


@dataclasses.dataclass
class Localization:
    compared: int
    first: TensorError | None
    """Where divergence starts: the first diverging tensor in graph order."""
    offenders: list[TensorError]
    """The first diverging tensor and the largest errors, in graph order."""
    curve: list[TensorError]
    """Every compared tensor in graph order: the error along the graph."""


def capturable(original: ir.Model, optimized: ir.Model) -> list[str]:
    """Node outputs of the main graph present in both models with the same dtype and (known) shape, in graph order."""
    produced = {v.name: v for node in optimized.graph for v in node.outputs if v.name}
    skip = {v.name for v in original.graph.outputs}
    names = []
    for node in original.graph:
        for value in node.outputs:
            other = produced.get(value.name)
            if other is None or value.name in skip or not _same_type(value, other):
                continue
            names.append(value.name)
    return names


def _same_type(a: ir.Value, b: ir.Value) -> bool:
    if a.dtype is not None and b.dtype is not None and a.dtype != b.dtype:
        return False
    if a.shape is not None and b.shape is not None:
        return len(a.shape) == len(b.shape) and all(
            not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a.shape, b.shape))
    return True


def localize(original: ir.Model, optimized: ir.Model, ref: dict[str, np.ndarray], got: dict[str, np.ndarray],
             tol: Tolerances) -> Localization:
    """Compares captured tensors (same name, same runtime shape) in the original's graph order."""
    order = {v.name: i for i, node in enumerate(original.graph) for v in node.outputs}
    producers = {v.name: node for node in optimized.graph for v in node.outputs}
    curve = []
    for name in sorted(set(ref) & set(got), key=lambda n: order.get(n, len(order))):
        if ref[name].shape != got[name].shape:
            continue
        result = compare_arrays(name, ref[name], got[name], tol, classify=False)
        node = producers.get(name)
        curve.append(TensorError(name, node.op_type if node else "?", (node.name or "") if node else "?",
                                 order.get(name, -1), result.rel_l2, result.max_abs, not result.passed))
    diverged = [t for t in curve if t.diverged]
    first = diverged[0] if diverged else None
    worst = sorted(diverged[1:], key=lambda t: -t.rel_l2)[:TOP_OFFENDERS - 1]
    offenders = sorted(([first] if first else []) + worst, key=lambda t: t.index)
    return Localization(len(curve), first, offenders, curve)


@dataclasses.dataclass
class BisectResult:
    pass_name: str | None
    """The first pass whose output diverges from the original; None when the whole pipeline agrees."""
    index: int | None
    checked: list[int]
    """Pipeline prefix lengths that were validated."""


def bisect_passes(original: ir.Model, passes: Sequence, check: Callable[[ir.Model, ir.Model], bool]) -> BisectResult:
    """Binary search over prefixes of ``passes`` for the first one after which ``check(original, model)`` fails.

    ``check`` is usually ``lambda a, b: validate_models(a, b, options).passed``. Prefixes run in
    onnxslim.core.manager.PassManager, so rolled-back passes count as not applied, as in a real run.
    """
    from onnxslim.core.manager import PassManager

    checked: list[int] = []

    def good(length: int) -> bool:
        checked.append(length)
        model, _ = PassManager(list(passes[:length])).run(original)
        return check(original, model)

    if not passes or good(len(passes)):
        return BisectResult(None, None, checked)
    low, high = 0, len(passes)  # prefix `low` agrees, prefix `high` diverges
    while high - low > 1:
        middle = (low + high) // 2
        if good(middle):
            low = middle
        else:
            high = middle
    return BisectResult(passes[high - 1].name, high - 1, checked)
