"""Input data for validation and calibration, behind one reader interface."""

from onnxslim.data.readers import load_samples, random_samples

__all__ = ["load_samples", "random_samples"]
