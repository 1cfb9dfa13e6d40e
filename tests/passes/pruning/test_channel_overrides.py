"""``overrides`` in channel pruning: an override naming any member of a dependency group sets the group's amount.

Coupled channels are removed together, so a group has one amount. It was the minimum over its
members, so ``--prune 0 --prune-overrides one_member=0.5`` removed nothing and said nothing.
"""

import numpy as np
import pytest

from onnxslim.passes.pruning.prune_channels import PruneChannels, PruneChannelsConfig
from tests.helpers import assert_same_outputs, check_full, make_model, rng
from tests.passes.pruning._util import RESIDUAL_BLOCK, conv_weights, feeds, residual_weights, shape_of, zero_rows

HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'


def residual_model():
    """a and b (Add-coupled, one group of 8 channels, channels 0, 3, 5, 6 zero), y the head."""
    return make_model(HEAD + RESIDUAL_BLOCK, initializers=residual_weights([0, 3, 5, 6]))


def prune(model, amount, overrides):
    config = PruneChannelsConfig(amount=amount, overrides=overrides, skip_first_last=False, importance="magnitude",
                                 round_to=1)
    return PruneChannels(config)(model)


def group_row(result):
    return next(row for row in result.details if row.get("group") == ["a", "b"])


@pytest.mark.parametrize("amount", [0.0, 0.125])
def test_override_of_one_member_sets_the_group_amount(amount):
    model = residual_model()
    original = model.clone()
    result = prune(model, amount, ("b=0.25",))
    row = group_row(result)
    assert row["amount"] == 0.25 and row["removed"] == 2
    assert row["note"] == "override of b applies to its whole dependency group"
    assert shape_of(model, "wa") == (6, 3, 3, 3) and shape_of(model, "wb") == (6, 6, 3, 3) and shape_of(model, "wc") == (4, 6, 3, 3)
    check_full(model)
    assert_same_outputs(original, model, feeds((2, 3, 8, 8)))


def test_override_below_the_default_also_wins():
    model = residual_model()
    result = prune(model, 0.5, ("a=0.25",))
    assert group_row(result)["amount"] == 0.25 and group_row(result)["removed"] == 2


def test_conflicting_overrides_in_one_group_take_the_smallest_with_a_warning(tmp_path):
    model = residual_model()
    result = prune(model, 0.0, ("a=0.25", "b=0.5"))
    row = group_row(result)
    assert row["amount"] == 0.25 and row["removed"] == 2
    assert row["warning"] == "conflicting overrides in one dependency group (a=0.25, b=0.5): the smallest, 0.25, applies"
    # the run's warnings carry it (the JSON report's "warnings", printed by the CLI)
    from onnxslim import api, io

    path = tmp_path / "residual.onnx"
    io.save(residual_model(), path)
    run = api.run(str(path), None, validate=False, simplify=False, prune=0.0, prune_method="channel",
                  prune_overrides=["a=0.25", "b=0.5"], prune_first_last=True)
    assert any("prune-channels: conflicting overrides" in w for w in run.warnings), run.warnings


def test_override_of_every_member_needs_no_note():
    result = prune(residual_model(), 0.0, ("a|b=0.5",))
    row = group_row(result)
    assert row["amount"] == 0.5 and row["removed"] == 4 and "note" not in row


def test_override_of_a_depthwise_conv_applies_to_the_group_its_channels_follow():
    r = rng(2)
    w = zero_rows({"w1": conv_weights(r, 8, 3, 1), "wd": conv_weights(r, 8, 1), "w2": conv_weights(r, 4, 8, 1)},
                  ["w1"], [2, 7])
    text = """g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
        p = Conv (x, w1)
        d = Conv <group = 8, pads = [1, 1, 1, 1]> (p, wd)
        y = Conv (d, w2)
    }"""
    model = make_model(HEAD + text, initializers=w)
    original = model.clone()
    result = prune(model, 0.0, ("d=0.25",))
    row = next(row for row in result.details if row.get("group") == ["p"])
    assert row["amount"] == 0.25 and row["removed"] == 2 and "override of d" in row["note"]
    assert shape_of(model, "wd") == (6, 1, 3, 3) and shape_of(model, "w2") == (4, 6, 1, 1)
    assert_same_outputs(original, model, feeds((2, 3, 8, 8)))
