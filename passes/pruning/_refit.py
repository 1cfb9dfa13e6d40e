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
            rows.append({"layer": layer.name if layer else target.output, "refit": "skipped", "reason": reason})
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
        if len(layer.weight.shape) != 4:
            return "only 2-D convolutions are refit"
        if auto_pad is not None and auto_pad.value not in ("NOTSET", ""):
            return "auto_pad convolution"
    if layer.kind == "gemm" and any(node.attributes[a].value != 1.0 for a in ("alpha", "beta") if a in node.attributes):
        return "Gemm with alpha/beta != 1"
    if len(node.inputs) > 2 and node.inputs[2] is not None and _bias(layer) is None:
        # the target includes that bias (a computed residual C, a shared or broadcast constant) but the fit
        # would not: its error would be misjudged and the bias counted twice at run time
        return f"bias input {node.inputs[2].name} is not a per-channel constant of this layer alone"
    return None


def _bias(layer: Layer) -> ir.Value | None:
    node = layer.node
    if layer.kind == "matmul" or len(node.inputs) < 3 or node.inputs[2] is None:
        return None
    bias = node.inputs[2]
    if bias.const_value is None or len(bias.uses()) != 1 or bias.const_value.size != layer.rows().shape[0]:
        return None
    return bias


HOLD_EVERY = 5
"""Every 5th calibration row is held out: a refit is judged on rows it was not fitted to."""
RIDGE_SCALES = (1.0, 10.0, 100.0, 1000.0)
"""Multiples of ``damping`` tried (unmasked refits), the best on the held-out rows is kept."""


@dataclasses.dataclass
class Normal:
    """Normal equations of some rows, per convolution group: X^T X [G, d, d], X^T Y [G, d, o], ||Y||^2."""

    xtx: np.ndarray
    xty: np.ndarray
    yty: float
    rows: int

    def __add__(self, other: Normal) -> Normal:
        return Normal(self.xtx + other.xtx, self.xty + other.xty, self.yty + other.yty, self.rows + other.rows)


def _accumulate(model, reference, layer: Layer, target: RefitTarget, calibration, *, max_rows: int,
                seed: int) -> tuple[Normal, Normal] | None:
    """Normal equations of the fitted rows and of the held-out rows (every ``HOLD_EVERY``-th), or None.

    A grouped (or depthwise) Conv is G independent layers, each reading its own block of input
    channels, so its Gram matrix is block-diagonal and each block is fitted on its own.
    """
    rng = np.random.default_rng(seed)
    x_name, y_name = layer.node.inputs[0].name, target.output
    with_bias, groups = _bias(layer) is not None, layer.group
    parts, seen = None, 0
    # the unpruned reference runs each batch first: a batch it rejects is the data's fault (DataError), one that
    # only the pruned model rejects is the pass's (rolled back)
    pairs = zip(stream_captures(reference, [y_name], calibration),
                stream_captures(model, [x_name], calibration, candidate=True))
    for ys, xs in pairs:
        y = ys[y_name]
        count = int(np.prod(y.shape)) // y.shape[1 if layer.kind == "conv" else -1]
        pick = np.sort(rng.choice(count, max_rows, replace=False)) if count > max_rows else None
        x, y = _design(layer, xs[x_name], pick), _targets(layer, y, pick)
        if target.kept_out is not None:
            y = y[:, target.kept_out]
        x = x.reshape(len(x), groups, -1)
        if with_bias:
            x = np.concatenate([x, np.ones((len(x), groups, 1))], axis=2)
        x, y = x.transpose(1, 0, 2), y.reshape(len(y), groups, -1).transpose(1, 0, 2)
        held = (np.arange(x.shape[1]) + seen) % HOLD_EVERY == HOLD_EVERY - 1
        seen += x.shape[1]
        batch = tuple(_normal(x[:, rows], y[:, rows]) for rows in (~held, held))
        parts = batch if parts is None else (parts[0] + batch[0], parts[1] + batch[1])
    return parts


def _normal(x: np.ndarray, y: np.ndarray) -> Normal:
    xt = x.transpose(0, 2, 1)
    return Normal(xt @ x, xt @ y, float(np.sum(y * y)), x.shape[1])


def _design(layer: Layer, x: np.ndarray, pick: np.ndarray | None) -> np.ndarray:
    if layer.kind == "conv":
        return im2col(x, layer.node, layer.weight.shape, pick).astype(np.float64)
    x = x.reshape(-1, x.shape[-1])
    return (x if pick is None else x[pick]).astype(np.float64)


def _targets(layer: Layer, y: np.ndarray, pick: np.ndarray | None) -> np.ndarray:
    y = np.moveaxis(y, 1, -1) if layer.kind == "conv" else y
    y = y.reshape(-1, y.shape[-1])
    return (y if pick is None else y[pick]).astype(np.float64)


def im2col(x: np.ndarray, node: ir.Node, weight_shape, pick: np.ndarray | None = None) -> np.ndarray:
    """[N, C, H, W] -> [N * OH * OW, C * kh * kw] in the (C, kh, kw) order of a Conv weight's rows.

    With ``pick`` (flat indices into the N * OH * OW output positions) only those rows are built.
    """
    kh, kw = int(weight_shape[2]), int(weight_shape[3])
    attr = lambda name, default: tuple(node.attributes[name].value) if name in node.attributes else default  # noqa: E731
    sh, sw = attr("strides", (1, 1))
    dh, dw = attr("dilations", (1, 1))
    pt, pl, pb, pr = attr("pads", (0, 0, 0, 0))
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    patches = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # [N, C, OH, OW, kh, kw]
    n, c, oh, ow = patches.shape[:4]
    if pick is not None:
        i, r, q = np.unravel_index(pick, (n, oh, ow))
        return patches[i, :, r, q].reshape(len(pick), c * kh * kw)  # advanced indices first: [rows, C, kh, kw]
    return patches.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)


def _solve_and_store(layer: Layer, target: RefitTarget, parts: tuple[Normal, Normal] | None, damping: float) -> dict:
    """Fits on the fitted rows, keeps the refit only when it lowers the error on the held-out rows, then
    solves again on all rows. Judged on the rows it was fitted to, a layer with more inputs than rows
    (Flatten -> Gemm on few samples) interpolated them and passed, and did worse on new data."""
    if parts is None:
        return {"layer": layer.name, "refit": "skipped", "reason": "no calibration batches"}
    fit, held = parts
    if held.rows == 0 or held.yty <= 0:
        return {"layer": layer.name, "refit": "skipped",
                "reason": f"too few calibration rows ({fit.rows + held.rows}) to judge a refit on held-out rows"}
    groups, rows, bias = layer.group, layer.rows().astype(np.float64), _bias(layer)
    current = np.concatenate([rows, bias.const_value.numpy()[:, None]], 1) if bias is not None else rows
    current = current.reshape(groups, -1, current.shape[1])  # [G, out/G, d]
    keep = _keep_mask(rows != 0, groups, bias is not None) if target.masked else None
    held_before = _fit_error(held, current)
    held_after, scale, trial = min((_fit_error(held, w), scale, w) for scale, w in _trials(fit, current, keep, damping))
    full = fit + held
    before = _fit_error(full, current)
    if held_after >= held_before:
        return {"layer": layer.name, "refit": "kept", "reason": "refit did not lower the error on held-out rows",
                "rel_error": round(before, 5), "held_out_error": round(held_before, 5), "rows": full.rows}
    solution = _solve(full, current, keep, damping * scale, start=trial)
    after = _fit_error(full, solution)
    solution = solution.reshape(-1, solution.shape[2])
    replace_weight(layer.weight, layer.from_rows(solution[:, :rows.shape[1]], layer.array().shape))
    if bias is not None:
        replace_weight(bias, solution[:, -1])
    return {"layer": layer.name, "refit": "done", "rel_error_before": round(before, 5), "rel_error_after": round(after, 5),
            "held_out_error_before": round(held_before, 5), "held_out_error_after": round(held_after, 5),
            "damping": round(damping * scale, 6), "rows": full.rows}


def _trials(fit: Normal, current: np.ndarray, keep: np.ndarray | None, damping: float):
    """(damping scale, weights fitted on ``fit``) per ridge strength tried; the masked solve (iterative,
    the costly one) tries the configured damping only."""
    for scale in RIDGE_SCALES if keep is None else RIDGE_SCALES[:1]:
        yield scale, _solve(fit, current, keep, damping * scale, start=current)


def _solve(normal: Normal, current: np.ndarray, keep: np.ndarray | None, damping: float, *, start: np.ndarray) -> np.ndarray:
    """argmin ||X W^T - Y||^2 + lam ||W - current||^2, lam = damping * mean diag(X^T X); [G, o, d].

    The ridge pulls towards the current weights, not towards zero: where the rows do not determine
    a direction (fewer rows than inputs), the pruned layer's own weights stay."""
    xtx = normal.xtx
    ridge = damping * np.einsum("gii->g", xtx) / xtx.shape[1] + 1e-12
    reg = xtx + ridge[:, None, None] * np.eye(xtx.shape[1])
    rhs = normal.xty + ridge[:, None, None] * current.transpose(0, 2, 1)
    if keep is not None:
        return _masked_solve(reg, rhs, keep, start=start)
    return np.linalg.solve(reg, rhs).transpose(0, 2, 1)


def _keep_mask(mask: np.ndarray, groups: int, with_bias: bool) -> np.ndarray:
    """[G, out/G, d] weights free to move: the surviving ones, and the bias (never masked)."""
    keep = np.concatenate([mask, np.ones((len(mask), 1), dtype=bool)], 1) if with_bias else mask
    return keep.reshape(groups, -1, keep.shape[1])


def _masked_solve(reg: np.ndarray, xty: np.ndarray, keep: np.ndarray, *, start: np.ndarray,
                  iterations: int = 200, tolerance: float = 1e-8) -> np.ndarray:
    """Per output row, least squares over that row's surviving weights, for every group at once.

    Projected conjugate gradients on all rows together (batched matrix products with the group's
    shared Gram matrix), warm-started from the current weights. Shapes: reg [G, d, d], xty
    [G, d, o], keep and start [G, o, d]. The tolerance bounds the squared residual relative to
    ||X^T Y||^2; at 1e-8 the objective is within ~1e-6 (relative) of the exact per-row solve.
    """
    keep = keep.astype(np.float64)
    w = start * keep
    residual = (xty.transpose(0, 2, 1) - w @ reg) * keep
    direction = residual.copy()
    norm = np.einsum("god,god->go", residual, residual)
    target = tolerance * max(float(np.einsum("gdo,gdo->", xty, xty)), 1e-30)
    for _ in range(iterations):
        if norm.sum() <= target:
            break
        product = (direction @ reg) * keep
        curvature = np.einsum("god,god->go", direction, product)
        step = np.divide(norm, curvature, out=np.zeros_like(norm), where=curvature > 0)
        w += step[..., None] * direction
        residual -= step[..., None] * product
        new_norm = np.einsum("god,god->go", residual, residual)
        direction = residual + np.divide(new_norm, norm, out=np.zeros_like(norm), where=norm > 0)[..., None] * direction
        norm = new_norm
    return w


def _fit_error(normal: Normal, w: np.ndarray) -> float:
    """||X W^T - Y||^2 / ||Y||^2, from the normal equations alone (w: [G, o, d])."""
    quad = float(np.sum((w @ normal.xtx) * w)) - 2 * float(np.sum(normal.xty.transpose(0, 2, 1) * w))
    return float(max(normal.yty + quad, 0.0) / normal.yty) if normal.yty > 0 else 0.0
