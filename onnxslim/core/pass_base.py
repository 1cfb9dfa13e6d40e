"""The pass contract, on top of onnx-ir's pass framework."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Iterable, Mapping

import onnx_ir as ir

from onnxslim.core.config import build_config
from onnxslim.errors import ConfigError


@dataclasses.dataclass
class PassResult(ir.passes.PassResult):
    """onnx-ir's result plus what changed, as numbers the manager can report."""

    stats: dict[str, float] = dataclasses.field(default_factory=dict)
    details: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Per-element rows for the report (one per pruned layer, split weight...); JSON-serializable."""


@dataclasses.dataclass(frozen=True)
class PassContext:
    """What data-aware passes get besides the model; passes never open files themselves."""

    calibration: Iterable[Any] | None = None
    """Re-iterable batches (``onnxslim.data.Reader``: each item has ``.inputs``, a name -> array dict)."""
    original: ir.Model | None = None
    """The model before the pipeline ran, for passes that match its activations."""
    calibration_cache: Any = None
    """Statistics from an earlier calibration (``--calibration-cache``), read and filled by passes;
    the API loads it before and saves it after the pipeline."""
    progress: Callable[[str], None] | None = None
    """Where a long pass says what it is doing (e.g. calibration batches); the CLI shows it in its
    progress bar. Passes call it, never print."""


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """A pass without settings."""


class Pass(ir.passes.InPlacePass):
    """Base of every onnxslim pass.

    Subclasses set ``name`` (kebab-case, used by the CLI and recipes), ``Config`` (a dataclass
    whose ``__post_init__`` validates values), and implement ``call(model) -> PassResult``.
    ``lossy`` tells the validation harness which tolerances to expect.

    Passes mutate the graph in place but never the data of an existing tensor: the manager's
    rollback copy shares tensors with the model (replace ``const_value`` instead).
    """

    name: ClassVar[str]
    Config: ClassVar[type] = NoConfig
    lossy: ClassVar[bool] = False
    needs_calibration: ClassVar[bool] = False
    """True when the pass cannot run without ``context.calibration`` (checked when the pipeline is built)."""
    float_weights: ClassVar[bool] = False
    """True when the pass works on float weights (pruning, low rank): on an already quantized model
    the manager records it unchanged with a warning instead of running it to find nothing."""
    isolated_check: ClassVar[bool] = False
    """True when ONNX Runtime has crashed (not raised) optimizing models this pass makes (float16):
    the manager then also checks the result in a child process (``onnxslim.runtime.isolated``)."""

    def __init__(self, config: Any | None = None, *, context: PassContext | None = None):
        self.config = config if config is not None else self.Config()
        self.context = context or PassContext()
        missing = self.missing_inputs()
        if missing:
            raise ConfigError(missing, where=f"pass {self.name}")

    def missing_inputs(self) -> str | None:
        """Why this pass, as configured, cannot run with its context; checked when it is built.
        Override when the need depends on the settings (e.g. only some modes use data)."""
        if self.needs_calibration and self.context.calibration is None:
            return "needs calibration data (--calibration-data)"
        return None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], context: PassContext | None = None) -> "Pass":
        return cls(build_config(cls.Config, options, where=f"pass {cls.name}"), context=context)

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
