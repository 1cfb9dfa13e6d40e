"""Output metrics of the split layers from their consumers (``downstream.py``) and calibration data.

``collect`` runs the model once over (a spread subset of) the fitted calibration batches and keeps,
per link, only small statistics: the per-head Gram of the other attention operand (query / key
links: H x d x d) or ``E[f'(h) f'(h)^T]`` of the elementwise activation between an FFN's two
weights (ffn: N x N; f' by central differences of the elementwise subgraph, run as its own
model). ``build`` turns them, with the consumer weights, into one N x N metric per layer.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir
from onnxslim.passes.lowrank.calibration import tapped_batches
from onnxslim.passes.lowrank.data_split import row_weights, weighted_gram
from onnxslim.passes.lowrank.downstream import Link
from onnxslim.passes.lowrank.sites import Group

from onnxslim.runtime import make_session
from onnxslim.runtime.data_runs import run_candidate

logger = logging.getLogger(__name__)

_STEP = 1e-2
"""Central-difference step for f' (float32 activations of order 1)."""


def collect(model: ir.Model, links: dict[int, Link], batches, *, mask: str | None = None) -> dict[int, dict]:
    """Per linked group index: its statistics: ``gram`` (query / key: H x d x d; ffn: N x N)."""
    taps = {link.tap for link in links.values() if link.role != "value"}
    if not taps:
        return {}
    slopes: dict[int, object] = {}
    sums: dict[int, dict] = {}

    def add(i, key, value):
        sums.setdefault(i, {})[key] = sums.get(i, {}).get(key, 0.0) + value

    for feeds, values in tapped_batches(model, taps, batches):
        for i, link in links.items():
            if link.role == "ffn":
                value = values[link.tap]
                if i not in slopes:
                    slopes[i] = _elementwise_session(model, link, value.dtype)
                if slopes[i] is not None:
                    add(i, "gram", _slope_gram(slopes[i], link.tap, value, feeds.get(mask)))
            elif link.role in ("query", "key"):
                add(i, "gram", _head_grams(values[link.tap], link, feeds.get(mask)))
    return sums


def _head_grams(value: np.ndarray, link: Link, mask: np.ndarray | None) -> np.ndarray:
    """Per head, ``sum t t^T`` over the tokens of the other attention operand (keys of a query
    link arrive as K^T: ``[..., d, tokens]``), padding tokens left out. A query link's keys are
    centered per sentence and head first: softmax ignores a logit shift shared by all keys."""
    t = np.asarray(value, dtype=np.float64)
    if link.role == "query":
        t = np.swapaxes(t, -1, -2)  # [..., tokens, d]
    t = np.moveaxis(t, link.head_axis, 0)  # [H, ..., tokens, d]
    weights = np.ones(t.shape[1:-1])
    if mask is not None and t.ndim == 4 and tuple(t.shape[1:3]) == tuple(np.shape(mask)):
        weights = np.clip(np.asarray(mask, np.float64), 0.0, None)
    if link.role == "query":
        mean = np.sum(t * weights[..., None], axis=-2, keepdims=True) / np.maximum(weights.sum(-1), 1e-12)[..., None, None]
        t = t - mean
    rows = (t * np.sqrt(weights)[..., None]).reshape(t.shape[0], -1, t.shape[-1])
    return np.einsum("hrd,hre->hde", rows, rows, optimize=True)


def _elementwise_session(model: ir.Model, link: Link, dtype: np.dtype):
    """A session computing a = f(h) from the link's elementwise nodes alone (constants included);
    None (no metric for that layer) where ONNX Runtime does not take the subgraph alone."""
    nodes = [ir.serde.serialize_node(n) for n in link.nodes]
    constants, seen = [], set()
    for node in link.nodes:
        for value in node.inputs:
            if value is None or value.name in seen or value.name == link.tap:
                continue
            tensor = ir.convenience.get_const_tensor(value)
            if tensor is not None and not any(value in n.outputs for n in link.nodes):
                seen.add(value.name)
                constants.append(onnx.numpy_helper.from_array(tensor.numpy(), value.name))
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = onnx.helper.make_graph(nodes, "f", [onnx.helper.make_tensor_value_info(link.tap, elem, None)],
                                   [onnx.helper.make_tensor_value_info(link.output, elem, None)], constants)
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 17))
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    proto.ir_version = min(proto.ir_version, 8)
    try:
        return make_session(proto.SerializeToString())
    except Exception as error:  # noqa: BLE001 - any load failure only costs this layer its metric
        logger.debug("no activation slope for %s: %s", link.tap, error)
        return None


def _slope_gram(session, name: str, value: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    h = np.asarray(value)
    # the pass's own subgraph, on activations the model as given produced: a failure is the pass's
    up, down = (run_candidate(session, None, {name: (h + sign * _STEP).astype(h.dtype)}, made="activation-slope",
                              original="original")[0] for sign in (1, -1))
    slope = (up.astype(np.float64) - down) / (2 * _STEP)
    return weighted_gram(slope.reshape(-1, slope.shape[-1]), row_weights(h, mask))


def build(groups: list[Group], links: dict[int, Link], stats: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """N x N output metric per group name, where a link and its statistics give one."""
    out = {}
    for i, link in links.items():
        n = groups[i].shape[1]
        metric = None
        if link.role == "value":
            w = groups[link.partner].matrix.astype(np.float64)
            metric = w @ w.T if w.shape[0] == n else None
        elif link.role in ("query", "key") and i in stats:
            grams = stats[i]["gram"]
            heads, d = grams.shape[0], grams.shape[-1]
            metric = _block_diagonal(grams) if heads * d == n else None
        elif link.role == "ffn" and i in stats:
            w, slopes = groups[link.partner].matrix.astype(np.float64), stats[i]["gram"]
            metric = (w @ w.T) * slopes if w.shape[0] == n == slopes.shape[0] else None
        if metric is None:
            logger.debug("no output metric for %s (%s): shapes do not line up", groups[i].name, link.role)
        else:
            out[groups[i].name] = metric
    return out


def _block_diagonal(blocks: np.ndarray) -> np.ndarray:
    heads, d = blocks.shape[0], blocks.shape[-1]
    out = np.zeros((heads * d, heads * d))
    for h in range(heads):
        out[h * d:(h + 1) * d, h * d:(h + 1) * d] = blocks[h]
    return out
