"""Runs both models on the same inputs, per provider, and compares every output.

One ONNX Runtime session is alive at a time: the original runs over all batches, then the
optimized model, on each requested provider in turn.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxslim.data import RandomReader, open_reader
from onnxslim.data.readers import Reader
from onnxslim.errors import DataError, DataRejected, ModelLoadError
from onnxslim.input_shapes import batch_axis_is_dynamic
from onnxslim.patterns import is_softmax
from onnxslim.runtime import ProviderUnavailable, RunResult, parse_providers, run_batches, unavailable_reason
from onnxslim.runtime.isolated import computes_in_float16, session_failure
from onnxslim.runtime.session import save_for_session
from onnxslim.validation.compare import OutputComparison, Tolerances, accuracy, compare_arrays
from onnxslim.validation.latency import measure_latency
from onnxslim.validation.localize import capturable, localize
from onnxslim.validation.options import ValidationOptions
from onnxslim.validation.result import ProviderRun, ValidationReport

__all__ = ["OutputComparison", "ValidationOptions", "ValidationReport", "validate_models"]


@dataclasses.dataclass
class _Prepared:
    original: ir.Model
    optimized: ir.Model
    reader: Reader
    tol: Tolerances
    capture: list[str]
    paths: dict[str, str]
    """Models saved for the sessions, with the captured tensors as extra outputs when capture is 'always'."""
    sizes: dict[str, int]
    folder: Path
    scores: frozenset[str] = frozenset()
    """Outputs that may be class scores (``score_outputs``): only those are held to top-1 agreement."""


SCORING_OPS = frozenset({"Gemm", "MatMul", "Add", "Softmax", "LogSoftmax", "Sigmoid", "Conv"})
"""What computes class scores: a linear layer (Add: its bias), a softmax or sigmoid over it; a
1x1 Conv head (SqueezeNet). Not pooling or normalization: all-MiniLM-L6-v2's mean-pooled sentence
embedding ([N, 384], from ReduceSum / Div) was held to top-1 agreement of its largest coordinate."""
PASS_THROUGH = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "Transpose"})


def score_outputs(model: ir.Model) -> frozenset[str]:
    """Names of the graph outputs computed by a scoring op, looking through reshapes and casts."""
    found = set()
    for value in model.graph.outputs:
        node = value.producer()
        while node is not None and node.op_type in PASS_THROUGH and node.inputs and node.inputs[0] is not None:
            node = node.inputs[0].producer()
        if node is not None and (node.op_type in SCORING_OPS or is_softmax(node)):
            found.add(value.name)
    return frozenset(found)


def validate_models(original: ir.Model, optimized: ir.Model, options: ValidationOptions) -> ValidationReport:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnxslim-validate-") as folder:
        prep = _prepare(original, optimized, options, Path(folder))
        report = _validate(prep, options)
    report.seconds = time.perf_counter() - started
    return report


def _validate(prep: _Prepared, options: ValidationOptions) -> ValidationReport:
    report = ValidationReport(passed=True, outputs=[], samples=0, tolerances=prep.tol, data=prep.reader.describe(),
                              sizes=prep.sizes, lossy=options.lossy,
                              lossy_reason=options.lossy_reason if options.lossy else None)
    results: dict[str, dict[str, RunResult]] = {}
    for provider in parse_providers(options.providers):
        try:
            outcome = _run_provider(prep, provider, options)
        except DataRejected as exc:
            if getattr(prep.reader, "batch", 1) == 1 or results:
                raise
            # an export whose dynamic batch axis only takes 1 (a Reshape to [1, ...] inside): batches of one
            prep.reader = _reader(prep.original, options, batch=1)
            report.data = f"{prep.reader.describe()}, batches of 1 (the original model refuses {RANDOM_BATCH}: {exc.message})"
            outcome = _run_provider(prep, provider, options)
        report.providers.append(outcome.record)
        if outcome.results:
            results[provider] = outcome.results
            _attach_cross(outcome, results.get("cpu"), prep.tol)
    ran = [p for p in report.providers if p.status == "ran"]
    if ran and ran[0].samples == 0:  # nothing compared must not read as agreement
        raise DataError(f"validation data has no samples ({prep.reader.describe()})")
    report.outputs = ran[0].outputs if ran else []
    report.samples = ran[0].samples if ran else 0
    report.skipped = None if ran else "no requested provider could run: " + "; ".join(p.reason or "" for p in report.providers)
    report.accuracy = _accuracy(next(iter(results.values()))) if results else None
    if ran and options.latency_runs and not ran[0].failure:  # a model that does not run has no latency
        report.latency = _latency(prep, ran[0].provider, options)
    skipped = any(p.status == "skipped" for p in report.providers)
    # nothing compared is no agreement: `onnxslim validate --providers cuda` on a machine without
    # CUDA passed any model (optimize, whose validation is advisory unless strict, relaxes this)
    report.passed = bool(ran) and all(p.passed for p in ran) and not (options.strict and skipped)
    return report


def _prepare(original: ir.Model, optimized: ir.Model, options: ValidationOptions, folder: Path) -> _Prepared:
    """Checks the data, then writes both models (weights as external data) for the sessions to load."""
    reader = _reader(original, options, optimized=optimized)
    names = capturable(original, optimized) if options.capture == "always" else []
    paths, sizes = {}, {}
    for label, model in (("original", original), ("optimized", optimized)):
        paths[label], sizes[label] = save_for_session(model, folder, label, names)
    return _Prepared(original, optimized, reader, options.thresholds(), names, paths, sizes, folder, score_outputs(original))


RANDOM_BATCH = 2
"""Samples per random batch when the batch axis is dynamic and not pinned: an optimized model that
had folded the batch dim to 1 (a Reshape to [1, ...]) passed on batches of one."""


def _reader(model: ir.Model, options: ValidationOptions, *, batch: int | None = None,
            optimized: ir.Model | None = None) -> Reader:
    if options.data:
        # the pins too: data that does not fit them fails the pinned (optimized) model only, which
        # would then be blamed on a pass
        return open_reader(options.data, model, batch_size=options.batch_size, preprocess=options.preprocess,
                           input_shapes=options.input_shapes)
    if batch is None:  # an optimized model that declares its batch pinned (--input-shape) takes only that
        dynamic = batch_axis_is_dynamic(model) and (optimized is None or batch_axis_is_dynamic(optimized))
        batch = RANDOM_BATCH if dynamic and not options.input_shapes else 1
    return RandomReader(model, options.random_samples, seed=options.seed, input_shapes=options.input_shapes,
                        batch=batch, vary_defaults=True)


@dataclasses.dataclass
class _ProviderOutcome:
    record: ProviderRun
    results: dict[str, RunResult] | None = None


def _run_provider(prep: _Prepared, provider: str, options: ValidationOptions) -> _ProviderOutcome:
    reason = unavailable_reason(provider)
    if reason:
        return _ProviderOutcome(ProviderRun(provider, "skipped", reason=reason))
    results = {}
    for label in ("original", "optimized"):
        if (crash := _crash(prep, label, provider)) is not None:
            if label == "original":
                raise ModelLoadError(f"cannot be validated: {crash}", where="original model")
            return _ProviderOutcome(ProviderRun(provider, "ran", samples=results["original"].samples,
                                                failure=f"the optimized model cannot run: {crash}"))
        try:
            results[label] = run_batches(prep.paths[label], prep.reader, provider=provider, capture=prep.capture)
        except ProviderUnavailable as exc:
            return _ProviderOutcome(ProviderRun(provider, "skipped", reason=exc.message))
        except DataError as exc:
            if label == "optimized":  # the original ran on this data: the optimized model is what broke
                return _ProviderOutcome(ProviderRun(provider, "ran", samples=results["original"].samples,
                                                    failure=f"the optimized model does not run where the original "
                                                            f"does: {exc.message}"))
            # the model's refusal names which model; a problem of the data file itself needs no model
            raise type(exc)(exc.message, path=exc.path,
                            where="original model" if isinstance(exc, DataRejected) else exc.where) from None
    ref, got = results["original"], results["optimized"]
    outputs = [compare_arrays(name, ref.outputs[name], got.outputs[name], prep.tol, classify=name in prep.scores)
               for name in ref.outputs]
    for output in outputs:  # the shapes the models computed, not those of the batches joined
        before, after = ref.first_shapes.get(output.name), got.first_shapes.get(output.name)
        if before is not None and after is not None and before != after:
            output.failures = [f"shape {list(after)} != reference {list(before)} (first batch)" if f.startswith("shape ")
                               else f for f in output.failures]
    record = ProviderRun(provider, "ran", outputs=outputs, samples=ref.samples, cpu_nodes=got.cpu_nodes,
                         seconds=ref.seconds + got.seconds)
    if prep.capture:  # captured in the main run: the error along the graph comes for free
        record.localization = localize(prep.original, prep.optimized, ref.captured, got.captured, prep.tol)
    elif not record.passed and options.capture == "auto":
        record.localization = localize(prep.original, prep.optimized, *_capture_first_batch(prep, provider), prep.tol)
    return _ProviderOutcome(record, results)


def _crash(prep: _Prepared, label: str, provider: str) -> str | None:
    """Why the CPU provider fails to make an optimized session on a float16 model, found in a child
    process (ONNX Runtime 1.32 dies with SIGSEGV on some: in-process, ``onnxslim validate`` ended
    with exit 139 and no report); None for other models and providers, which are not tried apart."""
    model = prep.original if label == "original" else prep.optimized
    if provider != "cpu" or not computes_in_float16(model):
        return None
    return session_failure(prep.paths[label])


def _capture_first_batch(prep: _Prepared, provider: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Runs both models again on the first batch with every shared intermediate tensor as an output."""
    names = capturable(prep.original, prep.optimized)
    first = [_head(batch, prep, CAPTURE_SAMPLES) for batch in itertools.islice(iter(prep.reader), 1)]
    captured = [run_batches(save_for_session(m, prep.folder, f"{label}-capture", names)[0], first, provider=provider,
                            capture=names).captured
                for label, m in (("original", prep.original), ("optimized", prep.optimized))]
    return captured[0], captured[1]


def _attach_cross(outcome: _ProviderOutcome, cpu: dict[str, RunResult] | None, tol: Tolerances) -> None:
    """Same model, this provider against CPU (informational: providers differ in float rounding)."""
    if outcome.record.provider == "cpu" or not cpu:
        return
    for label, result in (outcome.results or {}).items():
        for name, array in result.outputs.items():
            outcome.record.cross.append(compare_arrays(f"{label}/{name}", cpu[label].outputs[name], array, tol))


def _accuracy(results: dict[str, RunResult]) -> dict | None:
    if not results:
        return None
    labels = results["original"].labels
    found = {label: accuracy(r.outputs, labels) for label, r in results.items()}
    if found["original"] is None or found["optimized"] is None:
        return None
    return {"output": found["original"][0], "samples": int(len(labels)), "original": found["original"][1],
            "optimized": found["optimized"][1]}


CAPTURE_SAMPLES = 4
"""Samples whose every intermediate tensor localization captures: where the error starts shows
on a few (32 PP-OCR pages of 320x320 captured 1.3 GB and took 30 s to compare)."""


def _head(batch, prep: _Prepared, count: int) -> dict[str, np.ndarray]:
    """The first ``count`` samples of a batch when every input's batch axis is dynamic and nothing
    fixes the batch size (an export or an ``--input-shape`` pin: the models take no other), else the
    batch; inputs passed whole (scalars, no batch axis) stay whole."""
    if (getattr(prep.reader, "fixed_batch", None) or not batch_axis_is_dynamic(prep.original)
            or not batch_axis_is_dynamic(prep.optimized)):
        return batch.inputs
    if hasattr(batch, "head"):
        return batch.head(count).inputs
    return {name: np.asarray(array)[:count] for name, array in batch.inputs.items()}


def _latency(prep: _Prepared, provider: str, options: ValidationOptions):
    # latency is per call at batch 1 (a batch of 32 PP-OCR pages made the timing 75 s of a 146 s run)
    first = _head(next(iter(prep.reader)), prep, 1)
    plain = prep.paths if not prep.capture else {
        label: save_for_session(m, prep.folder, f"{label}-plain")[0] for label, m in (("original", prep.original), ("optimized", prep.optimized))}
    return measure_latency(plain["original"], plain["optimized"], first, provider=provider, runs=options.latency_runs,
                           warmup=options.latency_warmup, threads=options.threads)
