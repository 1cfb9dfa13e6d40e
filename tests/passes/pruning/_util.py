"""Helpers for the pruning tests: zeroed channels, weights and runs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxslim.core.pass_base import PassContext
from onnxslim.data.readers import DataBatch
from tests.helpers import rng


def conv_weights(r, out, cin, k=3):
    return r.standard_normal((out, cin, k, k)).astype(np.float32) * 0.3


def zero_rows(weights: dict, names, channels) -> dict:
    """Zero ``channels`` along axis 0 of each named tensor (producer rows, biases, BN shift/mean)."""
    for name in names:
        weights[name] = weights[name].copy()
        weights[name][list(channels)] = 0
    return weights


def shape_of(model: ir.Model, name: str) -> tuple:
    return tuple(model.graph.initializers[name].const_value.shape)


def feeds(shape, seed=1) -> dict:
    return {"x": rng(seed).standard_normal(shape).astype(np.float32)}


def calibration(shape, batches=4, seed=2) -> PassContext:
    r = rng(seed)
    return PassContext(calibration=[DataBatch({"x": r.standard_normal(shape).astype(np.float32)}) for _ in range(batches)])
