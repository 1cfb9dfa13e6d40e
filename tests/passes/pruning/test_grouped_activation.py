"""Activation importance of channels read by a grouped Conv.

Grouped readers were skipped when scoring, so channels read only by one scored 0 and the
selection fell back to their index: live channels went, dead ones stayed.
"""

import numpy as np

from onnxslim.passes.pruning._channel_select import input_column_energy
from onnxslim.passes.pruning._layers import as_layer
from onnxslim.passes.pruning.prune_channels import PruneChannels, PruneChannelsConfig
from tests.helpers import assert_same_outputs, check_full, make_model, op_types, rng
from tests.passes.pruning._util import calibration, conv_weights, feeds, shape_of

GROUPED = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r = Relu (c)
    y = Conv <pads = [1, 1, 1, 1], group = 2> (r, w2, b2)
}"""
DEAD = [2, 3, 6, 7]
"""Two per group of 4; the lowest indices (what a score of 0 everywhere removes) are live."""


def dead_weights() -> dict:
    """Dead channels have the largest weights (magnitude importance would keep them) and bias -100 (Relu: 0)."""
    r = rng(4)
    w = {"w1": conv_weights(r, 8, 3), "b1": r.uniform(0.5, 1, 8).astype(np.float32),
         "w2": conv_weights(r, 4, 4), "b2": r.standard_normal(4).astype(np.float32)}
    w["w1"][DEAD] *= 3
    w["b1"][DEAD] = -100
    return w


def test_activation_importance_removes_the_dead_channels_a_grouped_conv_reads():
    model = make_model(GROUPED, initializers=dead_weights())
    original = model.clone()
    config = PruneChannelsConfig(amount=0.5, skip_first_last=False, importance="activation", round_to=1)
    result = PruneChannels(config, context=calibration((2, 3, 8, 8)))(model)
    assert result.modified and result.stats["channels_removed"] == 4
    assert shape_of(model, "w1") == (4, 3, 3, 3) and shape_of(model, "w2") == (4, 2, 3, 3)
    assert np.all(model.graph.initializers["b1"].const_value.numpy() > 0)  # every dead channel (bias -100) went
    assert op_types(model) == ["Conv", "Relu", "Conv"]
    check_full(model)
    assert_same_outputs(original, model, feeds((2, 3, 8, 8)), atol=1e-5, rtol=1e-5)


def test_column_energy_of_a_grouped_conv_is_its_own_groups_slice():
    w = rng(5).standard_normal((6, 2, 3, 3)).astype(np.float32)  # 3 groups: 6 input channels, 2 outputs each
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 6, 5, 5] x) => (float[N, 6, 3, 3] y) { y = Conv <group = 3> (x, w) }""", initializers={"w": w})
    layer, _ = as_layer(next(iter(model.graph)))
    expected = [float((w[2 * (c // 2):2 * (c // 2) + 2, c % 2].astype(np.float64) ** 2).sum()) for c in range(6)]
    np.testing.assert_allclose(input_column_energy(layer), expected, rtol=1e-12)
