"""Split sizes after channel pruning follow the model's own opset: an attribute below 13."""

import numpy as np

from onnxslim.passes.pruning.prune_channels import PruneChannels, PruneChannelsConfig
from tests.helpers import assert_same_outputs, check_full, make_model, rng
from tests.passes.pruning._util import conv_weights, feeds, shape_of, zero_rows

SPLIT = """<ir_version: 7, opset_import: ["%s" : 11]>
g (float[N, 3, 8, 8] x) => (float[N, 2, 8, 8] y) {
    a = Conv <pads = [1, 1, 1, 1]> (x, wa)
    s0, s1 = Split <axis = 1, split = [4, 4]> (a)
    y0 = Conv <pads = [1, 1, 1, 1]> (s0, c0)
    y1 = Conv <pads = [1, 1, 1, 1]> (s1, c1)
    y = Add (y0, y1)
}"""


def _weights():
    r = rng(3)
    w = {"wa": conv_weights(r, 8, 3), "c0": conv_weights(r, 2, 4), "c1": conv_weights(r, 2, 4)}
    return zero_rows(w, ["wa"], [1, 6])


def _prune(domain: str):
    model = make_model(SPLIT % domain, initializers=_weights())
    original = model.clone()
    config = PruneChannelsConfig(amount=0.25, skip_first_last=False, importance="magnitude", round_to=1)
    return original, PruneChannels(config)(model)


def _check(original, result):
    assert result.modified and shape_of(result.model, "wa") == (6, 3, 3, 3)
    split = next(n for n in result.model.graph if n.op_type == "Split")
    assert len(split.inputs) == 1 and list(split.attributes["split"].value) == [3, 3]
    check_full(result.model)
    assert_same_outputs(original, result.model, feeds((2, 3, 8, 8)), atol=1e-5, rtol=1e-5)


def test_opset_11_split_keeps_its_sizes_as_an_attribute():
    _check(*_prune(""))


def test_default_domain_spelled_ai_onnx_is_not_taken_for_opset_13():
    # a model handed to the pass as it is (not through onnxslim.load, which writes "ai.onnx" as "")
    original, result = _prune("ai.onnx")
    assert "" not in result.model.opset_imports
    _check(original, result)
