"""The harness's result: per provider, per output, plus localization, accuracy, latency and sizes.

``ValidationReport.to_dict()`` is the JSON report, schema ``onnxslim.validate/1`` (docs/validation.md).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from onnxslim.validation.compare import OutputComparison, Tolerances
from onnxslim.validation.latency import LatencyReport
from onnxslim.validation.localize import Localization

SCHEMA = "onnxslim.validate/1"


@dataclasses.dataclass
class ProviderRun:
    provider: str
    status: str
    """'ran' or 'skipped'."""
    reason: str | None = None
    outputs: list[OutputComparison] = dataclasses.field(default_factory=list)
    samples: int = 0
    cpu_nodes: list[str] = dataclasses.field(default_factory=list)
    """Nodes this (non-CPU) provider handed back to the CPU, as 'OpType name'."""
    cross: list[OutputComparison] = dataclasses.field(default_factory=list)
    """Each model on this provider against itself on CPU ('original/NAME', 'optimized/NAME'); informational."""
    localization: Localization | None = None
    seconds: float = 0.0
    failure: str | None = None
    """Why the optimized model did not run on data the original ran on (then nothing was compared)."""

    @property
    def passed(self) -> bool:
        return self.status == "ran" and self.failure is None and all(o.passed for o in self.outputs)


@dataclasses.dataclass
class ValidationReport:
    passed: bool
    outputs: list[OutputComparison]
    """The first provider that ran (CPU unless only others were asked for)."""
    samples: int
    skipped: str | None = None
    """Why nothing could be validated (then ``passed`` is True unless strict)."""
    providers: list[ProviderRun] = dataclasses.field(default_factory=list)
    tolerances: Tolerances | None = None
    lossy: bool = False
    """The defaults were the lossy ones (a lossy pass ran, or ``validate`` found or was told so)."""
    lossy_reason: str | None = None
    """Why they were (None when not lossy)."""
    data: str = ""
    accuracy: dict[str, Any] | None = None
    latency: LatencyReport | None = None
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    contract: str | None = None
    """How the optimized model's inputs/outputs differ from the original's (then nothing ran)."""

    def __bool__(self) -> bool:
        return self.passed

    @property
    def localization(self) -> Localization | None:
        return next((p.localization for p in self.providers if p.localization is not None), None)

    def failures(self) -> list[str]:
        """One line per failed check (skipped providers are listed with their reason in ``providers``)."""
        return ([self.contract] if self.contract else []) + [f"{p.provider}: {p.failure}" for p in self.providers if p.failure] + \
            [f"{p.provider}: {o.name}: {f}" for p in self.providers for o in p.outputs for f in o.failures]

    def reasons(self) -> list[str]:
        """Why it did not pass, one line each: the failed checks, else the providers that could not
        run (a failure under strict: it read "the outputs differ" while every output agreed)."""
        skipped = [f"{p.provider} could not run ({p.reason}), which fails under strict" for p in self.providers
                   if p.status == "skipped"]
        return self.failures() or skipped or ([self.skipped] if self.skipped else []) or \
            ["the outputs differ from the original's"]

    @property
    def tolerances_decided(self) -> bool:
        """It failed on metrics alone (no run failure, no shape change), which other tolerances
        could judge differently."""
        failures = [f for p in self.providers for o in p.outputs for f in o.failures]
        return (not self.passed and not self.skipped and bool(failures) and not any(p.failure for p in self.providers)
                and not any(f.startswith("shape ") for f in failures))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **_plain(dataclasses.asdict(self))}


def _plain(value: Any) -> Any:
    """JSON-safe: infinities and NaN become the strings 'inf', '-inf', 'nan'."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
