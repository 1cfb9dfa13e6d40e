"""ONNX Runtime sessions for onnx-ir models, per execution provider, with capture of intermediate tensors."""

from onnxslim.runtime.providers import PROVIDERS, ProviderUnavailable, parse_providers, unavailable_reason
from onnxslim.runtime.runner import RunResult, run_batches
from onnxslim.runtime.session import make_session, model_bytes, run_model

__all__ = ["PROVIDERS", "ProviderUnavailable", "RunResult", "make_session", "model_bytes", "parse_providers", "run_batches",
           "run_model", "unavailable_reason"]
