"""Runs both models on the same inputs and compares every output."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxslim.data import load_samples, random_samples
from onnxslim.runtime import run_model


@dataclasses.dataclass
class ValidationOptions:
    data: str | None = None
    random_samples: int = 4
    seed: int = 0
    input_shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    atol: float | None = None
    """None: the default for the pipeline (near-exact after lossless passes, looser after lossy ones)."""
    rtol: float | None = None
    lossy: bool = False
    """Set by the pass manager's report: a lossy pass (quantization, pruning, low rank) ran."""

    def tolerances(self) -> tuple[float, float]:
        default = 1e-2 if self.lossy else 1e-4
        return (default if self.atol is None else self.atol, default if self.rtol is None else self.rtol)


@dataclasses.dataclass
class OutputComparison:
    name: str
    max_abs: float
    mean_abs: float
    cosine: float
    nonfinite: int
    passed: bool


@dataclasses.dataclass
class ValidationReport:
    passed: bool
    outputs: list[OutputComparison]
    samples: int
    skipped: str | None = None

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def validate_models(original: ir.Model, optimized: ir.Model, options: ValidationOptions) -> ValidationReport:
    if options.data:
        batches, _ = load_samples(options.data, original)
    else:
        batches = random_samples(original, options.random_samples, seed=options.seed, input_shapes=options.input_shapes)
    expected = run_model(original, batches)
    actual = run_model(optimized, batches)
    comparisons = [_compare(name, expected[name], actual[name], options) for name in expected]
    return ValidationReport(all(c.passed for c in comparisons), comparisons, sum(len(next(iter(b.values()))) for b in batches))


def _compare(name: str, ref: np.ndarray, got: np.ndarray, options: ValidationOptions) -> OutputComparison:
    nonfinite = int((~np.isfinite(got)).sum()) if np.issubdtype(got.dtype, np.floating) else 0
    if ref.shape != got.shape:
        return OutputComparison(name, float("inf"), float("inf"), 0.0, nonfinite, False)
    ref64, got64 = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    diff = np.abs(ref64 - got64)
    denom = np.linalg.norm(ref64) * np.linalg.norm(got64)
    cosine = float(ref64 @ got64 / denom) if denom else float(np.array_equal(ref64, got64))
    atol, rtol = options.tolerances()
    close = bool(np.all(diff <= atol + rtol * np.abs(ref64))) and nonfinite == 0
    return OutputComparison(name, float(diff.max(initial=0.0)), float(diff.mean()) if diff.size else 0.0, cosine, nonfinite, close)
