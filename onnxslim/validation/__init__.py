"""Validation harness: the optimized model against the original on ONNX Runtime."""

from onnxslim.validation.compare import OutputComparison, Tolerances
from onnxslim.validation.harness import validate_models
from onnxslim.validation.localize import BisectResult, Localization, bisect_passes
from onnxslim.validation.options import ValidationOptions
from onnxslim.validation.result import SCHEMA, ProviderRun, ValidationReport

__all__ = ["SCHEMA", "BisectResult", "Localization", "OutputComparison", "ProviderRun", "Tolerances", "ValidationOptions",
           "ValidationReport", "bisect_passes", "validate_models"]
