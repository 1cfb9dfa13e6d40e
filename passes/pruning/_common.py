"""Settings and report helpers shared by the pruning passes."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Literal

import numpy as np

from onnxslim.core.pass_base import Pass, PassContext
from onnxslim.passes.pruning._layers import parse_overrides


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    amount: float = 0.5
    """Fraction of each layer's weights (or channels) to remove, 0 <= amount < 1."""
    skip: tuple[str, ...] = ()
    """Node names (or regular expressions) of layers never pruned."""
    skip_first_last: bool = True
    """Leave the first and last prunable layers alone (the most sensitive ones)."""
    overrides: tuple[str, ...] = ()
    """Per-layer amounts as ``NAME=AMOUNT`` (NAME may be a regular expression)."""
    importance: Literal["auto", "magnitude", "activation"] = "auto"
    """``activation`` weighs by calibration activations; ``auto`` does so when calibration data is given."""
    reconstruct: bool = False
    """Refit the pruned layers by least squares to the unpruned model's outputs on calibration data."""
    damping: float = 0.01
    """Ridge term of the refit, relative to the mean diagonal of X^T X."""
    max_rows: int = 4096
    """Rows (samples x output positions) per calibration batch used by the refit."""

    def __post_init__(self):
        if not 0.0 <= self.amount < 1.0:
            raise ValueError(f"amount must be in [0, 1), got {self.amount}")
        if self.damping < 0 or self.max_rows < 1:
            raise ValueError("damping must be >= 0 and max_rows >= 1")
        parse_overrides(self.overrides)

    @property
    def amounts(self) -> dict[str, float]:
        return parse_overrides(self.overrides)


class PrunePass(Pass):
    """Shared by the pruning passes: lossy, and calibration data needed only for some settings."""

    lossy = True
    float_weights = True

    def missing_inputs(self) -> str | None:
        if self.context.calibration is not None:
            return None
        if self.config.reconstruct:
            return "reconstruct needs calibration data (--calibration-data)"
        if self.config.importance == "activation":
            return "importance 'activation' needs calibration data (--calibration-data)"
        return None


def uses_activations(config: PruneConfig, context: PassContext) -> bool:
    return config.importance == "activation" or (config.importance == "auto" and context.calibration is not None)


def deflate_size(array: np.ndarray) -> int:
    """Bytes of ``array`` after zlib (deflate, level 6): what zip storage of the weight costs."""
    return len(zlib.compress(np.ascontiguousarray(array).tobytes(), 6))


def sparsity_row(name: str, op: str, before: np.ndarray, after: np.ndarray, target: float) -> dict:
    zeros = int(np.count_nonzero(after == 0))
    return {
        "layer": name, "op": op, "target": round(target, 4), "params": int(after.size), "zeros": zeros,
        "sparsity": round(zeros / max(after.size, 1), 4),
        "deflate_bytes_before": deflate_size(before), "deflate_bytes_after": deflate_size(after),
    }


def sparsity_stats(rows: list[dict]) -> dict[str, float]:
    pruned = [r for r in rows if "sparsity" in r]
    params = sum(r["params"] for r in pruned)
    zeros = sum(r["zeros"] for r in pruned)  # counted, not params x the rounded sparsity (27596 for 27595)
    before = sum(r["deflate_bytes_before"] for r in pruned)
    after = sum(r["deflate_bytes_after"] for r in pruned)
    return {
        "layers_pruned": len(pruned), "layers_skipped": len(rows) - len(pruned),
        "params_pruned": zeros, "sparsity": round(zeros / params, 4) if params else 0.0,
        "deflate_bytes_before": before, "deflate_bytes_after": after,
        "deflate_ratio": round(after / before, 4) if before else 1.0,
    }
