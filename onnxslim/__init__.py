"""onnxslim: make exported ONNX models smaller and faster without breaking them."""

__version__ = "0.1.0"

from onnxslim.api import OptimizeResult, inspect, optimize, run, validate
from onnxslim.core.manager import PassManager, PipelineReport
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.errors import OnnxSlimError
from onnxslim.io import load, save

__all__ = [
    "OnnxSlimError",
    "OptimizeResult",
    "Pass",
    "PassManager",
    "PassResult",
    "PipelineReport",
    "inspect",
    "load",
    "optimize",
    "run",
    "save",
    "validate",
]
