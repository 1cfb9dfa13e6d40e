import numpy as np
import pytest

from onnxslim.passes.cleanup.fuse_affine_conv import FuseAffineConv
from tests.helpers import MODELS, assert_same_outputs, check_full, make_model, op_types, rng

# x [N, 4, 6, 6] -> Relu -> affine -> conv(s). Relu keeps x's producer non-constant.
TEMPLATE = """
<ir_version: 7, opset_import: ["" : 11]>
g (float[N, 4, 6, 6] x) => ({outputs}) {{
    r = Relu (x)
    {affine}
    {convs}
}}
"""
AFFINE = {"mul add": "m = Mul (r, s)\n    a = Add (m, b)", "add mul-first": "m = Mul (s, r)\n    a = Add (b, m)",
          "mul": "a = Mul (r, s)", "add": "a = Add (r, b)"}


def _model(affine="mul add", convs="y = Conv <pads = [0, 0, 0, 0]> (a, w, bias)", w_shape=(5, 4, 1, 1), s_shape=(1,),
           b_shape=(1,), outputs="float[N, 5, 6, 6] y", zero_shift=False, extra=None):
    r = rng(0)
    weights = {"w": r.standard_normal(w_shape).astype(np.float32), "bias": r.standard_normal(w_shape[0]).astype(np.float32),
               "s": r.uniform(0.5, 2, s_shape).astype(np.float32),
               "b": np.zeros(b_shape, np.float32) if zero_shift else r.uniform(-1, 1, b_shape).astype(np.float32)}
    weights.update(extra or {})
    return make_model(TEMPLATE.format(outputs=outputs, affine=AFFINE[affine], convs=convs), initializers=weights)


def _feeds():
    return {"x": rng(1).standard_normal((2, 4, 6, 6)).astype(np.float32)}


def _check_folded(model, *, remaining, stats):
    original = model.clone()
    result = FuseAffineConv()(model)
    assert result.modified
    assert {k: result.stats[k] for k in stats} == stats
    assert op_types(result.model) == remaining
    check_full(result.model)
    assert result.model.opset_imports[""] == 11
    # Float rounding only: the folded weights sum the same products in another order.
    assert_same_outputs(original, result.model, _feeds(), atol=1e-5, rtol=1e-5)
    assert not FuseAffineConv()(result.model).modified  # idempotent
    return result


FULL = {
    "scalar mul add, 1x1": {},
    "constant first": {"affine": "add mul-first"},
    "per-channel, [1, C, 1, 1]": {"s_shape": (1, 4, 1, 1), "b_shape": (1, 4, 1, 1)},
    "per-channel, [C, 1, 1], 3x3 no pads": {"s_shape": (4, 1, 1), "b_shape": (4, 1, 1), "w_shape": (5, 4, 3, 3),
                                            "outputs": "float[N, 5, 4, 4] y"},
    "mul alone, padded 3x3": {"affine": "mul", "s_shape": (1, 4, 1, 1), "w_shape": (5, 4, 3, 3),
                              "convs": "y = Conv <pads = [1, 1, 1, 1]> (a, w, bias)"},
    "add alone, no conv bias": {"affine": "add", "b_shape": (1, 4, 1, 1), "convs": "y = Conv (a, w)"},
    "zero shift, padded": {"s_shape": (1, 4, 1, 1), "zero_shift": True, "w_shape": (5, 4, 3, 3),
                           "convs": "y = Conv <pads = [1, 1, 1, 1]> (a, w, bias)"},
    "grouped 2, per-channel": {"s_shape": (1, 4, 1, 1), "b_shape": (1, 4, 1, 1), "w_shape": (6, 2, 1, 1),
                               "convs": "y = Conv <group = 2> (a, w, bias)", "outputs": "float[N, 6, 6, 6] y"},
    "depthwise, per-channel, valid": {"s_shape": (1, 4, 1, 1), "b_shape": (1, 4, 1, 1), "w_shape": (8, 1, 3, 3),
                                      "convs": "y = Conv <group = 4, auto_pad = \"VALID\"> (a, w, bias)",
                                      "outputs": "float[N, 8, 4, 4] y"},
    "two unpadded readers": {"convs": "y = Conv (a, w, bias)\n    z = Conv (a, w)",
                             "outputs": "float[N, 5, 6, 6] y, float[N, 5, 6, 6] z"},
}


@pytest.mark.parametrize("case", sorted(FULL))
def test_affine_folds_into_conv(case):
    _check_folded(_model(**FULL[case]), remaining=["Relu"] + ["Conv"] * FULL[case].get("convs", "Conv").count("Conv"),
                  stats={"folded": 1, "scales_folded": 0})


@pytest.mark.parametrize("w_shape, group", [((5, 4, 3, 3), 1), ((4, 1, 3, 3), 4)])
def test_padded_conv_takes_the_scale_and_the_shift_moves_before_it(w_shape, group):
    model = _model(s_shape=(1, 4, 1, 1), b_shape=(1, 4, 1, 1), w_shape=w_shape,
                   convs=f"y = Conv <pads = [1, 1, 1, 1], group = {group}> (a, w, bias)",
                   outputs=f"float[N, {w_shape[0]}, 6, 6] y")
    result = _check_folded(model, remaining=["Relu", "Add", "Conv"], stats={"folded": 0, "scales_folded": 1})
    add = result.model.graph.node(1)
    assert add.inputs[0].name == "r" and add.inputs[1].const_value.shape == (4, 1, 1)


def test_padded_and_unpadded_readers_of_one_affine():
    model = _model(convs="y = Conv <pads = [1, 1, 1, 1]> (a, w, bias)\n    z = Conv (a, v)",
                   w_shape=(5, 4, 3, 3), outputs="float[N, 5, 6, 6] y, float[N, 3, 6, 6] z",
                   extra={"v": rng(2).standard_normal((3, 4, 1, 1)).astype(np.float32)})
    result = _check_folded(model, remaining=["Relu", "Add", "Conv", "Conv"], stats={"folded": 0, "scales_folded": 1})
    readers = {node.outputs[0].name: node.inputs[0].name for node in result.model.graph if node.op_type == "Conv"}
    assert readers["z"] == "r" and readers["y"] != "r"  # the 1x1 reads x itself, the padded conv x + b / s


NOT_FOLDED = {
    "padded conv, add alone": {"affine": "add", "b_shape": (1, 4, 1, 1), "w_shape": (5, 4, 3, 3),
                               "convs": "y = Conv <pads = [1, 1, 1, 1]> (a, w, bias)"},
    "same-upper conv, add alone": {"affine": "add", "w_shape": (5, 4, 3, 3),
                                   "convs": "y = Conv <auto_pad = \"SAME_UPPER\"> (a, w, bias)"},
    "affine also a graph output": {"outputs": "float[N, 5, 6, 6] y, float[N, 4, 6, 6] a"},
    "another reader": {"convs": "y = Conv (a, w, bias)\n    z = Relu (a)",
                       "outputs": "float[N, 5, 6, 6] y, float[N, 4, 6, 6] z"},
    "varies spatially": {"affine": "mul", "s_shape": (1, 1, 6, 6)},
    "conv weight not constant": {"convs": "wr = Relu (w)\n    y = Conv (a, wr, bias)"},
}


@pytest.mark.parametrize("case", sorted(NOT_FOLDED))
def test_unsafe_affines_are_left_alone(case):
    model = _model(**NOT_FOLDED[case])
    before = op_types(model)
    result = FuseAffineConv()(model)
    assert not result.modified and op_types(result.model) == before


def test_mul_output_read_elsewhere_folds_only_the_add():
    model = _model(convs="y = Conv (a, w, bias)\n    z = Relu (m)", outputs="float[N, 5, 6, 6] y, float[N, 4, 6, 6] z")
    _check_folded(model, remaining=["Relu", "Mul", "Conv", "Relu"], stats={"folded": 1})


def test_broadcast_into_channels_is_not_folded():
    # x has 1 channel, the per-channel constant broadcasts it to 4: W cannot read x directly.
    text = """
    <ir_version: 7, opset_import: ["" : 11]>
    g (float[N, 1, 6, 6] x) => (float[N, 5, 6, 6] y) {
        a = Mul (x, s)
        y = Conv (a, w)
    }
    """
    r = rng(0)
    model = make_model(text, initializers={"s": r.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32),
                                           "w": r.standard_normal((5, 4, 1, 1)).astype(np.float32)})
    assert not FuseAffineConv()(model).modified


def test_real_model_learnable_affine_blocks():
    """mobilenet_mini has no affine before a conv: build PP-LCNet's pattern into its first conv's input."""
    import onnx
    import onnx_ir as ir

    proto = onnx.load(MODELS / "mobilenet_mini.onnx")
    model = ir.serde.deserialize_model(proto)
    first = next(n for n in model.graph if n.op_type == "Conv" and n.inputs[0].producer() is not None)
    source = first.inputs[0]
    scale = ir.Value(name="lab_s", const_value=ir.tensor(np.array([1.7], np.float32), name="lab_s"))
    shift = ir.Value(name="lab_b", const_value=ir.tensor(np.array([-0.3], np.float32), name="lab_b"))
    for value in (scale, shift):
        model.graph.register_initializer(value)
    mul = ir.node("Mul", [source, scale])
    add = ir.node("Add", [mul.outputs[0], shift])
    model.graph.insert_before(first, [mul, add])
    first.replace_input_with(0, add.outputs[0])
    data = np.load(MODELS / "digits16_eval.npz")["input"][:32]
    original = model.clone()
    result = FuseAffineConv()(model)
    padded = any(first.attributes.get_ints("pads", None) or ())
    assert result.modified and result.stats == {"folded": int(not padded), "scales_folded": int(padded),
                                                 "nodes_removed": 1 if padded else 2}
    assert_same_outputs(original, result.model, {"input": data}, atol=1e-4, rtol=1e-4)
