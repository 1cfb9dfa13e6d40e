import numpy as np
import onnx_ir as ir

from onnxslim.passes.cleanup.fold_shape_chains import FoldShapeChains
from tests.helpers import assert_same_outputs, check_full, make_model, op_types, rng

# A ViT-style head split: the batch dim is dynamic, the rest is static.
HEAD_SPLIT = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[batch, 17, 12] x) => (float[batch, 17, 3, 4] y) {
    s = Shape (x)
    i0 = Constant <value = int64 {0}> ()
    i1 = Constant <value = int64 {1}> ()
    b = Gather <axis = 0> (s, i0)
    t = Gather <axis = 0> (s, i1)
    zero = Constant <value = int64[1] {0}> ()
    bu = Unsqueeze (b, zero)
    tu = Unsqueeze (t, zero)
    rest = Constant <value = int64[2] {3, 4}> ()
    target = Concat <axis = 0> (bu, tu, rest)
    y = Reshape (x, target)
}
"""

# Paddle-style (opset 11): Cast to int32 and back, Slice, and Unsqueeze with an axes attribute.
PADDLE_FLATTEN = """
<ir_version: 7, opset_import: ["" : 11]>
g (float[N, 8, 2, 2] x) => (float[N, 32] y) {
    s = Shape (x)
    s32 = Cast <to = 6> (s)
    starts = Constant <value = int64[1] {0}> ()
    ends = Constant <value = int64[1] {1}> ()
    axes = Constant <value = int64[1] {0}> ()
    n32 = Slice (s32, starts, ends, axes)
    n = Cast <to = 7> (n32)
    rest = Constant <value = int64[1] {32}> ()
    target = Concat <axis = 0> (n, rest)
    y = Reshape (x, target)
}
"""


def _feeds(shape):
    return {"x": rng().standard_normal(shape).astype(np.float32)}


def test_single_dynamic_element_becomes_minus_one_and_static_dims_fold():
    model = make_model(HEAD_SPLIT)
    original = model.clone()
    result = FoldShapeChains()(model)
    assert result.modified and result.stats["reshape_targets"] == 1
    assert op_types(result.model) == ["Reshape"]
    target = result.model.graph.node(0).inputs[1].const_value.numpy()
    np.testing.assert_array_equal(target, [-1, 17, 3, 4])
    assert result.model.graph.inputs[0].shape[0].value == "batch"
    check_full(result.model)
    for batch in (1, 3):
        assert_same_outputs(original, result.model, _feeds((batch, 17, 12)), atol=0, rtol=0)
    assert not FoldShapeChains()(result.model).modified


def test_paddle_opset11_chain_through_casts_and_slice():
    model = make_model(PADDLE_FLATTEN)
    original = model.clone()
    result = FoldShapeChains()(model)
    assert op_types(result.model) == ["Reshape"]
    assert result.model.opset_imports[""] == 11
    check_full(result.model)
    assert_same_outputs(original, result.model, _feeds((2, 8, 2, 2)), atol=0, rtol=0)


def test_two_dynamic_elements_are_rebuilt_shorter_and_stay_dynamic():
    text = HEAD_SPLIT.replace("float[batch, 17, 12] x", "float[batch, T, 12] x").replace("float[batch, 17, 3, 4] y", "float[batch, T, 3, 4] y")
    model = make_model(text)
    original = model.clone()
    result = FoldShapeChains()(model)
    assert result.stats["shapes_rebuilt"] == 1
    assert op_types(result.model) == ["Shape", "Gather", "Concat", "Reshape"]
    check_full(result.model)
    for shape in ((1, 5, 12), (3, 2, 12)):
        assert_same_outputs(original, result.model, _feeds(shape), atol=0, rtol=0)
    assert not FoldShapeChains()(result.model).modified


# torch's x.expand(B, -1, -1) for a class token: ConstantOfShape/Equal/Where around the batch dim.
TORCH_EXPAND = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[batch, 16, 8] x, float[1, 1, 8] cls) => (float[batch, 17, 8] y) {
    s = Shape (x)
    i0 = Constant <value = int64 {0}> ()
    b = Gather <axis = 0> (s, i0)
    zero = Constant <value = int64[1] {0}> ()
    bu = Unsqueeze (b, zero)
    m1 = Constant <value = int64[1] {-1}> ()
    target = Concat <axis = 0> (bu, m1, m1)
    three = Constant <value = int64[1] {3}> ()
    ones = ConstantOfShape <value = int64[1] {1}> (three)
    minus = Constant <value = int64 {-1}> ()
    neg = Mul (ones, minus)
    eq = Equal (target, neg)
    fixed = Where (eq, ones, target)
    e = Expand (cls, fixed)
    y = Concat <axis = 1> (e, x)
}
"""


def test_torch_expand_chain_becomes_shape_gather_concat():
    model = make_model(TORCH_EXPAND)
    original = model.clone()
    result = FoldShapeChains()(model)
    assert op_types(result.model) == ["Shape", "Gather", "Concat", "Expand", "Concat"]
    check_full(result.model)
    for batch in (1, 4):
        feeds = {**_feeds((batch, 16, 8)), "cls": rng(2).standard_normal((1, 1, 8)).astype(np.float32)}
        assert_same_outputs(original, result.model, feeds, atol=0, rtol=0)
    assert not FoldShapeChains()(result.model).modified


def test_known_part_of_a_dynamic_shape_feeds_other_ops_as_a_constant():
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[batch, 6] x) => (float[batch, 6] y) {
        s = Shape (x)
        i1 = Constant <value = int64 {1}> ()
        c = Gather <axis = 0> (s, i1)
        cf = Cast <to = 1> (c)
        y = Div (x, cf)
    }
    """
    model = make_model(text)
    original = model.clone()
    result = FoldShapeChains()(model)
    assert result.stats["values_folded"] >= 1 and op_types(result.model) == ["Div"]
    assert_same_outputs(original, result.model, _feeds((2, 6)), atol=0, rtol=0)


def test_reshape_with_allowzero_and_zero_target_is_not_touched():
    text = HEAD_SPLIT.replace("y = Reshape (x, target)", "y = Reshape <allowzero = 1> (x, target)").replace(
        "rest = Constant <value = int64[2] {3, 4}> ()", "rest = Constant <value = int64[2] {0, 12}> ()").replace(
        "float[batch, 17, 3, 4] y", "float[batch, 17, 0, 12] y").replace("opset_import: [\"\" : 13]", "opset_import: [\"\" : 14]")
    model = make_model(text)
    result = FoldShapeChains()(model)
    assert result.stats["reshape_targets"] == 0
    target = result.model.graph.node(-1).inputs[1]
    assert target.const_value is None or -1 not in target.const_value.numpy()
    assert isinstance(result.model.graph.inputs[0].shape[0], ir.SymbolicDim)


def _shuffle(x: str, out: str) -> str:
    """torch's channel shuffle at a dynamic batch: b, c, h, w = x.size(); view(b, 2, 4, h, w),
    transpose(1, 2), view(b, c, h, w): the targets are built from Shape of the shuffle's input."""
    return f"""
    {x}_s = Shape ({x})
    {x}_b = Gather <axis = 0> ({x}_s, i0)
    {x}_c = Gather <axis = 0> ({x}_s, i1)
    {x}_h = Gather <axis = 0> ({x}_s, i2)
    {x}_w = Gather <axis = 0> ({x}_s, i3)
    {x}_bu = Unsqueeze ({x}_b, zero)
    {x}_cu = Unsqueeze ({x}_c, zero)
    {x}_hu = Unsqueeze ({x}_h, zero)
    {x}_wu = Unsqueeze ({x}_w, zero)
    {x}_t1 = Concat <axis = 0> ({x}_bu, groups, per_group, {x}_hu, {x}_wu)
    {x}_r1 = Reshape ({x}, {x}_t1)
    {x}_tr = Transpose <perm = [0, 2, 1, 3, 4]> ({x}_r1)
    {x}_t2 = Concat <axis = 0> ({x}_bu, {x}_cu, {x}_hu, {x}_wu)
    {out} = Reshape ({x}_tr, {x}_t2)
    """


CHAINED_SHUFFLES = f"""
<ir_version: 8, opset_import: ["" : 13]>
g (float[batch, 8, 4, 4] x) => (float[batch, 8, 4, 4] y) {{
    i0 = Constant <value = int64 {{0}}> ()
    i1 = Constant <value = int64 {{1}}> ()
    i2 = Constant <value = int64 {{2}}> ()
    i3 = Constant <value = int64 {{3}}> ()
    zero = Constant <value = int64[1] {{0}}> ()
    groups = Constant <value = int64[1] {{2}}> ()
    per_group = Constant <value = int64[1] {{4}}> ()
    {_shuffle("x", "a")}
    {_shuffle("a", "b")}
    {_shuffle("b", "y")}
}}
"""


def test_chained_reshapes_fold_in_one_run():
    """A shuffle's Shape has its dims only once the Reshape before it has a constant target: one
    shape inference folded one shuffle per run of the pass (ShuffleNet 98 -> 80 -> 62 -> 49 nodes
    over three runs of onnxslim; onnxsim 49 in one)."""
    model = make_model(CHAINED_SHUFFLES)
    original = model.clone()
    result = FoldShapeChains()(model)
    assert op_types(result.model) == ["Reshape", "Transpose", "Reshape"] * 3
    assert result.stats["reshape_targets"] == 6
    check_full(result.model)
    for batch in (1, 3):
        assert_same_outputs(original, result.model, _feeds((batch, 8, 4, 4)), atol=0, rtol=0)
    assert not FoldShapeChains()(result.model).modified


DECODE_HEAD = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[batch, 24, 4, 4] x) => (float[batch, 48, 8] y) {
    r = Reshape (x, grid)
    t = Transpose <perm = [0, 1, 3, 4, 2]> (r)
    s = Shape (x)
    i0 = Constant <value = int64 {0}> ()
    b = Gather <axis = 0> (s, i0)
    zero = Constant <value = int64[1] {0}> ()
    bu = Unsqueeze (b, zero)
    rest = Constant <value = int64[2] {-1, 8}> ()
    target = Concat <axis = 0> (bu, rest)
    y = Reshape (t, target)
}
"""


def test_a_minus_one_standing_for_a_named_dim_lets_a_later_view_resolve():
    """YOLO-style decode: ``x.view(-1, 3, 8, h, w)`` then ``view(batch, -1, 8)``. ONNX shape
    inference calls the first -1 ``unk__0``, so batch and -1 could not be told apart in the second
    target; the first view's output is now known to be ``[batch, 3, 8, 4, 4]`` (PyPI's onnxslim
    folded this head to 45 nodes, we kept 51)."""
    model = make_model(DECODE_HEAD, initializers={"grid": np.array([-1, 3, 8, 4, 4], np.int64)})
    original = model.clone()
    result = FoldShapeChains()(model)
    assert op_types(result.model) == ["Reshape", "Transpose", "Reshape"]
    last = result.model.graph.node(2)
    np.testing.assert_array_equal(last.inputs[1].const_value.numpy(), [-1, 48, 8])
    assert last.inputs[0].shape is None or "unk" not in str(last.inputs[0].shape)  # the hints leave no annotation
    check_full(result.model)
    for batch in (1, 3):
        assert_same_outputs(original, result.model, _feeds((batch, 24, 4, 4)), atol=0, rtol=0)
