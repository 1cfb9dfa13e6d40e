"""When the cleanup's fusions and no-op removals apply, and when they must not: shapes, ranks,
constants and readers that make a rewrite wrong.

Pinned by a mutation audit: each test fails when the condition it names is dropped or loosened.
"""

from __future__ import annotations

import numpy as np

from onnxslim.passes.cleanup.fuse_affine_conv import FuseAffineConv
from onnxslim.passes.cleanup.fuse_conv_affine import FuseConvAffine
from onnxslim.passes.cleanup.fuse_hard_activations import FuseHardActivations
from onnxslim.passes.cleanup.remove_noops import RemoveNoops
from tests.helpers import assert_same_outputs, make_model, op_types, rng, run_ort


def test_fca_scalar_of_higher_rank_is_not_fused():
    """A one-element constant of rank 5 after a rank-4 Conv broadcasts the output to rank 5: folding
    it into the bias would drop an output axis. (mutation: ``len(shape) <= rank`` -> ``<= rank + 1``)"""
    model = make_model("""
        <ir_version: 7, opset_import: ["" : 11]>
        g (float[N, 3, 6, 6] x) => (float[1, N, 4, 6, 6] y) {
            c = Conv <pads = [1, 1, 1, 1]> (x, w)
            y = Add (c, k)
        }""", initializers={"w": rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32),
                            "k": np.full((1, 1, 1, 1, 1), 0.5, np.float32)})
    original = model.clone()
    result = FuseConvAffine()(model)
    assert not result.modified and op_types(result.model) == ["Conv", "Add"]
    assert_same_outputs(original, result.model, {"x": rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)})


def test_fca_batch_broadcasting_constant_is_not_fused():
    """A [2, C, 1, 1] constant broadcasts the batch axis (N=1 -> 2): not a per-channel bias.
    (mutation: ``shape[0] == 1`` -> ``shape[0] >= 1``)"""
    model = make_model("""
        <ir_version: 7, opset_import: ["" : 11]>
        g (float[1, 3, 6, 6] x) => (float[2, 4, 6, 6] y) {
            c = Conv <pads = [1, 1, 1, 1]> (x, w)
            y = Add (c, k)
        }""", initializers={"w": rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32),
                            "k": rng(2).standard_normal((2, 4, 1, 1)).astype(np.float32)})
    result = FuseConvAffine()(model)
    assert not result.modified and op_types(result.model) == ["Conv", "Add"]


def test_fca_conv_with_runtime_bias_is_not_fused():
    """The Conv's bias is a graph input (not a constant): nothing to fold the Add into.
    (mutation: dropping ``or (bias is not None and fixed_tensor(bias) is None)``: the rewrite raises)"""
    model = make_model("""
        <ir_version: 7, opset_import: ["" : 11]>
        g (float[N, 3, 6, 6] x, float[4] b) => (float[N, 4, 6, 6] y) {
            c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
            y = Add (c, k)
        }""", initializers={"w": rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32),
                            "k": rng(2).standard_normal((1, 4, 1, 1)).astype(np.float32)})
    result = FuseConvAffine()(model)
    assert not result.modified and op_types(result.model) == ["Conv", "Add"]


_HARDSIGMOID = """
<ir_version: 7, opset_import: ["" : {opset}]>
g (float[N, 8] x) => ({out} y) {{
    three = Constant <value = {three}> ()
    low = Constant <value = float {{{low}}}> ()
    six = Constant <value = float {{6.0}}> ()
    a = Add (three, x)
    c = Clip (a, low, six)
    y = Div (c, six)
}}
"""


def _hs(low="0.0", three="float {3.0}", out="float[N, 8]", opset=12):
    return make_model(_HARDSIGMOID.format(low=low, three=three, out=out, opset=opset))


def test_fha_clip_with_another_lower_bound_is_not_fused():
    """Clip(x + 3, -1, 6) / 6 is not a hard sigmoid (it reaches -1/6).
    (mutation: ``_clip_bounds(clip) != (0.0, 6.0)`` -> only the upper bound checked)"""
    model = _hs(low="-1.0")
    original = model.clone()
    result = FuseHardActivations()(model)
    assert not result.modified and "HardSigmoid" not in op_types(result.model)
    assert_same_outputs(original, result.model, {"x": (4 * rng().standard_normal((3, 8))).astype(np.float32)})


def test_fha_constant_of_higher_rank_is_not_fused():
    """``x + 3`` with a [1, 1, 1] constant lifts x [N, 8] to rank 3: HardSigmoid(x) would drop that axis.
    (mutation: ``len(const.shape) > len(x.shape)`` -> ``> len(x.shape) + 1``)"""
    model = _hs(three="float[1, 1, 1] {3.0}", out="float[1, N, 8]")
    result = FuseHardActivations()(model)
    assert not result.modified and "HardSigmoid" not in op_types(result.model)


def test_fha_hard_sigmoid_with_another_beta_is_not_a_hard_swish():
    """Mul(x, HardSigmoid(x, alpha=1/6, beta=0.4)) is not HardSwish.
    (mutation: dropping ``or beta != 0.5`` in _HardSwishFromSigmoid.check)"""
    model = make_model("""
        <ir_version: 7, opset_import: ["" : 14]>
        g (float[N, 8] x) => (float[N, 8] y) {
            h = HardSigmoid <alpha = 0.16666667, beta = 0.4> (x)
            y = Mul (x, h)
        }""")
    result = FuseHardActivations()(model)
    assert not result.modified and "HardSwish" not in op_types(result.model)


def test_fha_input_of_unknown_rank_is_left_alone():
    """x with no shape at all: the broadcast check cannot be made, so nothing is fused (and nothing raises).
    (mutation: dropping ``or x.shape is None``)"""
    model = _hs()
    model.graph.inputs[0].shape = None
    result = FuseHardActivations()(model)
    assert not result.modified and "HardSigmoid" not in op_types(result.model)


_AFFINE = """
<ir_version: 7, opset_import: ["" : 11]>
g (float[N, 4, 6, 6] x) => ({outputs}) {{
    r = Relu (x)
    m = Mul (r, s)
    a = Add (m, b)
    y = Conv <pads = [1, 1, 1, 1]> (a, w, bias)
}}
"""


def _affine_model(s, b, outputs="float[N, 5, 6, 6] y"):
    r = rng(0)
    weights = {"w": r.standard_normal((5, 4, 3, 3)).astype(np.float32), "bias": r.standard_normal(5).astype(np.float32),
               "s": np.asarray(s, np.float32), "b": np.asarray(b, np.float32)}
    return make_model(_AFFINE.format(outputs=outputs), initializers=weights)


def _affine_feeds():
    return {"x": rng(1).standard_normal((2, 4, 6, 6)).astype(np.float32)}


def test_fac_mul_output_that_is_a_graph_output_stays():
    """The Mul of ``x * s + b`` is also a graph output: only the Add may fold, the Mul stays.
    (mutation: ``and not inner.is_graph_output()`` -> ``and True``)"""
    model = _affine_model(np.full((1, 4, 1, 1), 1.5), [0.0], outputs="float[N, 5, 6, 6] y, float[N, 4, 6, 6] m")
    original = model.clone()
    result = FuseAffineConv()(model)
    assert "Mul" in op_types(result.model)
    assert_same_outputs(original, result.model, _affine_feeds())


def test_fac_padded_conv_with_a_zero_scale_is_left_alone():
    """A padded Conv after ``x * s + b`` with a zero in s: moving b before the Mul (b / s) is impossible.
    (mutation: dropping ``and np.all(affine.scale != 0)`` in _plan: inf/nan weights)"""
    model = _affine_model(np.array([1.5, 0.0, 2.0, 0.5]).reshape(1, 4, 1, 1), [0.25])
    original = model.clone()
    result = FuseAffineConv()(model)
    assert not result.modified
    assert_same_outputs(original, result.model, _affine_feeds())


def test_fac_scalar_shift_with_per_channel_scale_before_a_padded_conv():
    """Scalar b, per-channel s, padded Conv ("scale" mode): b moves before the Mul as b / s per channel.
    (mutation: the scalar shortcut ``shift / scale[0]`` taken whatever s is)"""
    model = _affine_model(np.array([1.5, 0.5, 2.0, 0.75]).reshape(1, 4, 1, 1), [0.25])
    original = model.clone()
    result = FuseAffineConv()(model)
    assert result.modified and result.stats["scales_folded"] == 1
    assert_same_outputs(original, result.model, _affine_feeds())


def test_rn_allowzero_reshape_with_a_zero_is_not_a_copy():
    """With allowzero=1 a 0 in the target is a dim of size 0, not "copy the input's dim": not a no-op.
    (mutation: ``copy_ok = not ...get_int("allowzero", 0)`` -> ``True``)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 14]>
        g (float[N, 8] x) => (float[0, 8] y) {
            shape = Constant <value = int64[2] {0, 8}> ()
            y = Reshape <allowzero = 1> (x, shape)
        }""")
    result = RemoveNoops()(model)
    assert "Reshape" in op_types(result.model)


def test_rn_reshape_with_minus_one_and_an_unmatched_dim_is_kept():
    """Reshape(x[N, M], [-1, 4]): -1 may stand for one unknown dim, but 4 is not M: a real reshape.
    (mutation: ``len(rest) > 1 or`` -> ``False or``)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 14]>
        g (float[N, M] x) => (float[P, 4] y) {
            shape = Constant <value = int64[2] {-1, 4}> ()
            y = Reshape (x, shape)
        }""")
    feeds = {"x": rng(0).standard_normal((2, 8)).astype(np.float32)}
    before = run_ort(model, feeds)[0]
    result = RemoveNoops()(model.clone())
    assert "Reshape" in op_types(result.model)
    np.testing.assert_array_equal(run_ort(result.model, feeds)[0], before)


def test_rn_concats_on_different_axes_are_not_flattened():
    """Concat(axis=1)(a, Concat(axis=0)(b, c)) is not Concat(axis=1)(a, b, c).
    (mutation: dropping ``and inner.attributes.get_int("axis", 0) == axis`` in flatten_concats)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 2] a, float[2, 3] b, float[2, 3] c) => (float[4, 5] y) {
            inner = Concat <axis = 0> (b, c)
            y = Concat <axis = 1> (a, inner)
        }""")
    r = rng(3)
    feeds = {"a": r.standard_normal((4, 2)).astype(np.float32), "b": r.standard_normal((2, 3)).astype(np.float32),
             "c": r.standard_normal((2, 3)).astype(np.float32)}
    result = RemoveNoops()(model.clone())
    assert [len(n.inputs) for n in result.model.graph if n.op_type == "Concat"] == [2, 2]
    assert_same_outputs(model, result.model, feeds)


def test_rn_concat_read_twice_is_not_spliced():
    """An inner Concat read by two Concats stays one tensor: splicing it into one reader only
    duplicates its work (and the pass claims a change it did not make).
    (mutation: dropping ``len(value.uses()) == 1 and`` in flatten_concats)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] a, float[N, 3] b) => (float[N, 7] y, float[N, 10] z) {
            inner = Concat <axis = 1> (a, b)
            y = Concat <axis = 1> (a, inner)
            z = Concat <axis = 1> (inner, inner)
        }""")
    result = RemoveNoops()(model.clone())
    assert not result.modified
    assert [len(n.inputs) for n in result.model.graph if n.op_type == "Concat"] == [2, 2, 2]


def test_rn_branch_output_identity_of_an_outer_tensor_stays():
    """A branch whose output is Identity(outer tensor) keeps the Identity: removing it would rename
    the outer tensor (the main graph's output r) to the branch output's name.
    (mutation: ``producer.graph is not node.graph or`` -> ``False or`` in eliminate_identities)"""
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 8] x, bool flag) => (float[N, 8] y, float[N, 8] z) {
        r = Relu (x)
        y = If (flag) <
            then_branch = t () => (float[N, 8] t_out) { t_out = Identity (r) },
            else_branch = e () => (float[N, 8] e_out) { e_out = Neg (r) }
        >
        z = Neg (r)
    }
    """)
    original = model.clone()
    result = RemoveNoops()(model)
    x = rng().standard_normal((2, 8)).astype(np.float32)
    for flag in (True, False):
        assert_same_outputs(original, result.model, {"x": x, "flag": np.array(flag)})
    branch = next(n for n in result.model.graph if n.op_type == "If").attributes["then_branch"].as_graph()
    assert [n.op_type for n in branch] == ["Identity"]
    assert [n.outputs[0].name for n in result.model.graph if n.op_type == "Relu"] == ["r"]
