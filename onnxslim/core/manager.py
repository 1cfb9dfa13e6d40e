"""Runs a pipeline of passes: time, check and roll back each one, and report."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Sequence

import onnx_ir as ir

from onnxslim.core.checks import ModelCheckError, check_model, contract_violations, io_contract
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import GraphStats, graph_stats, refusal, unreached_weights
from onnxslim.errors import OnnxSlimError, PipelineFailed, first_line
from onnxslim.runtime.isolated import session_failure

logger = logging.getLogger(__name__)

APPLIED, UNCHANGED, ROLLED_BACK = "applied", "unchanged", "rolled-back"


@dataclasses.dataclass
class PassRecord:
    name: str
    status: str
    seconds: float
    before: GraphStats
    after: GraphStats
    stats: dict[str, float] = dataclasses.field(default_factory=dict)
    reason: str | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    details: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PipelineReport:
    records: list[PassRecord]
    before: GraphStats
    after: GraphStats

    @property
    def ok(self) -> bool:
        return all(r.status != ROLLED_BACK for r in self.records)

    @property
    def lossy_passes(self) -> list[str]:
        return [r.name for r in self.records if r.status == APPLIED and r.stats.get("lossy")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "before": dataclasses.asdict(self.before),
            "after": dataclasses.asdict(self.after),
            "passes": [r.to_dict() for r in self.records],
        }


ProgressCallback = Callable[[str, int, int], None]


class PassManager:
    """Applies passes in order to a copy of the model; the input model is never modified.

    After each pass the result must pass onnx's checker, load in ONNX Runtime (``check_runtime``)
    and keep the graph's input/output contract; otherwise the pass is rolled back and the reason
    recorded, or, under ``strict``, PipelineFailed is raised.
    """

    def __init__(
        self,
        passes: Sequence[Pass],
        *,
        strict: bool = False,
        check_runtime: bool = True,
        progress: ProgressCallback | None = None,
        keep_snapshots: bool = False,
    ):
        self.passes = list(passes)
        self.strict = strict
        self.check_runtime = check_runtime
        self.progress = progress
        self.keep_snapshots = keep_snapshots
        self.snapshots: list[tuple[str, ir.Model]] = []
        """(pass name, model after it) for each applied pass, when ``keep_snapshots``: a failed
        validation can then find the first pass that broke the outputs. Cheap: snapshots share
        unchanged tensors."""
        self.stopped: tuple[ir.Model, PipelineReport] | None = None
        """When ``strict`` stopped the run: the last model that passed its checks and the report up
        to and including the rolled-back pass, so the caller can still write the report."""

    def run(self, model: ir.Model) -> tuple[ir.Model, PipelineReport]:
        contract = io_contract(model)
        start_stats = current_stats = graph_stats(model)
        records = []
        for index, slim_pass in enumerate(self.passes):
            if self.progress:
                self.progress(slim_pass.name, index, len(self.passes))
            record, candidate = self._run_one(slim_pass, model, current_stats, contract)
            records.append(record)
            if record.status == ROLLED_BACK:
                # info, not warning: api.run's result carries it as a warning (the CLI prints those)
                logger.info("pass %s rolled back: %s", slim_pass.name, record.reason)
                if self.strict:
                    self.stopped = model, PipelineReport(records, start_stats, current_stats)
                    raise PipelineFailed(f"rolled back: {record.reason}", where=f"pass {slim_pass.name}")
                continue
            model, current_stats = candidate, record.after
            if self.keep_snapshots and record.status == APPLIED:
                self.snapshots.append((slim_pass.name, model))  # never mutated later: each pass gets a clone
        if self.progress:
            self.progress("", len(self.passes), len(self.passes))
        return model, PipelineReport(records, start_stats, current_stats)

    def _run_one(self, slim_pass: Pass, model: ir.Model, before: GraphStats, contract: list) -> tuple[PassRecord, ir.Model]:
        config = dataclasses.asdict(slim_pass.config) if dataclasses.is_dataclass(slim_pass.config) else {}
        if slim_pass.float_weights and (quantized := refusal(model)) is not None:
            warning = {"warning": f"{slim_pass.name} did nothing: {quantized}; it works on float weights, so run it "
                                  "before quantization (in a recipe, as a [[pass]] before the quantize step)"}
            return PassRecord(slim_pass.name, UNCHANGED, 0.0, before, before, config=config, details=[warning]), model
        started = time.perf_counter()
        candidate = model.clone()
        try:
            result = slim_pass(candidate)
            problem = self._problem(result, contract, isolated=slim_pass.isolated_check)
        except OnnxSlimError:
            raise  # the user's input is wrong (bad calibration data...): report it, don't hide it as a rollback
        except Exception as exc:  # a pass bug must not take the user's run down with it
            logger.debug("pass %s raised", slim_pass.name, exc_info=True)
            result, problem = None, f"{type(exc).__name__}: {first_line(exc)}"
        seconds = time.perf_counter() - started
        if problem is not None or result is None:
            return PassRecord(slim_pass.name, ROLLED_BACK, seconds, before, before, reason=problem, config=config), model
        stats = dict(result.stats) if isinstance(result, PassResult) else {}
        details = list(result.details) if isinstance(result, PassResult) else []
        if slim_pass.lossy and result.modified:
            stats["lossy"] = 1
        after = graph_stats(result.model) if result.modified else before
        status = APPLIED if result.modified else UNCHANGED
        if slim_pass.lossy and not result.modified and not any("warning" in row for row in details):
            details.append({"warning": f"changed nothing{unreached_weights(model)}"})
        # a pass that says it changed nothing is not checked: whatever it did to its copy is dropped
        kept = result.model if result.modified else model
        return PassRecord(slim_pass.name, status, seconds, before, after, stats, config=config, details=details), kept

    def _problem(self, result: ir.passes.PassResult, contract: list, *, isolated: bool = False) -> str | None:
        if not result.modified:
            return None
        violations = contract_violations(contract, io_contract(result.model))
        if violations:
            return "changed the model's inputs/outputs: " + "; ".join(violations)
        try:
            check_model(result.model, runtime=self.check_runtime)
        except ModelCheckError as exc:
            return exc.message
        if isolated and self.check_runtime:
            return session_failure(result.model)
        return None
