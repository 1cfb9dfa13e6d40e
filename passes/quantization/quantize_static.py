"""Static int8 quantization in QDQ form, ranges from streamed calibration."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.input_shapes import batch_axis_is_dynamic
from onnxslim.passes.quantization import mixed_precision, plan as planning, smoothing
from onnxslim.passes.quantization.bias_correction import correct_biases
from onnxslim.passes.quantization.calibrate import tensor_statistics
from onnxslim.passes.quantization.common import refused, tensor_dtypes, unmatched_selections
from onnxslim.passes.quantization.embedding import quantize_embeddings
from onnxslim.passes.quantization.opset import per_channel_opset
from onnxslim.passes.quantization.qdq import NAMES_KEY, WEIGHTS_KEY, activation_params, insert_qdq, quantize_layer, quantize_operand
from onnxslim.passes.quantization.hard_swish import hard_swish_use
from onnxslim.passes.quantization.ranges import silu_low, tensor_range
from onnxslim.passes.quantization.rescaled import Rescaling

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantizeStaticConfig:
    method: Literal["minmax", "percentile", "entropy", "mse"] = "mse"
    """How activation ranges are chosen from the calibration histograms (mse: as accurate as the
    others on the digits models, the best on YOLOv8n; see docs/quantization.md)."""
    percentile: float = 99.99
    per_channel: bool = True
    """Per-output-channel int8 weight scales (DequantizeLinear with an axis needs opset >= 13)."""
    upgrade_opset: bool = True
    """With ``per_channel`` on an opset < 13 model: convert it to opset 13 (reported) rather than
    fall back to per-tensor weights, which lose small channels."""
    activations: Literal["uint8", "int8"] = "uint8"
    symmetric_activations: bool = False
    include: tuple[str, ...] = ()
    """Only these node names / op types are quantized (all eligible ones when empty)."""
    exclude: tuple[str, ...] = ()
    """Node names / op types kept float."""
    min_cosine: float | None = None
    """Automatic mixed precision: keep the most error-prone tensors float until every output's
    cosine similarity to the float model (on the first calibration samples) reaches this; an
    output made by a Concat (a detector's boxes + scores) is judged part by part."""
    max_accuracy_drop: float | None = None
    """Automatic mixed precision against labels: keep the most error-prone tensors float until
    top-1 accuracy on the labelled calibration samples is at most this much below float's
    (0.01 = one point). Needs ``labels`` in the calibration data; combines with ``min_cosine``."""
    detector_min_cosine: float | None = 0.9999
    """Mixed-precision floor applied by default to detectors (graphs with per-scale head branches,
    ``plan.head_branches``) when no ``min_cosine`` / ``max_accuracy_drop`` is given: their outputs
    are judged by rare extremes, which a 0.99988 output cosine already loses. It holds the cosine of
    each whole output (on YOLOv8n dominated by box coordinates): measured on YOLOv8n over four
    calibration sets it kept 5 tensors float and F1 at score 0.05 >= 0.925 every time, where a
    floor on the class scores' own cosine (0.98) kept 0-7 and gave 0.894-0.928
    (docs/quantization.md). None turns it off."""
    sensitivity_samples: int = 16
    """Calibration samples used by the sensitivity ranking, mixed-precision search and bias correction."""
    accuracy_samples: int = 512
    """Labelled calibration samples on which ``max_accuracy_drop`` is checked."""
    sensitivity_refine: int = 0
    """Mixed precision: the first this many tensors of the noise ranking are re-ranked by their
    measured effect on the outputs (one quantized copy and run each, with that tensor alone float)."""
    smoothing_alpha: float = 0.75
    """Activation smoothing (``smoothing.py``): where a ``Mul`` by a constant feeds only MatMuls
    (GELU's ``* 0.5``), channels of its output with outliers are divided by
    ``max|X|^alpha / max|W|^(1-alpha)`` and the weight rows multiplied by it; 0 turns it off.
    MiniLM embedding cosine (everyday / documentation sentences): 0.992 / 0.991 off, 0.990 /
    0.991 at 0.5, 0.9925 / 0.9944 at 0.75, 0.992 / 0.994 at 0.85."""
    activation_matmuls: bool = False
    """Also quantize MatMuls whose operands are both activations (attention); off because int8 was
    a few percent slower there on ONNX Runtime's CPU EP, for no accuracy gain (docs/quantization.md)."""
    constant_operands: bool = False
    """Also quantize Add/Mul with a small constant operand and HardSigmoid, as ORT's quantizer does:
    on PP-OCRv4 det that matched ORT's speed (1.06-1.19x vs its 1.12-1.14x float) but cost accuracy
    (text-mask IoU 0.959 -> 0.936; rec strings 32% -> 28%), so it is off by default."""
    embeddings: bool = True
    """Large constant Gather tables (token embeddings) become int8 rows with per-row scales (``embedding.py``)."""
    bias_correction: bool = True
    """Lower each Conv/Gemm int32 bias by the mean shift int8 weights add to its output channel (one
    more run over ``sensitivity_samples``). On: better on every real conv net measured (YOLOv8n
    F1@0.25 +0.003 to +0.021, PP-OCRv4 det/rec; docs/quantization.md)."""

    def __post_init__(self):
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")
        for name in ("min_cosine", "detector_min_cosine"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop < 1.0:
            raise ValueError(f"max_accuracy_drop must be in [0, 1) (0.01 = one point), got {self.max_accuracy_drop}")
        if not 0.0 <= self.smoothing_alpha < 1.0:
            raise ValueError(f"smoothing_alpha must be in [0, 1) (0: off), got {self.smoothing_alpha}")
        if self.sensitivity_samples < 1 or self.accuracy_samples < 1 or self.sensitivity_refine < 0:
            raise ValueError("sensitivity_samples and accuracy_samples must be >= 1, sensitivity_refine >= 0")

    @property
    def mixed_precision(self) -> bool:
        return self.min_cosine is not None or self.max_accuracy_drop is not None


class QuantizeStatic(Pass):
    """Quantize Conv/MatMul/Gemm and their neighbours to int8 with QuantizeLinear/DequantizeLinear pairs.

    Before: ``x -> Conv(W, B) -> Relu -> MaxPool``. After: ``x -> Q -> DQ -> Conv(DQ(W int8
    per-channel), DQ(B int32)) -> Q -> DQ -> MaxPool -> Q -> DQ`` (Relu absorbed by the uint8
    Q whose zero point is 0), which ONNX Runtime's CPU EP runs as QLinearConv + int8 MaxPool.
    Activation ranges come from the calibration data (``--calibration-data``); which ops stay
    float and why is listed in the details (see ``plan.py`` for the rules).
    """

    name = "quantize-static"
    Config = QuantizeStaticConfig
    lossy = True
    needs_calibration = True

    def call(self, model: ir.Model) -> PassResult:
        if (unchanged := refused(model, self.name)) is not None:
            return unchanged
        config, dtypes = self.config, tensor_dtypes(model)
        unmatched = unmatched_selections(model, config.include, config.exclude)
        plan = self._plan(model.graph, dtypes)
        if not plan.quantized:
            return PassResult(model, modified=False, details=unmatched + _float_rows(plan))
        upgraded = per_channel_opset(model, config.per_channel, config.upgrade_opset)
        if any("declined" in row for row in upgraded):  # the model is as it came: no QDQ op at its opset
            return PassResult(model, modified=False, stats={"skipped": 1}, details=upgraded)
        if any("opset_converted" in row for row in upgraded):  # a new graph: plan it again
            dtypes = tensor_dtypes(model)
            plan = self._plan(model.graph, dtypes)
        goal = self._goal(plan)
        started = time.perf_counter()
        smoothed, stats = self._calibrate(model, plan, goal is not None)
        calibration_s = time.perf_counter() - started
        # smoothed activations were renamed; they are float32 (their MatMul readers are quantized)
        dtypes.update({row["smoothed"]: ir.DataType.FLOAT for row in smoothed})
        keep, rows, final_check = frozenset(), [], None
        if goal is not None:
            keep, rows, final_check = mixed_precision.search(
                model, lambda floats: self._apply(model.clone(), dtypes, stats, floats)[2:], self.context.calibration,
                goal=goal, samples=config.sensitivity_samples, accuracy_samples=config.accuracy_samples,
                refine=config.sensitivity_refine)
        reference = model.clone() if config.bias_correction else None
        total = _weight_elements(model)
        plan, weights, _, params = self._apply(model, dtypes, stats, keep)
        fraction = sum(row["weight_elements"] for row in weights) / total if total else 0.0
        rows += _kept_float_warnings(keep, plan, fraction)
        embeddings, finished = self._finish(model, reference, final_check)
        rows += finished
        cached = [{"calibration_cache": stats.cache}] if getattr(stats, "cache", "") else []
        details = unmatched + upgraded + cached + smoothed + weights + embeddings + _float_rows(plan) + rows
        return PassResult(model, modified=True, details=details, stats={
            "nodes_quantized": len(plan.quantized), "activations_absorbed": len(plan.absorbed),
            "tensors_quantized": len(params), "weights_quantized": len(weights), "kept_float": len(plan.kept_float),
            "weight_elements_quantized_fraction": round(fraction, 4), "calibration_s": round(calibration_s, 3),
            "calibration_samples": getattr(stats, "samples", 0),
            **({"tensors_kept_float_by_sensitivity": len(keep)} if goal is not None else {}),
            **({"activations_smoothed": len(smoothed)} if smoothed else {}),
            **({"embeddings_quantized": sum("kept_float" not in r for r in embeddings)} if embeddings else {}),
            **({"opset_converted": 1} if any("opset_converted" in row for row in upgraded) else {}),
            **({"biases_corrected": sum("bias_corrected" in r for r in rows)} if config.bias_correction else {})})

    def _finish(self, model: ir.Model, reference: ir.Model | None, final_check) -> tuple[list[dict], list[dict]]:
        """The steps after the QDQ rewrite: int8 embedding tables, bias correction against
        ``reference`` (the float model), mixed precision's check of the written model; (embedding rows, other rows)."""
        config, rows = self.config, []
        embeddings = quantize_embeddings(model.graph, include=config.include, exclude=config.exclude) if config.embeddings else []
        if any("kept_float" not in r for r in embeddings):
            ir.passes.common.RemoveUnusedNodesPass()(model)  # drops the float tables
        if reference is not None:
            rows += correct_biases(reference, model, mixed_precision.subset(
                self.context.calibration, config.sensitivity_samples, splittable=batch_axis_is_dynamic(reference)))
        if final_check is not None:
            rows += final_check(model)
        return embeddings, rows

    def _apply(self, model: ir.Model, dtypes, stats, float_tensors: frozenset[str]):
        """Quantizes ``model`` in place; returns (plan, weight rows, model, {float tensor name: (scale, zero)}).

        ``float_tensors``: activation names that must stay float (mixed precision); every node
        that would need them quantized stays float too.
        """
        config, graph = self.config, model.graph
        graph.meta.pop(NAMES_KEY, None)  # clones share meta: start a fresh name registry
        graph.meta.pop(WEIGHTS_KEY, None)
        plan = self._plan(graph, dtypes, float_tensors)
        for activation, producer in plan.absorbed.items():
            activation.outputs[0].replace_all_uses_with(producer.outputs[0])
            graph.remove(activation, safe=True)
        params = self._params(plan, stats)
        weights = self._rewrite(graph, plan, params, per_channel=config.per_channel and _opset(model) >= 13)
        ir.passes.common.RemoveUnusedNodesPass()(model)
        graph.meta.pop(NAMES_KEY, None)
        graph.meta.pop(WEIGHTS_KEY, None)
        return plan, weights, model, {_reference(plan, v): p for v, p in params.items()}

    def _goal(self, plan: planning.Plan) -> mixed_precision.Goal | None:
        """The mixed-precision goal: the user's, else the detector default when the graph has head branches."""
        config = self.config
        if config.mixed_precision:
            return mixed_precision.Goal(config.min_cosine, config.max_accuracy_drop)
        if config.detector_min_cosine is not None and plan.branches:
            logger.info("quantize-static: detection head branches found; mixed precision to output cosine %s "
                        "(detector_min_cosine)", config.detector_min_cosine)
            return mixed_precision.Goal(config.detector_min_cosine, None, per_part=False)
        return None

    def _plan(self, graph: ir.Graph, dtypes, float_tensors: frozenset[str] = frozenset()) -> planning.Plan:
        config = self.config
        return planning.make_plan(graph, dtypes, include=config.include, exclude=config.exclude,
                                  absorb=not config.symmetric_activations, float_tensors=float_tensors,
                                  activation_matmuls=config.activation_matmuls,
                                  constant_operands=config.constant_operands)

    def _calibrate(self, model: ir.Model, plan: planning.Plan, keep_absorbed: bool) -> tuple[list[dict], dict]:
        """Smooths ``model``'s outlier activations in place and calibrates it: (smoothing rows, statistics).

        ``keep_absorbed``: mixed precision may keep a Relu float, leaving its producer's raw output to range.
        Smoothing's channel maxima come from the same run as the statistics (``rescaled.py``), or
        from the calibration cache with them.
        """
        config = self.config
        sites = smoothing.find_sites(model.graph, set(plan.quantized)) if config.smoothing_alpha > 0 else []
        decided: dict[str, tuple[smoothing.Site, np.ndarray, np.ndarray]] = {}

        def divisor(site: smoothing.Site):
            def decide(activation_max: np.ndarray):
                scale = smoothing.divisors(site, activation_max, config.smoothing_alpha)
                if scale is not None:
                    decided[site.value.name] = (site, scale, activation_max)
                return scale
            return decide

        label = f"smoothing alpha={config.smoothing_alpha}"
        rescaled = {site.value.name: Rescaling(config.sensitivity_samples, divisor(site), label) for site in sites}
        stats = self._statistics(model, _range_sources(plan, keep_absorbed), rescaled)
        # all taken out before any rename: a site's new name may be another site's old one
        moved = {name: stats.pop(name) for name in decided}
        rows = [smoothing.rewrite(model.graph, site, scale, activation_max)
                for site, scale, activation_max in decided.values()]
        for name, (site, _, _) in decided.items():
            stats[site.value.name] = moved[name]
        return rows, stats

    def _statistics(self, model: ir.Model, tensors: list[str], rescaled: dict[str, Rescaling] | None = None):
        context = self.context
        return tensor_statistics(model, context.calibration, tensors, minmax_only=self.config.method == "minmax",
                                 cache=getattr(context, "calibration_cache", None), progress=context.progress,
                                 rescaled=rescaled)

    def _params(self, plan: planning.Plan, stats) -> dict[ir.Value, tuple]:
        """Scale and zero point per quantized tensor, in graph order (shared ops copy their input's).

        Runs after absorbed activations are removed: their producer's output takes their range.
        """
        config, params = self.config, {}
        source = {producer.outputs[0]: act.outputs[0].name for act, producer in plan.absorbed.items()}

        def own(value: ir.Value):
            found = stats[source.get(value, value.name)]
            # Head outputs (class logits, box distributions) and the branches computing them are
            # not clipped: their rare extremes are the detections (YOLOv8's class logits are
            # positive for < 0.01% of anchors). Clipping the branches biased YOLOv8n's scores
            # down (mean signed score error -0.027 clipped, -0.007 not; docs/quantization.md).
            method = "minmax" if plan.in_head(value) else config.method
            low, high = tensor_range(found, method, percentile=config.percentile)
            if value in source:
                # the range of the Relu / Clip(a <= 0, b) output, holding 0: Relu and Clip(0, b) then
                # clamp exactly at the grid's bottom, a Clip(a < 0, b) to half a step
                low = min(low, 0.0)
            elif planning.feeds_only_silu(value):
                low = silu_low(found, low, high)
            elif (use := hard_swish_use(value)) is not None:  # below it, every value gives 0
                low = max(low, min(use.lower_bound(high), high))
            return activation_params(low, high, config.activations, symmetric=config.symmetric_activations)

        for node in plan.quantized:
            for value in planning.activation_inputs(node):
                if value not in params:
                    params[value] = own(value)
            for value in plan.quantized_outputs(node):
                shared = node.op_type in planning.SHARED
                params[value] = params[node.inputs[0]] if shared else own(value)
        return params

    def _rewrite(self, graph: ir.Graph, plan: planning.Plan, params, *, per_channel: bool) -> list[dict]:
        """Weights to int8, and a Q/DQ pair per quantized activation. Readers of a float op's output
        that stay float keep reading the exact value: only a quantized producer needs every reader
        behind its QuantizeLinear (ORT fuses it only then), and rounding the others (MiniLM's
        residual stream after each LayerNorm) would only add error."""
        rows = []
        for node in plan.quantized:
            if node.op_type in planning.COMPUTE and planning.is_constant(node.inputs[1]):
                rows.append(quantize_layer(graph, node, params[node.inputs[0]][0], per_channel))
            elif node.op_type in planning.BINARY or node.op_type == "Concat":
                # a Concat's constant part goes onto the output's grid, where its Q would put it anyway
                grid = params.get(node.outputs[0]) if node.op_type == "Concat" else None
                for index, operand in enumerate(node.inputs):
                    if planning.is_constant(operand):
                        quantize_operand(graph, node, index, self.config.activations, grid)
        quantized = set(plan.quantized)
        for value, (scale, zero) in params.items():
            insert_qdq(graph, value, scale, zero, readers=None if value.producer() in quantized else quantized)
        return rows


def _kept_float_warnings(keep: frozenset[str], plan: planning.Plan, fraction: float) -> list[dict]:
    """Details warnings (the CLI prints them, the JSON report lists them) when mixed precision kept
    so much float that the model is not, or hardly, quantized."""
    if keep and not plan.quantized:
        return [{"warning": "mixed precision kept every layer float to meet the goal: the model is not "
                            "quantized (lower --quantize-min-cosine, or give more calibration data)"}]
    if keep and fraction < 0.75:
        return [{"warning": f"mixed precision left {100 * (1 - fraction):.0f}% of the weights float; the "
                            "model may run no faster than float (measure with --latency RUNS)"}]
    return []


def _weight_elements(model: ir.Model) -> int:
    """Elements of the constant weights of every Conv/MatMul/Gemm (what int8 could shrink), a weight
    shared by several layers once (as the report rows count it)."""
    weights = {n.inputs[1]: ir.convenience.get_const_tensor(n.inputs[1]) for n in model.graph
               if n.op_type in planning.COMPUTE and len(n.inputs) > 1 and planning.is_constant(n.inputs[1])}
    return int(sum(np.prod(w.shape) for w in weights.values()))


def _range_sources(plan: planning.Plan, keep_absorbed: bool = False) -> list[str]:
    """The tensors to calibrate; ``keep_absorbed``: also the raw outputs of absorbed activations'
    producers (mixed precision may keep a Relu float, leaving that output to range)."""
    absorbed = {producer.outputs[0]: act.outputs[0].name for act, producer in plan.absorbed.items()}
    names = []
    for node in plan.quantized:
        names.extend(v.name for v in planning.activation_inputs(node))
        if node.op_type not in planning.SHARED:
            names.extend(absorbed.get(v, v.name) for v in plan.quantized_outputs(node))
    if keep_absorbed:
        names.extend(producer.outputs[0].name for producer in plan.absorbed.values())
    return list(dict.fromkeys(names))


def _reference(plan: planning.Plan, value: ir.Value) -> str:
    """The float model's name for the tensor that ``value``'s QuantizeLinear stands for."""
    for activation, producer in plan.absorbed.items():
        if producer.outputs[0] is value:
            return activation.outputs[0].name
    return value.name


def _float_rows(plan: planning.Plan) -> list[dict]:
    """One row per reason, listing the nodes kept float for it."""
    grouped: dict[str, list[str]] = {}
    for name, reason in plan.kept_float:
        grouped.setdefault(reason, []).append(name)
    return [{"kept_float": reason, "count": len(names), "nodes": names} for reason, names in grouped.items()]


def _opset(model: ir.Model) -> int:
    return model.opset_imports.get("", 1)
