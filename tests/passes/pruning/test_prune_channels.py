"""Channel pruning on tiny graphs, one per coupling kind.

Each model has some channels whose producer rows (and biases / BN shifts) are zero, so they
carry exactly 0. Pruning with magnitude importance and an amount equal to their share must
remove exactly them: the graph shrinks, passes the full checker and gives the same outputs in
ONNX Runtime (float32 round-off only: atol 1e-5).
"""

import numpy as np
import pytest

from onnxslim.passes.pruning.prune_channels import PruneChannels, PruneChannelsConfig
from tests.helpers import assert_same_outputs, check_full, make_model, op_types, rng
from tests.passes.pruning._util import RESIDUAL_BLOCK, conv_weights, feeds, residual_weights, shape_of, zero_rows

HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'


def prune(model, amount, **settings):
    config = PruneChannelsConfig(amount=amount, skip_first_last=False, importance="magnitude", round_to=1, **settings)
    return PruneChannels(config)(model)


def check_equivalent(text, weights, amount, expected_shapes, shape=(2, 3, 8, 8)):
    model = make_model(HEAD + text, initializers=weights)
    original = model.clone()
    result = prune(model, amount)
    assert result.modified and result.stats["channels_removed"] > 0
    for name, expected in expected_shapes.items():
        assert shape_of(result.model, name) == expected, name
    check_full(result.model)
    assert_same_outputs(original, result.model, feeds(shape), atol=1e-5, rtol=1e-5)
    return result


def test_conv_batchnorm_relu_conv():
    r = rng(0)
    w = {"w1": conv_weights(r, 8, 3), "b1": r.standard_normal(8).astype(np.float32),
         "scale": r.uniform(0.5, 2, 8).astype(np.float32), "shift": r.standard_normal(8).astype(np.float32),
         "mean": r.standard_normal(8).astype(np.float32), "var": r.uniform(0.5, 2, 8).astype(np.float32),
         "w2": conv_weights(r, 4, 8)}
    zero_rows(w, ["w1", "b1", "shift", "mean"], [1, 5])
    text = """g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
        n = BatchNormalization (c, scale, shift, mean, var)
        a = Relu (n)
        y = Conv <pads = [1, 1, 1, 1]> (a, w2)
    }"""
    result = check_equivalent(text, w, 0.25, {"w1": (6, 3, 3, 3), "b1": (6,), "scale": (6,), "var": (6,), "w2": (4, 6, 3, 3)})
    assert op_types(result.model) == ["Conv", "BatchNormalization", "Relu", "Conv"]


def test_residual_add_prunes_both_branches_together():
    text, w = RESIDUAL_BLOCK, residual_weights([0, 3])
    result = check_equivalent(text, w, 0.25, {"wa": (6, 3, 3, 3), "wb": (6, 6, 3, 3), "wc": (4, 6, 3, 3)})
    pruned = [row for row in result.details if row.get("removed")]
    assert len(pruned) == 1 and pruned[0]["group"] == ["a", "b"] and pruned[0]["removed"] == 2


def test_concat_of_two_producers():
    r = rng(2)
    w = {"wa": conv_weights(r, 4, 3), "wb": conv_weights(r, 6, 3), "wc": conv_weights(r, 3, 10)}
    zero_rows(w, ["wa"], [0])
    zero_rows(w, ["wb"], [2, 3])
    text = """g (float[N, 3, 8, 8] x) => (float[N, 3, 8, 8] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, wa)
        b = Conv <pads = [1, 1, 1, 1]> (x, wb)
        c = Concat <axis = 1> (a, b)
        r = Relu (c)
        y = Conv <pads = [1, 1, 1, 1]> (r, wc)
    }"""
    check_equivalent(text, w, 0.34, {"wa": (3, 3, 3, 3), "wb": (4, 3, 3, 3), "wc": (3, 7, 3, 3)})


def test_split_sizes_follow_the_pruned_channels():
    r = rng(3)
    w = {"wa": conv_weights(r, 8, 3), "c0": conv_weights(r, 2, 4), "c1": conv_weights(r, 2, 4),
         "sizes": np.array([4, 4], dtype=np.int64)}
    zero_rows(w, ["wa"], [1, 6])
    text = """g (float[N, 3, 8, 8] x) => (float[N, 2, 8, 8] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, wa)
        s0, s1 = Split <axis = 1> (a, sizes)
        y0 = Conv <pads = [1, 1, 1, 1]> (s0, c0)
        y1 = Conv <pads = [1, 1, 1, 1]> (s1, c1)
        y = Add (y0, y1)
    }"""
    check_equivalent(text, w, 0.25, {"wa": (6, 3, 3, 3), "c0": (2, 3, 3, 3), "c1": (2, 3, 3, 3)})


def test_depthwise_conv_passes_channels_through_and_updates_group():
    r = rng(4)
    w = {"wa": conv_weights(r, 8, 3, 1), "wd": conv_weights(r, 8, 1), "bd": r.standard_normal(8).astype(np.float32),
         "wc": conv_weights(r, 4, 8, 1)}
    zero_rows(w, ["wa", "bd"], [2, 7])
    text = """g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
        a = Conv (x, wa)
        d = Conv <group = 8, pads = [1, 1, 1, 1]> (a, wd, bd)
        r = Relu (d)
        y = Conv (r, wc)
    }"""
    result = check_equivalent(text, w, 0.25, {"wa": (6, 3, 1, 1), "wd": (6, 1, 3, 3), "bd": (6,), "wc": (4, 6, 1, 1)})
    depthwise = [n for n in result.model.graph if n.op_type == "Conv"][1]
    assert depthwise.attributes["group"].value == 6


def test_grouped_conv_loses_the_same_number_per_group():
    r = rng(5)
    w = {"wa": conv_weights(r, 8, 3), "wg": conv_weights(r, 8, 4), "wc": conv_weights(r, 4, 8, 1)}
    zero_rows(w, ["wa"], [1, 6])  # one per input group of the grouped conv
    zero_rows(w, ["wg"], [2, 5])  # one per output group
    text = """g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, wa)
        ra = Relu (a)
        gg = Conv <group = 2, pads = [1, 1, 1, 1]> (ra, wg)
        rg = Relu (gg)
        y = Conv (rg, wc)
    }"""
    check_equivalent(text, w, 0.25, {"wa": (6, 3, 3, 3), "wg": (6, 3, 3, 3), "wc": (4, 6, 1, 1)})


@pytest.mark.parametrize("flatten", [
    "f = Flatten <axis = 1> (r)",
    "f = Reshape (r, shape)",
])
def test_flatten_or_reshape_into_gemm(flatten):
    r = rng(6)
    w = {"wa": conv_weights(r, 8, 3), "ba": r.standard_normal(8).astype(np.float32),
         "wf": r.standard_normal((10, 8 * 16)).astype(np.float32) * 0.1, "bf": r.standard_normal(10).astype(np.float32),
         "shape": np.array([0, 128], dtype=np.int64)}
    zero_rows(w, ["wa", "ba"], [3, 4])
    text = f"""g (float[2, 3, 4, 4] x) => (float[2, 10] y) {{
        a = Conv <pads = [1, 1, 1, 1]> (x, wa, ba)
        r = Relu (a)
        {flatten}
        y = Gemm <transB = 1> (f, wf, bf)
    }}"""
    if "Reshape" not in flatten:
        w.pop("shape")
    result = check_equivalent(text, w, 0.25, {"wa": (6, 3, 3, 3), "wf": (10, 6 * 16)}, shape=(2, 3, 4, 4))
    reshape = [n for n in result.model.graph if n.op_type == "Reshape"]
    if reshape:
        assert list(reshape[0].inputs[1].const_value.numpy()) == [0, 96]


def test_gemm_and_matmul_with_bias_add():
    r = rng(7)
    w = {"w1": r.standard_normal((16, 12)).astype(np.float32), "b1": r.standard_normal(12).astype(np.float32),
         "w2": r.standard_normal((12, 5)).astype(np.float32), "w3": r.standard_normal((5, 3)).astype(np.float32)}
    w["w1"][:, [0, 7, 9]] = 0
    w["b1"][[0, 7, 9]] = 0
    text = """g (float[N, 16] x) => (float[N, 3] y) {
        m = MatMul (x, w1)
        a = Add (m, b1)
        r = Relu (a)
        h = Gemm (r, w2)
        y = MatMul (h, w3)
    }"""
    result = prune(make_model(HEAD + text, initializers=w), 0.25)
    assert shape_of(result.model, "w1") == (16, 9) and shape_of(result.model, "b1") == (9,)
    assert shape_of(result.model, "w2")[0] == 9
    check_full(result.model)
    # w2's own output channels were pruned too (by magnitude): only the first layer is exact.
    assert result.stats["groups_pruned"] >= 1


def test_channels_reaching_a_graph_output_are_kept_with_a_reason():
    r = rng(8)
    w = {"wa": conv_weights(r, 8, 3), "wc": conv_weights(r, 4, 8)}
    text = """g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y, float[N, 8, 8, 8] a) {
        a = Conv <pads = [1, 1, 1, 1]> (x, wa)
        y = Conv <pads = [1, 1, 1, 1]> (a, wc)
    }"""
    model = make_model(HEAD + text, initializers=w)
    result = prune(model, 0.5)
    assert not result.modified
    assert {row["skipped"] for row in result.details if "group" in row} == {"graph output"}


def test_unknown_consumer_and_dynamic_residual_block_the_group():
    r = rng(9)
    w = {"wa": conv_weights(r, 3, 3), "wb": conv_weights(r, 8, 3), "wc": conv_weights(r, 4, 8)}
    text = """g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y, float[N, 8, 8, 3] t) {
        a = Conv <pads = [1, 1, 1, 1]> (x, wa)
        s = Add (a, x)
        b = Conv <pads = [1, 1, 1, 1]> (s, wb)
        t = Transpose <perm = [0, 2, 3, 1]> (s)
        y = Conv <pads = [1, 1, 1, 1]> (b, wc)
    }"""
    model = make_model(HEAD + text, initializers=w)
    result = prune(model, 0.5)
    reasons = {tuple(row["group"]): row.get("skipped") for row in result.details if "group" in row}
    assert any(reason and "whose channels are kept" in reason for reason in reasons.values())
    assert shape_of(result.model, "wa") == (3, 3, 3, 3)
    assert shape_of(result.model, "wb") == (4, 3, 3, 3)  # b's group is free: pruned
    check_full(result.model)


def test_no_prunable_layer_leaves_model_unchanged():
    text = """g (float[N, 3, 8, 8] x) => (float[N, 3, 8, 8] y) {
        y = Relu (x)
    }"""
    result = prune(make_model(HEAD + text), 0.5)
    assert not result.modified and op_types(result.model) == ["Relu"]


@pytest.mark.parametrize("channels, amount, kept", [(24, 0.4, 16), (10, 0.1, 10)])
def test_round_to_keeps_a_multiple_of_channels(channels, amount, kept):
    """24 * 0.6 = 14.4 channels kept -> 16. 10 channels, 10% asked: keeping 8 would remove twice what
    was asked and 16 is more than there are, so the layer keeps its 10."""
    r = rng(10)
    w = {"wa": conv_weights(r, channels, 3), "wc": conv_weights(r, 4, channels)}
    text = """g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, wa)
        y = Conv <pads = [1, 1, 1, 1]> (a, wc)
    }"""
    model = make_model(HEAD + text, initializers=w)
    config = PruneChannelsConfig(amount=amount, skip_first_last=False, importance="magnitude", round_to=8)
    result = PruneChannels(config)(model)
    assert shape_of(model, "wa") == (kept, 3, 3, 3) and result.modified == (kept < channels)
    check_full(model)


@pytest.mark.parametrize("residual", [True, False])
def test_first_layer_is_spared_only_when_not_coupled(residual):
    r = rng(11)
    w = {"wa": conv_weights(r, 8, 3), "wb": conv_weights(r, 8, 8), "wc": conv_weights(r, 4, 8)}
    add = "s = Add (b, a)" if residual else "s = Relu (b)"
    text = f"""g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {{
        a = Conv <pads = [1, 1, 1, 1]> (x, wa)
        b = Conv <pads = [1, 1, 1, 1]> (a, wb)
        {add}
        y = Conv <pads = [1, 1, 1, 1]> (s, wc)
    }}"""
    model = make_model(HEAD + text, initializers=w)
    result = PruneChannels(PruneChannelsConfig(amount=0.5, importance="magnitude", round_to=1))(model)
    check_full(model)
    assert shape_of(model, "wc")[0] == 4  # the last layer's outputs (here a graph output) are never pruned
    if residual:  # a and b are one group: pruned together, stem included
        assert shape_of(model, "wa") == (4, 3, 3, 3) and shape_of(model, "wb") == (4, 4, 3, 3)
    else:  # a alone is spared; b is pruned
        assert shape_of(model, "wa") == (8, 3, 3, 3) and shape_of(model, "wb") == (4, 8, 3, 3)
        assert {"group": ["a"], "channels": 8, "skipped": "first layer, not coupled to other layers"} in result.details
