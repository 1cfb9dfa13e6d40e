"""Which nodes float16's range rules out: values or weights beyond what float16 holds.

ORT's CPU EP computes most float16 ops in float32, so an overflow that a GPU run turns into inf
passes validation on CPU; ``convert-fp16`` keeps these nodes float32 instead.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

FLOAT16_MAX = 65504.0
RANGE_HEADROOM = 2.0
"""A node stays float32 when a float input or output reaches ``FLOAT16_MAX / RANGE_HEADROOM`` on
the calibration data (a few samples: others may go higher), or when it reads a weight beyond
``FLOAT16_MAX`` (the converter would clip it)."""
RANGE_SAMPLES = 16
SENTINEL = 1e30
"""Magnitudes from here up are masking sentinels (float32's lowest standing for minus infinity in
attention masks: MiniLM's ``(1 - mask) * -3.4e38``); the converter clips them to -65504, which
still masks, so they keep nothing float32."""


def out_of_range_nodes(model: ir.Model, calibration) -> dict[ir.Node, str]:
    """Main-graph nodes to keep float32 for float16's range, with the reason. Values are checked
    only with ``calibration``."""
    found: dict[ir.Node, str] = {}
    for node in model.graph:
        for value in node.inputs:
            weight = ir.convenience.get_const_tensor(value) if value is not None and value.is_initializer() else None
            if weight is not None and weight.dtype == ir.DataType.FLOAT:
                largest = float(np.abs(weight.numpy()).max(initial=0.0))
                if FLOAT16_MAX < largest < SENTINEL:
                    found[node] = f"reads weight {value.name!r} of magnitude {largest:.3g} (float16 max {FLOAT16_MAX:g})"
    if calibration is not None:
        extremes = _float_extremes(model, calibration)
        limit = FLOAT16_MAX / RANGE_HEADROOM
        for node in model.graph:
            if node in found:
                continue
            for value in (*node.inputs, *node.outputs):
                if value is not None and limit <= extremes.get(value.name, 0.0) < SENTINEL:
                    found[node] = (f"{value.name!r} reaches {extremes[value.name]:.3g} on the calibration data "
                                   f"(float16 max {FLOAT16_MAX:g})")
                    break
    return found


def _float_extremes(model: ir.Model, calibration) -> dict[str, float]:
    """max |x| of every float32 tensor of the main graph over the first ``RANGE_SAMPLES`` samples."""
    from onnxslim.input_shapes import batch_axis_is_dynamic
    from onnxslim.passes.quantization.calibrate import collect_statistics
    from onnxslim.passes.quantization.mixed_precision import subset

    typed = model.clone()
    ir.passes.common.ShapeInferencePass()(typed)
    names = [v.name for v in typed.graph.inputs if v.dtype == ir.DataType.FLOAT]
    names += [v.name for node in typed.graph for v in node.outputs if v.dtype == ir.DataType.FLOAT]
    if not names:
        return {}
    feeds = subset(calibration, RANGE_SAMPLES, splittable=batch_axis_is_dynamic(model))
    stats, _ = collect_statistics(model, feeds, names, histograms=())
    return {name: max(abs(s.minimum), abs(s.maximum)) for name, s in stats.items() if not s.empty}
