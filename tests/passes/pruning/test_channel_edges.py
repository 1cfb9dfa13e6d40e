"""Channel pruning where a tensor's channels leave by an unusual road.

A Gemm's C input that is an activation (a residual), a MaxPool Indices / Dropout mask output that
is a graph output, a depthwise Conv in the skip list: each must couple or block the channels, never
give a model whose real shapes differ from the original's. Zeroed producer rows make the pruning
exact, so outputs match to float32 round-off (atol 1e-5).
"""

import numpy as np
import pytest

from onnxslim.passes.pruning.prune_channels import PruneChannels, PruneChannelsConfig
from tests.helpers import assert_same_outputs, check_full, make_model, rng, run_ort
from tests.passes.pruning._util import calibration, conv_weights, feeds, shape_of, zero_rows

HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'


def prune(model, amount, context=None, **settings):
    config = PruneChannelsConfig(amount=amount, skip_first_last=False, importance="magnitude", round_to=1, **settings)
    return PruneChannels(config, context=context)(model) if context else PruneChannels(config)(model)


def group_row(result, members):
    return next(row for row in result.details if row.get("group") == members)


def residual_gemm(batch: str, zero_l2=False):
    """Gemm l3 reads a2 (l1's output) as its C input: c = b @ w3 + a2. Columns 3, 9, 20, 31 of w1 and
    w3 are zero (c's channels there are exactly 0); with ``zero_l2`` 8 columns of w2 too."""
    r = rng(4)
    w = {"w0": r.standard_normal((16, 32)).astype(np.float32) * 0.3, "b0": r.standard_normal(32).astype(np.float32),
         "w1": r.standard_normal((32, 32)).astype(np.float32) * 0.3,
         "w2": r.standard_normal((32, 64)).astype(np.float32) * 0.3,
         "w3": r.standard_normal((64, 32)).astype(np.float32) * 0.3,
         "wh": r.standard_normal((32, 10)).astype(np.float32) * 0.3}
    for name in ("w1", "w3"):
        w[name][:, [3, 9, 20, 31]] = 0
    if zero_l2:
        w["w2"][:, [1, 5, 12, 19, 33, 40, 50, 63]] = 0
    text = f"""g (float[{batch}, 16] x) => (float[{batch}, 10] y) {{
        a0 = Gemm (x, w0, b0)
        a = Relu (a0)
        a1 = Gemm (a, w1)
        a2 = Relu (a1)
        bb = Gemm (a2, w2)
        b = Relu (bb)
        c = Gemm (b, w3, a2)
        y = Gemm (c, wh)
    }}"""
    model = make_model(HEAD + text, initializers=w)
    for node, name in zip(model.graph, ["l0", "", "l1", "", "l2", "", "l3", "head"]):
        node.name = name or node.name
    return model


@pytest.mark.parametrize("batch", ["4", "N"])
def test_gemm_c_input_couples_its_channels_with_the_output(batch):
    # was: a2 pruned, l3's outputs kept -> C [4, 24] vs output [4, 32] failed in ORT; dynamic batch: TypeError
    model = residual_gemm(batch)
    original = model.clone()
    result = prune(model, 0.125, skip=("l0", "l2"))
    assert result.modified and group_row(result, ["l1", "l3"])["removed"] == 4
    assert shape_of(model, "w1") == (32, 28) and shape_of(model, "w3") == (64, 28)
    assert shape_of(model, "w2") == (28, 64) and shape_of(model, "wh") == (28, 10)
    check_full(model)
    assert_same_outputs(original, model, feeds((4, 16)))


def test_gemm_c_input_of_a_kept_gemm_blocks_its_channels():
    model = residual_gemm("N")
    result = prune(model, 0.125, skip=("l0", "l2", "l3"))
    assert not result.modified and shape_of(model, "w1") == (32, 32)
    assert group_row(result, ["l1"])["skipped"] == "bias input of Gemm l3, whose channels are kept"


def test_gemm_with_a_computed_c_is_not_refit():
    # the refit target includes C but the fit would not: it absorbed C into w3 and C was then added twice
    model = residual_gemm("N", zero_l2=True)
    original = model.clone()
    result = prune(model, 0.125, context=calibration((16, 16), batches=2), skip=("l0",), reconstruct=True)
    rows = {row["layer"]: row for row in result.details if "refit" in row}
    assert rows["l3"] == {"layer": "l3", "refit": "skipped",
                          "reason": "bias input a2 is not a per-channel constant of this layer alone"}
    assert shape_of(model, "w3") == (56, 28)
    assert_same_outputs(original, model, feeds((4, 16)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("op, side_type, size", [
    ("MaxPool <kernel_shape = [2, 2], strides = [2, 2]>", "int64", 4), ("Dropout", "bool", 8)])
def test_channels_reaching_a_graph_output_through_a_second_output_are_kept(op, side_type, size):
    # was: MaxPool's Indices / Dropout's mask lost the pruned channels (8 -> 6) under the declared shape
    r = rng(5)
    w = zero_rows({"w0": conv_weights(r, 8, 3), "w1": conv_weights(r, 8, 8), "w2": conv_weights(r, 4, 8, 1)}, ["w1"], [1, 6])
    text = f"""g (float[N, 3, 8, 8] x) => (float[N, 4, {size}, {size}] y, {side_type}[N, 8, {size}, {size}] side) {{
        a = Conv <pads = [1, 1, 1, 1]> (x, w0)
        ar = Relu (a)
        b = Conv <pads = [1, 1, 1, 1]> (ar, w1)
        p, side = {op} (b)
        y = Conv (p, w2)
    }}"""
    model = make_model(HEAD + text, initializers=w)
    original = model.clone()
    result = prune(model, 0.25, skip=("a",))
    assert not result.modified and "output side has the channels but is not sliced" in group_row(result, ["b"])["skipped"]
    assert shape_of(model, "w1") == (8, 8, 3, 3)
    x = feeds((2, 3, 8, 8))
    assert [o.shape for o in run_ort(model, x)] == [o.shape for o in run_ort(original, x)]


def mobile_block():
    r = rng(6)
    w = {"w0": conv_weights(r, 32, 3), "w1": conv_weights(r, 32, 32, 1), "wd": conv_weights(r, 32, 1),
         "w2": conv_weights(r, 16, 32, 1), "w3": conv_weights(r, 4, 16, 1)}
    zero_rows(w, ["w0"], range(0, 32, 2))
    zero_rows(w, ["w2"], range(8))
    text = """g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
        a0 = Conv <pads = [1, 1, 1, 1]> (x, w0)
        a = Relu (a0)
        b0 = Conv (a, w1)
        b = Relu (b0)
        c0 = Conv <group = 32, pads = [1, 1, 1, 1]> (b, wd)
        c = Relu (c0)
        d = Conv (c, w2)
        y = Conv (d, w3)
    }"""
    model = make_model(HEAD + text, initializers=w)
    for node, name in zip(model.graph, ["stem", "", "pw", "", "dw", "", "pw2", "head"]):
        node.name = name or node.name
    return model


def test_skipped_depthwise_conv_keeps_its_channels():
    # was: "skipped: in skip list" in the report, yet wd sliced 32 -> 16 and group 32 -> 16
    model = mobile_block()
    original = model.clone()
    result = prune(model, 0.5, skip=("dw",))
    assert shape_of(model, "wd") == (32, 1, 3, 3) and shape_of(model, "w1") == (32, 16, 1, 1)
    assert next(n for n in model.graph if n.name == "dw").attributes["group"].value == 32
    assert group_row(result, ["pw"])["skipped"] == "read by depthwise dw, which is not pruned (skip list or last layer)"
    assert {"layer": "dw", "op": "Conv", "skipped": "in skip list"} in result.details
    assert group_row(result, ["stem"])["removed"] == 16 and group_row(result, ["pw2"])["removed"] == 8
    check_full(model)
    assert_same_outputs(original, model, feeds((2, 3, 8, 8)))
