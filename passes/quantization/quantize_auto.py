"""Pick the int8 format by measuring it: static QDQ or dynamic, whichever runs fastest here within an accuracy floor."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import unreached_weights
from onnxslim.data.readers import random_array
from onnxslim.errors import ConfigError, DataError
from onnxslim.input_shapes import batch_axis_is_dynamic, resolve_shape
from onnxslim.passes.quantization import mixed_precision
from onnxslim.passes.quantization.common import refused, unmatched_selections
from onnxslim.passes.quantization.quantize_dynamic import QuantizeDynamic, QuantizeDynamicConfig
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from onnxslim.runtime.session import model_bytes
from onnxslim.validation.latency import time_round_robin

MARGIN = 0.05
"""A format must run at least this much faster than float to be chosen (timing noise)."""
TIMED_MS = 300.0
MAX_RUNS = 3000


@dataclasses.dataclass(frozen=True)
class QuantizeAutoConfig:
    min_cosine: float = 0.99
    """Accuracy floor: smallest output cosine similarity to float on the calibration samples."""
    method: Literal["minmax", "percentile", "entropy", "mse"] = "mse"
    per_channel: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    samples: int = 16
    """Calibration samples on which each candidate's outputs are compared with float."""
    latency_runs: int = 30
    """Timed calls per candidate (batch 1, round-robin with the float model)."""

    def __post_init__(self):
        if not 0.0 < self.min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be in (0, 1], got {self.min_cosine}")
        if self.samples < 1 or self.latency_runs < 3:
            raise ValueError("samples must be >= 1 and latency_runs >= 3")


class QuantizeAuto(Pass):
    """Quantize to int8 in the format that measures fastest on this machine, or not at all.

    Before: a float model. After: the model as ``quantize-static`` (with calibration data) or
    ``quantize-dynamic`` leaves it, whichever ran fastest at batch 1 on ONNX Runtime's CPU EP
    while keeping the outputs' cosine similarity to float >= ``min_cosine``; unchanged when no
    candidate beats float by ``MARGIN`` (small transformers: static QDQ ran 0.8x float on
    vit_tiny, dynamic 1.2x). The details list every candidate's latency and cosine.
    """

    name = "quantize-auto"
    Config = QuantizeAutoConfig
    lossy = True

    def call(self, model: ir.Model) -> PassResult:
        if (unchanged := refused(model, self.name)) is not None:
            return unchanged
        feeds = (mixed_precision.subset(self.context.calibration, self.config.samples,
                                        splittable=batch_axis_is_dynamic(model)) if self.context.calibration else [])
        generated = not feeds
        if generated:
            feeds = [_random_feeds(model)]
        built = {label: candidate(model.clone()) for label, candidate in self._candidates().items()}
        built = {label: result for label, result in built.items() if result.modified}
        try:
            reference = mixed_precision.run_outputs(model, feeds)
        except DataError as exc:
            if not generated:
                raise
            # the user gave no data: "calibration batch rejected" would send them looking for it
            raise DataError(f"the random inputs made to time the formats (no calibration data) were rejected by "
                            f"the model: {exc.message.removeprefix('calibration batch rejected by the model: ')}; "
                            "give --calibration-data") from None
        variants = {"float": model_bytes(model), **{k: model_bytes(r.model) for k, r in built.items()}}
        # one sample where the batch axis allows it; a fixed batch (or a fixed-size vector input) runs as it is
        single = {name: np.asarray(v)[:1] for name, v in feeds[0].items()} if batch_axis_is_dynamic(model) else feeds[0]
        times = {k: float(np.median(t)) for k, t in time_round_robin(variants, single, runs=self._runs(variants, single)).items()}
        rows = []
        for label, result in built.items():
            outputs = mixed_precision.run_outputs(result.model, feeds, candidate=True)  # the float model ran feeds
            # nan: no output to compare (strings, sequences), so the floor cannot be checked
            cosine = mixed_precision.output_cosine(reference, outputs, unscored=float("nan"))
            rows.append({"format": label, "ms": round(times[label], 4), "float_ms": round(times["float"], 4),
                         "speedup": round(times["float"] / times[label], 3),
                         "cosine": round(cosine, 6) if np.isfinite(cosine) else None})
        eligible = [r for r in rows if r["cosine"] is not None and r["cosine"] >= self.config.min_cosine
                    and r["speedup"] >= 1 + MARGIN]
        if not eligible:
            reason = ("no format both faster and within the cosine floor" if rows else
                      f"nothing to quantize (no MatMul, Gemm or Conv either format takes){unreached_weights(model)}")
            tried = ", ".join(f"{r['format']} {r['speedup']}x float's speed, cos {r['cosine']}" for r in rows)
            # a details warning: the CLI prints it and the JSON report lists it (also under -q)
            return PassResult(model, modified=False, stats={"formats_tried": len(rows)},
                              details=[{**r, "chosen": False, "rejected": _rejection(r, self.config.min_cosine)}
                                       for r in rows] + unmatched_selections(model, self.config.include, self.config.exclude)
                                      + [{"kept_float": reason},
                                                         {"warning": f"model left float32: {reason}"
                                                                     + (f" ({tried})" if tried else "")}])
        best = max(eligible, key=lambda r: r["speedup"])
        final = built[best["format"]]
        _adopt(model, final.model)  # the measured model itself: building it again cost YOLOv8n 5 s
        details = [{**r, "chosen": r is best} for r in rows] + final.details
        return PassResult(model, modified=True, details=details,
                          stats={**final.stats, "formats_tried": len(rows), "speedup_measured": best["speedup"]})

    def _runs(self, variants: dict[str, bytes], feeds: dict[str, np.ndarray]) -> int:
        """``latency_runs``, or more for a fast model: at least ``TIMED_MS`` of calls per variant,
        since sub-millisecond medians from 30 calls are mostly noise (vit_tiny: 0.2 ms a call)."""
        probe = float(np.median(time_round_robin({"float": variants["float"]}, feeds, runs=6)["float"]))
        return int(min(MAX_RUNS, max(self.config.latency_runs, TIMED_MS / max(probe, 1e-3))))

    def _candidates(self) -> dict:
        config, shared = self.config, {"per_channel": self.config.per_channel, "include": self.config.include,
                                       "exclude": self.config.exclude}
        candidates = {"dynamic": QuantizeDynamic(QuantizeDynamicConfig(**shared))}
        if self.context.calibration is not None:
            static = QuantizeStatic(QuantizeStaticConfig(method=config.method, **shared), context=self.context)
            candidates = {"static": static, **candidates}
        return candidates


def _adopt(model: ir.Model, built: ir.Model) -> None:
    """Make ``model`` (the object the pass manager holds) the candidate built from its clone."""
    model.graph = built.graph  # with its opset imports (static may have converted the opset)
    model.ir_version = built.ir_version
    model.functions.clear()
    model.functions.update(built.functions)


def _random_feeds(model: ir.Model) -> dict[str, np.ndarray]:
    """One seeded sample per input when there is no calibration data (dynamic is then the only candidate)."""
    rng, feeds = np.random.default_rng(0), {}
    for value in model.graph.inputs:
        try:  # a 1x1 image is no shape to time a detector at (YOLOv8n's Concat refuses it)
            shape = resolve_shape(value, {}, default_batch=1)
        except ConfigError as exc:
            raise ConfigError(f"without calibration data, {exc.message} (or give --calibration-data)") from None
        dtype = value.dtype.numpy() if value.dtype is not None else np.float32
        # the harness's generator: masks of ones, token ids 0..7; all-zero masks zeroed every output,
        # and every format then matched float exactly
        feeds[value.name] = random_array(rng, shape, np.dtype(dtype), value.name)
    return feeds


def _rejection(row: dict, min_cosine: float) -> str:
    """Why a built format was not chosen (PP-OCRv4 det: static ran 1.26x faster at cosine 0.9755)."""
    reasons = []
    if row["cosine"] is None:
        reasons.append("accuracy not measurable (no float, integer or bool output to compare)")
    elif row["cosine"] < min_cosine:
        reasons.append(f"cosine {row['cosine']} < {min_cosine}")
    if row["speedup"] < 1 + MARGIN:
        reasons.append(f"speedup {row['speedup']}x < {1 + MARGIN:g}x")
    return "; ".join(reasons)
