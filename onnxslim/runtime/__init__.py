"""ONNX Runtime sessions for onnx-ir models."""

from onnxslim.runtime.session import make_session, run_model

__all__ = ["make_session", "run_model"]
