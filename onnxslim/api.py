"""The Python API: optimize(), validate(), inspect()."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import onnx
import onnx_ir as ir

from onnxslim import io, preflight
from onnxslim.core.flags import option_names, recipe_family_steps
from onnxslim.core.manager import PassManager, ProgressCallback
from onnxslim.core.pass_base import Pass, PassContext
from onnxslim.core.config import coerce
from onnxslim.core.stats import iter_weights, refusal
from onnxslim.core.recipe import Step, build_passes, check_validation, load_recipe, plan_steps
from onnxslim.data import FirstSamples, Reader, open_reader
from onnxslim.errors import ConfigError, OnnxSlimError, OutputPathError, PipelineFailed, ValidationFailed, first_line
from onnxslim.input_shapes import fix_input_shapes
from onnxslim.proto import external_data_loaded
from onnxslim.summary import summarize
from onnxslim.result import OPTIMIZE_SCHEMA, OptimizeResult, failure_line, input_names, pass_warnings  # noqa: F401 (re-exported)
from onnxslim.validation import ValidationOptions, ValidationReport, validate_models

logger = logging.getLogger(__name__)

PassSpec = str | tuple[str, Mapping[str, Any]] | Pass

LOSSY_LATENCY_RUNS = 20
"""Timed runs per variant when a lossy pass ran and the user did not ask for a number."""


_OPTION_NAMES = {"simplify", "validate", "strict", "input_shapes", "validation",
                 "calibration_data", "calibration_samples", "calibration_preprocess", "calibration_cache"}


def run(
    src: io.ModelSource,
    dst: str | Path | None = None,
    *,
    simplify: bool | None = None,
    passes: PassSpec | Sequence[PassSpec] = (),
    recipe: str | Path | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    validate: bool | None = None,
    strict: bool | None = None,
    check_runtime: bool = True,
    validation: ValidationOptions | Mapping[str, Any] | None = None,
    data: str | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    overwrite_input: bool = False,
    external_data: bool | None = None,
    calibration_data: str | Path | None = None,
    calibration_samples: int | None = None,
    calibration_preprocess: str | None = None,
    calibration_cache: str | Path | None = None,
    other_outputs: Mapping[str, str | os.PathLike | None] | None = None,
    progress: ProgressCallback | None = None,
    **family_options: Any,
) -> OptimizeResult:
    """Load, run the pipeline, validate, save. Explicit arguments override the recipe's [options].

    ``family_options`` are the pass families' keywords (``onnxslim passes`` lists the families;
    e.g. ``prune=0.3``, ``quantize="static"``): each adds its steps after the cleanup.
    ``other_outputs``: files the caller will write after run() returns, by what they are (the CLI
    gives ``{"JSON report": path}``). run() does not write them; it checks, before any work, that no
    two outputs are one file and that no output is an input (the model, its data).
    """
    loaded = load_recipe(recipe) if recipe else None
    given = {"simplify": simplify, "validate": validate, "strict": strict, "input_shapes": input_shapes,
             "calibration_data": calibration_data, "calibration_samples": calibration_samples,
             "calibration_preprocess": calibration_preprocess, "calibration_cache": calibration_cache, **family_options}
    options = _merge_options(loaded.options if loaded else {}, preflight.checked_options(given), where=str(recipe) if recipe else None)
    overwrite_input, check_runtime = (coerce(v, bool, where=k) for k, v in
                                      (("overwrite_input", overwrite_input), ("check_runtime", check_runtime)))
    external_data = coerce(external_data, bool | None, where="external_data")
    checks = _validation_options(options.get("validation"), validation, data=data, atol=atol, rtol=rtol)
    preflight.check_requests(options, checks)
    if dst is not None:
        io.check_output_path(Path(dst), src=Path(src) if isinstance(src, (str, os.PathLike)) else None, overwrite_input=overwrite_input)
    original = io.load(src)  # its external data files are inputs too: no output may replace them
    # automatic external data is written above 2 GB only: a small model saved over itself does not
    # write OUT.data (refused when that is the input's weights file, torch's m.onnx.data naming)
    writes_data = external_data if external_data is not None else io.model_nbytes(original) > io.PROTOBUF_LIMIT
    preflight.check_run_paths(src, dst, options, checks, other_outputs or {}, overwrite_input=overwrite_input,
                 external_data=writes_data, recipe=recipe, weights=io.referenced_files(original))
    model, shapes = _pinned_copy(original, src, options, given_shapes=input_shapes, recipe=recipe, check_runtime=check_runtime)
    context = PassContext(calibration=_calibration_reader(original, options), original=original,
                          calibration_cache=_load_cache(options.get("calibration_cache")),
                          progress=getattr(progress, "detail", None))
    strict = bool(options.get("strict", False))
    manager = PassManager(_pipeline(options, loaded, passes, context, given=given), strict=strict, check_runtime=check_runtime,
                          progress=progress, keep_snapshots=bool(options.get("validate", True)))
    try:
        model, pipeline = manager.run(model)
    except PipelineFailed as exc:
        if manager.stopped is None:  # not the manager's strict stop
            raise
        # a result, not the exception: a CI gate that asked for the report must get it, as it does
        # when a strict validation fails (optimize() raises this again for Python callers)
        result = OptimizeResult(*manager.stopped, None, failure=exc.one_line(), strict=True, **input_names(src))
        result.warnings += pass_warnings(result.pipeline)
        return result
    result = OptimizeResult(model, pipeline, None, strict=strict, **input_names(src))
    result.warnings += pass_warnings(pipeline)
    result.warnings += _save_cache(context.calibration_cache, options.get("calibration_cache"))
    if options.get("validate", True):
        _validate_result(result, original, manager.snapshots, _checks_after(pipeline, checks, options, shapes, result.notes),
                         strict=strict)
    result.failure = failure_line(result)
    if dst is not None and not (strict and not result.passed):
        result.output = io.save(model, dst, external_data=external_data)
    return result


def _pinned_copy(original: ir.Model, src: io.ModelSource, options: Mapping[str, Any], *, given_shapes: Any,
                 recipe: str | Path | None, check_runtime: bool) -> tuple[ir.Model, dict[str, tuple[int, ...]]]:
    """The model the passes get (``original`` with the pinned input shapes) and the pins; both
    checked to load and run before any pass."""
    model = original.clone()
    shapes = {k: tuple(v) for k, v in (options.get("input_shapes") or {}).items()}
    shapes_from = ("[options] input_shapes", recipe) if given_shapes is None and shapes else ("--input-shape", None)
    if shapes:
        fix_input_shapes(model, shapes, where=shapes_from[0], path=shapes_from[1])
    preflight.check_runnable(original, model, shapes, src, runtime=check_runtime, shapes_from=shapes_from)
    return model, shapes


def _checks_after(pipeline: Any, checks: ValidationOptions, options: Mapping[str, Any],
                  shapes: Mapping[str, tuple[int, ...]], notes: list[str]) -> ValidationOptions:
    """The validation settings for what the pipeline did: lossy tolerances and a latency measurement
    after lossy passes, the pinned shapes and batch, the calibration data when no data was given
    (noted in ``notes``)."""
    checks = dataclasses.replace(checks, input_shapes={**shapes, **checks.input_shapes}, lossy=bool(pipeline.lossy_passes),
                                 lossy_reason=f"lossy passes ran: {', '.join(pipeline.lossy_passes)}")
    if _pinned_batch(shapes) and checks.batch_size != _pinned_batch(shapes):  # the optimized model takes no other
        checks = dataclasses.replace(checks, batch_size=_pinned_batch(shapes))
    if not checks.data and options.get("calibration_data"):
        # Random inputs say nothing about a calibrated model; calibration data at least has the real distribution.
        checks = dataclasses.replace(checks, data=str(options["calibration_data"]),
                                     preprocess=options.get("calibration_preprocess"))
        notes.append("validated on the calibration data; give --data for held-out samples")
    if checks.lossy and not checks.latency_runs:
        # Lossy passes are meant to buy speed: measure it, so a slower result is never silent.
        checks = dataclasses.replace(checks, latency_runs=LOSSY_LATENCY_RUNS)
    return checks


def _validate_result(result: OptimizeResult, original: ir.Model, snapshots: Sequence[tuple[str, ir.Model]],
                     checks: ValidationOptions, *, strict: bool) -> None:
    """Sets ``result.validation``; after a failure, the first pass whose model diverged; a warning
    when the lossy model is slower than the original."""
    result.validation = _auto_validate(original, result.model, checks, strict=strict)
    if not result.validation.passed:
        result.first_divergent_pass = _first_divergent_pass(original, snapshots, checks)
    if result.slower_than_original:
        latency = result.validation.latency
        result.warnings.append(f"the optimized model is SLOWER than the original ({latency.ratio:.2f}x median latency, "
                               f"noise band {latency.noise:.0%}); passes: {', '.join(result.pipeline.lossy_passes)}")
        logger.info(result.warnings[-1])  # a warning of the result: the CLI prints it once


def _pipeline(options: Mapping[str, Any], recipe: Any, passes: Sequence[PassSpec], context: PassContext, *,
              given: Mapping[str, Any]) -> list[Pass]:
    family = recipe_family_steps(options, recipe, given)
    if recipe is not None and any(k in option_names() for k in recipe.options):
        # a family step set in the recipe's [options]: its build errors name the recipe, as [[pass]] steps' do
        family = [dataclasses.replace(step, source=recipe.path) for step in family]
    steps = plan_steps([*(recipe.steps if recipe else []), *_steps(passes), *family], simplify=options.get("simplify", True))
    return build_passes(steps, context)


def _load_cache(path: str | None) -> Any:
    if not path:
        return None
    from onnxslim.passes.quantization.cache import load_calibration_cache

    return load_calibration_cache(path)


def _save_cache(cache: Any, path: str | None) -> list[str]:
    """Writes the cache when a pass filled it; the warning when it could not be written. Its folder
    was checked before any work; one that changed since (removed, full disk) must not cost the
    model that the run made, which the cache only speeds up making again."""
    if not (path and cache is not None and cache.modified):
        return []
    from onnxslim.passes.quantization.cache import save_calibration_cache

    try:
        save_calibration_cache(cache, path)
    except (OSError, OutputPathError) as exc:  # OutputPathError: its folder was removed since
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
        warning = f"calibration cache not written: {path}: {why}"
        logger.warning(warning)
        return [warning]
    return []


def _first_divergent_pass(original: ir.Model, snapshots: Sequence[tuple[str, ir.Model]], options: ValidationOptions) -> str | None:
    """Binary search over the models after each applied pass for the first that fails validation."""
    quick = dataclasses.replace(options, capture="off", latency_runs=0, html=None)
    low, high = -1, len(snapshots) - 1  # snapshot `high` fails (it is the final model); `low` = the original passes
    while high - low > 1:
        middle = (low + high) // 2
        if validate_models(original, snapshots[middle][1].clone(), quick).passed:
            low = middle
        else:
            high = middle
    return snapshots[high][0] if snapshots else None


def optimize(src: io.ModelSource, dst: str | Path | None = None, **options: Any) -> onnx.ModelProto:
    """Optimizes ``src`` (a path, ModelProto or onnx-ir model); writes ``dst`` when given.

    Keyword options mirror the CLI flags (``simplify``, ``validate``, ``strict``, ``recipe``,
    ``input_shapes``, ``passes``...). Under ``strict`` raises ValidationFailed when validation
    fails (or the lossy model is slower than the original) and PipelineFailed when a pass was
    rolled back; otherwise the returned model is the best the pipeline could do.
    """
    result = run(src, dst, **options)
    if result.strict and not result.passed:
        # a strict stop in the pipeline has no validation; a failed or slower validation has one
        raise (PipelineFailed if result.validation is None else ValidationFailed)(result.failure)
    with external_data_loaded(result.model):  # a self-contained proto: no locations relative to the input's folder
        return ir.serde.serialize_model(result.model)


def validate(original: io.ModelSource, optimized: io.ModelSource, *, options: ValidationOptions | None = None,
             other_outputs: Mapping[str, str | os.PathLike | None] | None = None, **settings: Any) -> ValidationReport:
    """Compares two models on ONNX Runtime; the result is truthy when they agree.

    Settings are ValidationOptions fields (``data``, ``atol``, ``providers``, ``input_shapes``...);
    with ``html`` set, the HTML report is written there. ``other_outputs``: files the caller will
    write ({"JSON report": path}), refused like the HTML report over a model, its weights or the data.
    """
    checks = _validation_options(None, options, **settings)
    models = preflight.load_runnable(original), preflight.load_runnable(optimized)  # reads only
    preflight.check_distinct_paths({"HTML report": checks.html, **(other_outputs or {})}, {
        **preflight.model_files(original, "original model", models[0]),
        **preflight.model_files(optimized, "optimized model", models[1]), "validation data": checks.data})
    if (changed := preflight.interface_difference(*models)) is not None:
        # the optimized model broke the application's contract: a failed validation with its report
        report = ValidationReport(passed=False, outputs=[], samples=0, tolerances=checks.thresholds(), contract=changed)
        _write_html(report, checks)
        return report
    if checks.lossy:
        checks = dataclasses.replace(checks, lossy_reason=checks.lossy_reason or "asked for (--lossy)")
    elif reason := _visibly_lossy(*models):
        checks = dataclasses.replace(checks, lossy=True, lossy_reason=reason)
    report = validate_models(*models, checks)
    _write_html(report, checks)
    return report


def _visibly_lossy(original: ir.Model, optimized: ir.Model) -> str | None:
    """Why the optimized model says it is lossy: it has quantized ops, or float16 weights the
    original lacks (then the exact tolerances would fail a good int8 or float16 model); else None."""
    def half(model: ir.Model) -> bool:
        return any(tensor.dtype == ir.DataType.FLOAT16 for _, tensor in iter_weights(model))

    if refusal(optimized) is not None and refusal(original) is None:
        return "the optimized model has quantized ops the original lacks"
    if half(optimized) and not half(original):
        return "the optimized model has float16 weights the original lacks"
    return None


def _write_html(report: ValidationReport, options: ValidationOptions) -> None:
    if options.html:
        from onnxslim.validation.html import write_html

        write_html(report, options.html)


def inspect(src: io.ModelSource, *, top: int = 10) -> dict[str, Any]:
    """Inputs, outputs, opsets, op counts and weights of a model, as plain data."""
    return summarize(io.load(src), top=top)


def _merge_options(recipe_options: Mapping[str, Any], given: Mapping[str, Any], *, where: str | None) -> dict[str, Any]:
    known = _OPTION_NAMES | option_names()
    unknown = sorted(set(recipe_options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} in [options]", path=where)
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    merged = dict(recipe_options)
    merged.update({k: v for k, v in given.items() if v is not None})
    return merged


def _steps(passes: PassSpec | Iterable[PassSpec]) -> list[Step]:
    # one name alone is one pass, not a sequence of one-letter names ("unknown pass 'r'")
    if isinstance(passes, (str, Pass)) or not isinstance(passes, Iterable):
        passes = [passes]
    return [_step(spec) for spec in passes]


def _step(spec: Any) -> Step:
    if isinstance(spec, Pass):
        return Step(spec.name, instance=spec)
    if isinstance(spec, str):
        return Step(spec)
    if (isinstance(spec, Sequence) and len(spec) == 2 and isinstance(spec[0], str)
            and isinstance(spec[1], Mapping)):
        return Step(spec[0], dict(spec[1]))
    raise ConfigError(f"expected a pass name, a (name, settings dict) pair or a Pass, got {spec!r}", where="passes")


def _validation_options(recipe_settings: Mapping[str, Any] | None, given: ValidationOptions | Mapping[str, Any] | None,
                        **shortcuts: Any) -> ValidationOptions:
    """Recipe settings, overridden by what the caller set explicitly (fields left at their default don't count)."""
    if isinstance(given, ValidationOptions):
        defaults = ValidationOptions()
        given = {f.name: getattr(given, f.name) for f in dataclasses.fields(given) if getattr(given, f.name) != getattr(defaults, f.name)}
    settings = {**dict(recipe_settings or {}), **dict(given or {}), **{k: v for k, v in shortcuts.items() if v is not None}}
    known = {f.name for f in dataclasses.fields(ValidationOptions)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown validation setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    settings = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in settings.items()}  # data, html
    return ValidationOptions(**check_validation(settings, where="validation"))


def _calibration_reader(model: ir.Model, options: Mapping[str, Any]) -> Reader | None:
    """The calibration data as a re-iterable reader, cut to ``calibration_samples`` if given."""
    path = options.get("calibration_data")
    if path is None:
        return None
    # the pins: the data must fit them, and a pinned (or exported) batch size is the one batches get
    samples = options.get("calibration_samples")
    reader = open_reader(path, model, preprocess=options.get("calibration_preprocess"),
                         input_shapes=options.get("input_shapes"), preprocess_flag="--calibration-preprocess",
                         samples=None if samples is None else int(samples))
    return reader if samples is None else FirstSamples(reader, int(samples))


def _pinned_batch(shapes: Mapping[str, Sequence[int]] | None) -> int | None:
    """The batch size ``--input-shape`` fixes for every input (the model then takes no other), else None."""
    firsts = {tuple(dims)[0] for dims in (shapes or {}).values() if len(tuple(dims))}
    return next(iter(firsts)) if len(firsts) == 1 and next(iter(firsts)) > 0 else None


def _auto_validate(original: ir.Model, model: ir.Model, options: ValidationOptions, *, strict: bool) -> ValidationReport:
    options = dataclasses.replace(options, strict=options.strict or strict)
    try:
        report = validate_models(original, model.clone(), options)  # the harness may annotate what it runs
    except OnnxSlimError as exc:
        if options.data or strict:
            raise
        # Without data, a model with free dims cannot be run; say so instead of failing the run.
        logger.warning("validation skipped: %s", exc.message)
        return ValidationReport(passed=True, outputs=[], samples=0, skipped=exc.message)
    if report.skipped and not options.strict:  # no requested provider could run: not validated, not required
        report.passed = True
    _write_html(report, options)
    return report
