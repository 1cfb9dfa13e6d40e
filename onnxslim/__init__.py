"""onnxslim: make exported ONNX models smaller and faster without breaking them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The public names load on first use: `import onnxslim` (and so the console script, before it can
# catch a Ctrl-C) does not pull in onnx, onnxruntime and onnxscript.
_PUBLIC = {
    "OptimizeResult": "onnxslim.api", "inspect": "onnxslim.api", "optimize": "onnxslim.api", "run": "onnxslim.api",
    "validate": "onnxslim.api", "PassManager": "onnxslim.core.manager", "PipelineReport": "onnxslim.core.manager",
    "Pass": "onnxslim.core.pass_base", "PassResult": "onnxslim.core.pass_base", "OnnxSlimError": "onnxslim.errors",
    "load": "onnxslim.io", "save": "onnxslim.io",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:  # a submodule (`onnxslim.api.run`) was an attribute once the package loaded
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":  # the submodule exists; something it imports does not
                raise
            raise AttributeError(f"module 'onnxslim' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


if TYPE_CHECKING:  # for type checkers and IDEs
    from onnxslim.api import OptimizeResult, inspect, optimize, run, validate
    from onnxslim.core.manager import PassManager, PipelineReport
    from onnxslim.core.pass_base import Pass, PassResult
    from onnxslim.errors import OnnxSlimError
    from onnxslim.io import load, save
