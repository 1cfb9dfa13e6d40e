"""Data-aware reconstruction: least-squares refit of pruned layers to the unpruned model's outputs.

For each layer, in graph order, the calibration data runs through the unpruned reference model
(target Y: the layer's output, restricted to the output channels that survive) and through the
pruned model as refit so far (X: the layer's input, so earlier refits' errors are compensated).
Only the normal equations X^T X and X^T Y are kept, accumulated batch by batch.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxslim.passes.pruning._calib import stream_captures
from onnxslim.passes.pruning._layers import Layer, as_layer, replace_weight

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RefitTarget:
    output: str
    """Name of the layer's output value (the same in the reference and the pruned model)."""
    kept_out: np.ndarray | None = None
    """Reference output channels that survive pruning (None: all)."""
    masked: bool = False
    """Keep the weight's zero pattern (unstructured / N:M pruning)."""


def refit_layers(model: ir.Model, reference: ir.Model, targets: Sequence[RefitTarget], calibration: Iterable, *,
                 damping: float, max_rows: int) -> list[dict]:
    """Refits each target in place; one report row per target."""
    producers = {o.name: node for node in model.graph for o in node.outputs}
    rows = []
    for index, target in enumerate(targets):
        layer, _ = as_layer(producers[target.output]) if target.output in producers else (None, None)
        reason = _unsupported(layer)
        if reason:
            rows.append({"layer": target.output, "refit": "skipped", "reason": reason})
            continue
        normal = _accumulate(model, reference, layer, target, calibration, max_rows=max_rows, seed=index)
        rows.append(_solve_and_store(layer, target, normal, damping))
    return rows


def _unsupported(layer: Layer | None) -> str | None:
    if layer is None:
        return "not a Conv/Gemm/MatMul with a constant weight"
    node = layer.node
    if layer.kind == "conv":
        auto_pad = node.attributes.get("auto_pad")
        if layer.group != 1:
            return "grouped convolution"
        if len(layer.weight.shape) != 4:
            return "only 2-D convolutions are refit"
        if auto_pad is not None and auto_pad.value not in ("NOTSET", ""):
            return "auto_pad convolution"
    if layer.kind == "gemm" and any(node.attributes[a].value != 1.0 for a in ("alpha", "beta") if a in node.attributes):
        return "Gemm with alpha/beta != 1"
    return None


def _bias(layer: Layer) -> ir.Value | None:
    node = layer.node
    if layer.kind == "matmul" or len(node.inputs) < 3 or node.inputs[2] is None:
        return None
    bias = node.inputs[2]
    if bias.const_value is None or len(bias.uses()) != 1 or bias.const_value.size != layer.rows().shape[0]:
        return None
    return bias


def _accumulate(model, reference, layer: Layer, target: RefitTarget, calibration, *, max_rows: int, seed: int):
    rng = np.random.default_rng(seed)
    x_name, y_name = layer.node.inputs[0].name, target.output
    with_bias = _bias(layer) is not None
    xtx = xty = None
    yty = 0.0
    pairs = zip(stream_captures(model, [x_name], calibration), stream_captures(reference, [y_name], calibration))
    for xs, ys in pairs:
        x, y = _design(layer, xs[x_name]), _targets(layer, ys[y_name])
        if target.kept_out is not None:
            y = y[:, target.kept_out]
        if len(x) > max_rows:
            pick = rng.choice(len(x), max_rows, replace=False)
            x, y = x[pick], y[pick]
        if with_bias:
            x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
        xtx = x.T @ x if xtx is None else xtx + x.T @ x
        xty = x.T @ y if xty is None else xty + x.T @ y
        yty += float(np.sum(y * y))
    return xtx, xty, yty


def _design(layer: Layer, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64, copy=False)
    if layer.kind == "conv":
        return im2col(x, layer.node, layer.weight.shape)
    return x.reshape(-1, x.shape[-1])


def _targets(layer: Layer, y: np.ndarray) -> np.ndarray:
    y = y.astype(np.float64, copy=False)
    if layer.kind == "conv":
        return np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])
    return y.reshape(-1, y.shape[-1])


def im2col(x: np.ndarray, node: ir.Node, weight_shape) -> np.ndarray:
    """[N, C, H, W] -> [N * OH * OW, C * kh * kw] in the (C, kh, kw) order of a Conv weight's rows."""
    kh, kw = int(weight_shape[2]), int(weight_shape[3])
    attr = lambda name, default: tuple(node.attributes[name].value) if name in node.attributes else default  # noqa: E731
    sh, sw = attr("strides", (1, 1))
    dh, dw = attr("dilations", (1, 1))
    pt, pl, pb, pr = attr("pads", (0, 0, 0, 0))
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    patches = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # [N, C, OH, OW, kh, kw]
    n, c, oh, ow = patches.shape[:4]
    return patches.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)


def _solve_and_store(layer: Layer, target: RefitTarget, normal, damping: float) -> dict:
    xtx, xty, yty = normal
    if xtx is None:
        return {"layer": layer.name, "refit": "skipped", "reason": "no calibration batches"}
    rows = layer.rows().astype(np.float64)
    bias = _bias(layer)
    ridge = damping * float(np.mean(np.diag(xtx))) + 1e-12
    reg = xtx + ridge * np.eye(len(xtx))
    if target.masked:
        current = np.concatenate([rows, bias.const_value.numpy()[:, None]], 1) if bias is not None else rows
        solution = _masked_solve(reg, xty, rows != 0, with_bias=bias is not None, start=current)
    else:
        solution = np.linalg.solve(reg, xty).T
    new_rows = solution[:, :rows.shape[1]]
    current = np.concatenate([rows, bias.const_value.numpy()[:, None]], 1) if bias is not None else rows
    before, after = _fit_error(xtx, xty, yty, current), _fit_error(xtx, xty, yty, solution)
    if after >= before:
        return {"layer": layer.name, "refit": "kept", "reason": "refit did not lower the error", "rel_error": round(before, 5)}
    replace_weight(layer.weight, layer.from_rows(new_rows, layer.array().shape))
    if bias is not None:
        replace_weight(bias, solution[:, -1])
    return {"layer": layer.name, "refit": "done", "rel_error_before": round(before, 5), "rel_error_after": round(after, 5)}


def _masked_solve(reg: np.ndarray, xty: np.ndarray, mask: np.ndarray, *, with_bias: bool, start: np.ndarray,
                  iterations: int = 200, tolerance: float = 1e-10) -> np.ndarray:
    """Per output row, least squares over that row's surviving weights: projected conjugate gradients,
    all rows at once (matrix-matrix products), warm-started from the current weights."""
    keep = np.concatenate([mask, np.ones((len(mask), 1), dtype=bool)], 1) if with_bias else mask
    keep = keep.astype(np.float64)
    w = start * keep
    residual = (xty.T - w @ reg) * keep
    direction = residual.copy()
    norm = np.einsum("od,od->o", residual, residual)
    target = tolerance * max(float(np.einsum("do,do->", xty, xty)), 1e-30)
    for _ in range(iterations):
        if norm.sum() <= target:
            break
        product = (direction @ reg) * keep
        curvature = np.einsum("od,od->o", direction, product)
        step = np.divide(norm, curvature, out=np.zeros_like(norm), where=curvature > 0)
        w += step[:, None] * direction
        residual -= step[:, None] * product
        new_norm = np.einsum("od,od->o", residual, residual)
        direction = residual + np.divide(new_norm, norm, out=np.zeros_like(norm), where=norm > 0)[:, None] * direction
        norm = new_norm
    return w


def _fit_error(xtx: np.ndarray, xty: np.ndarray, yty: float, w: np.ndarray) -> float:
    """||X W^T - Y||^2 / ||Y||^2, from the normal equations alone."""
    quad = np.einsum("od,de,oe->", w, xtx, w) - 2 * np.einsum("do,od->", xty, w)
    return float(max(yty + quad, 0.0) / yty) if yty > 0 else 0.0
