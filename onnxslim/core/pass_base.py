"""The pass contract, on top of onnx-ir's pass framework."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import onnx_ir as ir

from onnxslim.core.config import build_config


@dataclasses.dataclass
class PassResult(ir.passes.PassResult):
    """onnx-ir's result plus what changed, as numbers the manager can report."""

    stats: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """A pass without settings."""


class Pass(ir.passes.InPlacePass):
    """Base of every onnxslim pass.

    Subclasses set ``name`` (kebab-case, used by the CLI and recipes), ``Config`` (a dataclass
    whose ``__post_init__`` validates values), and implement ``call(model) -> PassResult``.
    ``lossy`` tells the validation harness which tolerances to expect.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = NoConfig
    lossy: ClassVar[bool] = False

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "Pass":
        return cls(build_config(cls.Config, options, where=f"pass {cls.name}"))

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
