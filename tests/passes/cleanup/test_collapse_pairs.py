"""remove-noops on axis-op pairs that cancel or merge and on reductions over size-1 axes (collapse_pairs.py)."""

import numpy as np
import onnx
import pytest

from onnxslim.passes.cleanup.remove_noops import RemoveNoops
from tests.helpers import assert_same_outputs, check_full, make_model, rng
from tests.helpers import op_types as all_op_types


def op_types(model):
    return [op for op in all_op_types(model) if op != "Constant"]

# torch's LSTM state output: squeeze the direction axis, unsqueeze it back, concatenate the layers.
STATE = """
<ir_version: 8, opset_import: ["" : OPSET]>
g (float[1, B, 16] h, float[1, B, 16] c) => (float[2, B, 16] state, float[B, 16] last) {
    hs = Squeeze DROP_H
    cs = Squeeze DROP_C
    hu = Unsqueeze ADD_H
    cu = Unsqueeze ADD_C
    state = Concat <axis = 0> (hu, cu)
    last = Relu (hs)
}
"""


def _state(opset: int, h_axis: int, c_axis: int, back: int) -> str:
    if opset >= 13:
        forms = {"DROP_H": f"(h, ah)", "DROP_C": f"(c, ac)", "ADD_H": "(hs, back)", "ADD_C": "(cs, back)"}
        consts = (f"    ah = Constant <value = int64[1] {{{h_axis}}}> ()\n    ac = Constant <value = int64[1] {{{c_axis}}}> ()\n"
                  f"    back = Constant <value = int64[1] {{{back}}}> ()\n")
    else:
        forms = {"DROP_H": f"<axes = [{h_axis}]> (h)", "DROP_C": f"<axes = [{c_axis}]> (c)",
                 "ADD_H": f"<axes = [{back}]> (hs)", "ADD_C": f"<axes = [{back}]> (cs)"}
        consts = ""
    text = STATE.replace("OPSET", str(opset))
    for key, form in forms.items():
        text = text.replace(key, form)
    return text.replace("{\n    hs =", "{\n" + consts + "    hs =", 1)


@pytest.mark.parametrize("opset", [11, 13])
def test_unsqueeze_of_squeeze_on_the_same_axis_cancels(opset):
    model = make_model(_state(opset, 0, -3, 0))  # -3 is axis 0 of a rank-3 tensor
    original = model.clone()
    result = RemoveNoops()(model)
    assert op_types(result.model) == ["Squeeze", "Concat", "Relu"]  # the Squeeze still feeds Relu
    check_full(result.model)
    r = rng()
    feeds = {"h": r.standard_normal((1, 3, 16)).astype(np.float32), "c": r.standard_normal((1, 3, 16)).astype(np.float32)}
    assert_same_outputs(original, result.model, feeds, atol=0, rtol=0)


def test_unsqueeze_on_another_axis_than_the_squeeze_stays():
    model = make_model(_state(13, 0, 0, 1).replace("float[2, B, 16] state", "float[B, 2, 16] state")
                       .replace("Concat <axis = 0>", "Concat <axis = 1>"))
    result = RemoveNoops()(model)
    assert op_types(result.model).count("Unsqueeze") == 2


SLICES = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 10, 12] x) => (float[2, 4, 5] y, float[2, 6, 12] z) {
    s1 = Constant <value = int64[1] {2}> ()
    e1 = Constant <value = int64[1] {8}> ()
    ax1 = Constant <value = int64[1] {1}> ()
    s2 = Constant <value = int64[1] {START2}> ()
    e2 = Constant <value = int64[1] {END2}> ()
    ax2 = Constant <value = int64[1] {AXIS2}> ()
    z = Slice (x, s1, e1, ax1)
    y = Slice (z, s2, e2, ax2)
}
"""


def test_a_slice_of_a_slice_on_another_axis_becomes_one_slice_and_its_outputs_keep_their_names():
    model = make_model(SLICES.replace("START2", "1").replace("END2", "6").replace("AXIS2", "-1")
                       .replace("float[2, 4, 5] y", "float[2, 6, 5] y"))
    original = model.clone()
    result = RemoveNoops()(model)
    assert op_types(result.model) == ["Slice", "Slice"]  # z is an output itself: both read x now
    assert all(node.inputs[0].name == "x" for node in result.model.graph if node.op_type == "Slice")
    assert [v.name for v in result.model.graph.outputs] == ["y", "z"]
    check_full(result.model)
    assert_same_outputs(original, result.model, {"x": rng().standard_normal((2, 10, 12)).astype(np.float32)}, atol=0, rtol=0)


def test_two_slices_on_one_axis_stay():
    model = make_model(SLICES.replace("START2", "1").replace("END2", "5").replace("AXIS2", "1")
                       .replace("float[2, 4, 5] y", "float[2, 4, 12] y"))
    result = RemoveNoops()(model)
    assert [node.inputs[0].name for node in result.model.graph if node.op_type == "Slice"] == ["x", "z"]


REDUCE = """
<ir_version: 8, opset_import: ["" : OPSET]>
g (float[B, 1, 7] x) => (float[B, SHAPE] y) {
    r = ReduceMean <axes = [AXES], keepdims = KEEP> (x)
    y = Relu (r)
}
"""


@pytest.mark.parametrize("opset, axes, keep, shape, ops", [
    (13, "1", 0, "7", ["Squeeze", "Relu"]),      # opset 13: Squeeze takes its axes as an input
    (11, "-2", 0, "7", ["Squeeze", "Relu"]),     # opset 11: as an attribute
    (13, "1", 1, "1, 7", ["Relu"]),              # keepdims: the input itself
    (13, "2", 0, "1", ["ReduceMean", "Relu"]),   # a mean over 7 values is a reduction
])
def test_a_reduction_over_size_one_axes_is_a_squeeze_or_nothing(opset, axes, keep, shape, ops):
    text = REDUCE.replace("OPSET", str(opset)).replace("AXES", axes).replace("KEEP", str(keep)).replace("SHAPE", shape)
    model = make_model(text)
    original = model.clone()
    result = RemoveNoops()(model)
    assert op_types(result.model) == ops
    check_full(result.model)
    assert_same_outputs(original, result.model, {"x": rng().standard_normal((3, 1, 7)).astype(np.float32)}, atol=0, rtol=0)


def test_squeeze_mean_unsqueeze_to_a_graph_output_leaves_one_op_under_the_output_name():
    # silero VAD's last steps: Squeeze(sigmoid, 1) -> ReduceMean(axis 1) -> Unsqueeze(1) -> "output"
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[B, 1, 1] x) => (float[B, 1] output) {
        one = Constant <value = int64[1] {1}> ()
        p = Sigmoid (x)
        s = Squeeze (p, one)
        m = ReduceMean <axes = [1], keepdims = 0> (s)
        output = Unsqueeze (m, one)
    }
    """)
    original = model.clone()
    result = RemoveNoops()(model)
    assert op_types(result.model) == ["Sigmoid", "Squeeze"]
    assert [v.name for v in result.model.graph.outputs] == ["output"]
    out = onnx.load_from_string(__import__("onnx_ir").serde.serialize_model(result.model).SerializeToString()).graph.output[0]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["B", 1]
    assert_same_outputs(original, result.model, {"x": rng().standard_normal((4, 1, 1)).astype(np.float32)}, atol=0, rtol=0)


def test_a_same_type_cast_after_merged_slices_goes_too():
    # silero VAD's STFT: Slice, Slice, Cast(to float) of a float; the merged Slice keeps the element type
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[2, 10, 12] x) => (float[2, 6, 5] y) {
        s1 = Constant <value = int64[1] {2}> ()
        e1 = Constant <value = int64[1] {8}> ()
        ax1 = Constant <value = int64[1] {1}> ()
        s2 = Constant <value = int64[1] {1}> ()
        e2 = Constant <value = int64[1] {6}> ()
        ax2 = Constant <value = int64[1] {2}> ()
        z = Slice (x, s1, e1, ax1)
        w = Slice (z, s2, e2, ax2)
        c = Cast <to = 1> (w)
        y = Relu (c)
    }
    """)
    original = model.clone()
    result = RemoveNoops()(model)
    assert op_types(result.model) == ["Slice", "Relu"]
    assert_same_outputs(original, result.model, {"x": rng().standard_normal((2, 10, 12)).astype(np.float32)}, atol=0, rtol=0)


def test_a_slice_merged_inside_a_branch_gets_arguments_that_shadow_no_outer_tensor():
    # the merged Slice's starts were named "yb_starts", as an outer tensor already was: onnx's
    # checker then failed on the written model (ORT ran it)
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[6, 7, 8] x, bool c) => (float[a, b, d] y, int64[1] yb_starts) {
        yb_starts = Constant <value = int64[1] {0}> ()
        y = If (c) <then_branch = t () => (float[a, b, d] yb) {
                        s1 = Constant <value = int64[1] {1}> ()
                        e1 = Constant <value = int64[1] {5}> ()
                        a1 = Constant <value = int64[1] {0}> ()
                        z = Slice (x, s1, e1, a1)
                        s2 = Constant <value = int64[1] {2}> ()
                        e2 = Constant <value = int64[1] {6}> ()
                        a2 = Constant <value = int64[1] {2}> ()
                        yb = Slice (z, s2, e2, a2)
                    },
                    else_branch = e () => (float[a, b, d] yc) { yc = Identity (x) }>
    }
    """)
    original = model.clone()
    result = RemoveNoops()(model)
    branch = result.model.graph.node(1).attributes["then_branch"].as_graph()
    assert [n.op_type for n in branch if n.op_type == "Slice"] == ["Slice"]
    assert "yb_starts" not in branch.initializers
    check_full(result.model)
    for cond in (True, False):
        feeds = {"x": rng().standard_normal((6, 7, 8)).astype(np.float32), "c": np.array(cond)}
        assert_same_outputs(original, result.model, feeds, atol=0, rtol=0)
