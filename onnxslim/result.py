"""What ``onnxslim.run`` returns: the optimized model with its pipeline and validation reports, and
the JSON report of schema ``onnxslim.optimize/1`` (README, "JSON report")."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxslim import io
from onnxslim.core.manager import ROLLED_BACK, PipelineReport
from onnxslim.validation import ValidationReport

OPTIMIZE_SCHEMA = "onnxslim.optimize/1"
"""The JSON report's schema (``OptimizeResult.to_dict``; the CLI's failure report names it too)."""


@dataclasses.dataclass
class OptimizeResult:
    model: ir.Model
    pipeline: PipelineReport
    validation: ValidationReport | None
    output: Path | None = None
    first_divergent_pass: str | None = None
    """When validation failed: the first pass after which the outputs no longer agree."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    failure: str | None = None
    """Why the run did not pass, in one line: under strict a rolled-back pass (the pipeline stopped
    there: the model is the last one that passed its checks), a failed validation or a model slower
    than the original (nothing was written); without strict a failed validation (the model was
    written). None when ``passed``."""
    strict: bool = False
    input: str | None = None
    """The input model: its absolute path, or what it was (``<onnx.ModelProto>``) when not a path."""
    input_given: str | None = None
    """The input path as the caller wrote it (relative to their working folder); None when not a path."""

    @property
    def _latency_measured(self) -> bool:
        return self.validation is not None and self.validation.latency is not None

    @property
    def slower_than_original(self) -> bool:
        """A lossy pipeline (which is meant to buy speed) made the model slower beyond the noise band.
        A lossless one is not judged: its latency change is the machine's noise (cleanup-only runs
        under ``--strict --latency`` failed at random)."""
        latency = self.validation.latency if self.validation is not None else None
        return bool(latency is not None and latency.slower and self.pipeline.lossy_passes)

    @property
    def passed(self) -> bool:
        """Validation agreed, and under strict the model is not slower than the original. A rolled-back
        pass is reported but leaves a correct model (fatal only under strict)."""
        return (self.failure is None and (self.validation is None or self.validation.passed)
                and not (self.strict and self.slower_than_original))

    def to_dict(self) -> dict[str, Any]:
        from onnxslim import __version__  # the package imports this module

        return {
            "schema": OPTIMIZE_SCHEMA,
            "onnxslim_version": __version__,
            "passed": self.passed,
            "input": self.input,
            "input_given": self.input_given,
            # absolute: a report kept as a CI artifact says which file, whatever folder the job ran in
            "output": str(self.output.resolve()) if self.output else None,
            "pipeline": self.pipeline.to_dict(),
            # not `if self.validation`: a failed report is falsy, and the failure is what a pipeline must read
            "validation": self.validation.to_dict() if self.validation is not None else None,
            "first_divergent_pass": self.first_divergent_pass,
            # null when no latency was measured (--no-validate): false would read as "checked, not slower"
            "slower_than_original": self.slower_than_original if self._latency_measured else None,
            "failure": self.failure,
            "warnings": self.warnings,
            "notes": self.notes,
        }


def failure_line(result: OptimizeResult) -> str | None:
    """Why a run that got through its pipeline did not pass, in one line (the CLI's error line, the
    JSON's ``failure``); None when it passed."""
    validation = result.validation
    if validation is not None and not validation.passed:
        problems = validation.reasons()
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        diverge = f"; outputs first diverge after pass {result.first_divergent_pass}" if result.first_divergent_pass else ""
        return f"validation failed: {problems[0]}{more}{diverge}"
    if result.strict and result.slower_than_original:
        latency = validation.latency
        return (f"the optimized model is slower than the original ({latency.ratio:.2f}x median latency, "
                f"noise band {latency.noise:.0%}): a failure under strict")
    return None


def input_names(src: io.ModelSource) -> dict[str, str | None]:
    """The report's ``input`` (absolute when a path) and ``input_given`` (as written)."""
    if isinstance(src, (str, os.PathLike)):
        return {"input": str(Path(src).resolve()), "input_given": os.fspath(src)}
    return {"input": f"<{type(src).__module__.split('.')[0]}.{type(src).__name__}>", "input_given": None}


def pass_warnings(pipeline: PipelineReport) -> list[str]:
    """Rolled-back passes, the ``warning`` a pass put in a details row (a request it could honour
    only in part, such as conflicting pruning overrides), and an opset the pass converted (the model's
    operators changed version: a runtime pinned to the old opset may not load it): the CLI prints
    these, the JSON lists them."""
    rows = [(r.name, row) for r in pipeline.records for row in r.details if isinstance(row, dict)]
    return [f"pass {r.name} rolled back: {r.reason}" for r in pipeline.records if r.status == ROLLED_BACK] + \
        [f"pass {name}: {row['warning']}" for name, row in rows if row.get("warning")] + \
        [f"pass {name}: opset converted {row['opset_converted']}" + (f" ({row['why']})" if row.get("why") else "")
         for name, row in rows if row.get("opset_converted")]
