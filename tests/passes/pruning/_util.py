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


RESIDUAL_BLOCK = """g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    a = Conv <pads = [1, 1, 1, 1]> (x, wa, ba)
    ra = Relu (a)
    b = Conv <pads = [1, 1, 1, 1]> (ra, wb, bb)
    s = Add (b, ra)
    rs = Relu (s)
    y = Conv <pads = [1, 1, 1, 1]> (rs, wc)
}"""
"""a and b coupled by the residual Add (one group of 8 channels), y the head."""


def residual_weights(zero_channels) -> dict:
    """Weights of ``RESIDUAL_BLOCK`` with ``zero_channels`` of the coupled group zeroed (seed 1)."""
    r = rng(1)
    w = {"wa": conv_weights(r, 8, 3), "ba": r.standard_normal(8).astype(np.float32),
         "wb": conv_weights(r, 8, 8), "bb": r.standard_normal(8).astype(np.float32), "wc": conv_weights(r, 4, 8)}
    return zero_rows(w, ["wa", "ba", "wb", "bb"], zero_channels)

