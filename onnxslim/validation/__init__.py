"""Validation harness: the optimized model against the original on ONNX Runtime."""

from onnxslim.validation.harness import ValidationOptions, ValidationReport, validate_models

__all__ = ["ValidationOptions", "ValidationReport", "validate_models"]
