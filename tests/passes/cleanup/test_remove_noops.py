import numpy as np
import pytest
import onnx_ir as ir

from onnxslim.passes.cleanup.remove_noops import RemoveNoops
from tests.helpers import assert_same_outputs, check_full, make_model, op_types, rng, run_ort

NOOPS = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8] x) => (float[N, 8] y) {
    a = Identity (x)
    b = Dropout (a)
    c = Cast <to = 1> (b)
    d = Relu (c)
    e = Transpose <perm = [1, 0]> (d)
    f = Transpose <perm = [1, 0]> (e)
    y = Sigmoid (f)
}
"""


def test_noops_are_removed_with_same_outputs():
    model = make_model(NOOPS)
    original = model.clone()
    result = RemoveNoops()(model)
    assert result.modified
    assert op_types(result.model) == ["Relu", "Sigmoid"]
    assert result.stats["nodes_removed"] == 5
    check_full(result.model)
    assert_same_outputs(original, result.model, {"x": rng().standard_normal((3, 8)).astype(np.float32)}, atol=0, rtol=0)


def test_identity_producing_a_graph_output_keeps_the_output_name():
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 8] x) => (float[N, 8] y) {
        r = Relu (x)
        y = Identity (r)
    }
    """)
    RemoveNoops()(model)
    assert [o.name for o in model.graph.outputs] == ["y"]
    assert op_types(model)[-1] in ("Identity", "Relu")


def test_model_without_noops_is_unchanged():
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 8] x) => (float[N, 8] y) { y = Relu (x) }
    """)
    assert not RemoveNoops()(model).modified


NEUTRAL = """
<ir_version: 8, opset_import: ["" : 12]>
g (float[N, 4, 3] x) => (float[N, 4, 3] y) {
    a = Mul (x, one)
    b = Add (zero, a)
    c = Div (b, one)
    y = Relu (c)
}
"""


def test_neutral_constants_are_removed_in_either_operand_order():
    weights = {"one": np.ones((1,), np.float32), "zero": np.zeros((1, 1, 1), np.float32)}
    model = make_model(NEUTRAL, initializers=weights)
    original = model.clone()
    result = RemoveNoops()(model)
    assert op_types(result.model) == ["Relu"]
    assert_same_outputs(original, result.model, {"x": rng().standard_normal((2, 4, 3)).astype(np.float32)}, atol=0, rtol=0)


def test_neutral_constant_that_broadcasts_to_a_bigger_shape_is_kept():
    weights = {"one": np.ones((1, 1, 1, 1), np.float32), "zero": np.full((1,), 0.5, np.float32)}
    text = NEUTRAL.replace("float[N, 4, 3] y", "float[1, N, 4, 3] y")
    model = make_model(text, initializers=weights)
    RemoveNoops()(model)
    # Mul by a rank-4 one makes x rank 4 (kept); Add of 0.5 is not neutral; the Div by one is then neutral.
    assert op_types(model) == ["Mul", "Add", "Relu"]


@pytest.mark.parametrize("gamma_shape, beta, kept", [((3,), 0.0, []), ((4, 3), 0.0, []), ((1, 3), 0.0, []),
                                                     ((4, 1), 0.0, []), ((3,), 1e-7, ["Add"]), ((2, 4, 3), 0.0, ["Mul"])])
def test_layer_norm_scale_of_ones_is_removed_when_it_cannot_grow_the_shape(gamma_shape, beta, kept):
    """An untrained LayerNorm's gamma (ones) and beta (zeros) over the last axis: x * ones([C]) is x
    (onnxsim removed them from torch's opset-13 ConvNeXt / Swin exports; we kept 6 and 5 such
    pairs). A real beta stays; a constant with a batch-sized dim still broadcasts x [N, 4, 3] to
    [2, 4, 3] (the Add after it is then neutral)."""
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 4, 3] x) => (float[Y, 4, 3] y) {
        a = Mul (x, gamma)
        b = Add (a, beta)
        y = Relu (b)
    }
    """
    weights = {"gamma": np.ones(gamma_shape, np.float32), "beta": np.full(gamma_shape, beta, np.float32)}
    model = make_model(text, initializers=weights)
    original = model.clone()
    RemoveNoops()(model)
    assert op_types(model) == [*kept, "Relu"]
    assert_same_outputs(original, model, {"x": rng().standard_normal((2, 4, 3)).astype(np.float32)}, atol=0, rtol=0)


def test_dropout_in_training_mode_is_kept():
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 8] x) => (float[N, 8] y) {
        t = Constant <value = bool {1}> ()
        r = Constant <value = float {0.5}> ()
        y = Dropout (x, r, t)
    }
    """)
    RemoveNoops()(model)
    assert "Dropout" in op_types(model)


def test_two_outputs_identity_of_one_tensor_keep_both_names():
    # onnx-ir's IdentityEliminationPass renamed r twice: both outputs became "b"
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 8] x) => (float[N, 8] a, float[N, 8] b, float[N, 8] c) {
        r = Relu (x)
        a = Identity (r)
        b = Identity (r)
        c = Identity (a)
    }
    """)
    before = ir.serde.serialize_model(model)
    result = RemoveNoops()(model)
    check_full(result.model)
    assert [o.name for o in result.model.graph.outputs] == ["a", "b", "c"]
    assert op_types(result.model).count("Identity") == 2  # one output takes r's place, the others copy it
    x = rng().standard_normal((2, 8)).astype(np.float32)
    assert_same_outputs(before, result.model, {"x": x})


def test_identity_in_a_branch_does_not_rename_the_outer_tensor():
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 8] x, bool flag) => (float[N, 8] y, float[N, 8] r) {
        r = Relu (x)
        y = If (flag) <
            then_branch = t () => (float[N, 8] t_out) { t_out = Identity (r) },
            else_branch = e () => (float[N, 8] e_out) { e_out = Neg (r) }
        >
    }
    """)
    before = ir.serde.serialize_model(model)
    result = RemoveNoops()(model)
    check_full(result.model)
    assert [o.name for o in result.model.graph.outputs] == ["y", "r"]
    x = rng().standard_normal((2, 8)).astype(np.float32)
    for flag in (True, False):
        assert_same_outputs(before, result.model, {"x": x, "flag": np.array(flag)})


def test_identity_between_inner_values_is_removed_in_a_branch():
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 8] x, bool flag) => (float[N, 8] y) {
        y = If (flag) <
            then_branch = t () => (float[N, 8] t_out) { n = Neg (x)
                                                         i = Identity (n)
                                                         t_out = Relu (i) },
            else_branch = e () => (float[N, 8] e_out) { e_out = Neg (x) }
        >
    }
    """)
    before = ir.serde.serialize_model(model)
    result = RemoveNoops()(model)
    branch = next(iter(result.model.graph)).attributes["then_branch"].as_graph()
    assert [n.op_type for n in branch] == ["Neg", "Relu"]
    x = rng().standard_normal((2, 8)).astype(np.float32)
    for flag in (True, False):
        assert_same_outputs(before, result.model, {"x": x, "flag": np.array(flag)})


RESHAPE_SELF = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N] x, float[N, 4] m) => (float[N] y, float[N, 4] z, float[N, 2, 2] w) {
    t = Constant <value = int64[1] {-1}> ()
    a = Relu (x)
    y = Reshape (a, t)
    keep = Constant <value = int64[2] {0, 4}> ()
    b = Relu (m)
    z = Reshape (b, keep)
    split = Constant <value = int64[3] {0, 2, 2}> ()
    w = Reshape (b, split)
}"""


def test_a_reshape_to_the_input_s_own_shape_goes():
    # torch's x.reshape(-1) of a 1-D tensor, and Reshape(x, [0, 4]) of an [N, 4]: no-ops kept before
    model = make_model(RESHAPE_SELF)
    feeds = {"x": rng(0).standard_normal(5).astype(np.float32), "m": rng(1).standard_normal((5, 4)).astype(np.float32)}
    before = run_ort(model, feeds)
    result = RemoveNoops()(model.clone())
    assert op_types(result.model).count("Reshape") == 1  # [N, 4] -> [N, 2, 2] is a real reshape
    for got, want in zip(run_ort(result.model, feeds), before):
        np.testing.assert_array_equal(got, want)
    assert [v.name for v in result.model.graph.outputs] == ["y", "z", "w"]


def test_where_of_not_swaps_its_branches():
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (bool[N, 4] c, float[N, 4] a, float[N, 4] b) => (float[N, 4] y) {
            n = Not (c)
            y = Where (n, a, b)
        }""")
    r = rng(2)
    feeds = {"c": r.integers(0, 2, (3, 4)).astype(bool), "a": r.standard_normal((3, 4)).astype(np.float32),
             "b": r.standard_normal((3, 4)).astype(np.float32)}
    before = run_ort(model, feeds)[0]
    result = RemoveNoops()(model.clone())
    assert op_types(result.model) == ["Where"]
    np.testing.assert_array_equal(run_ort(result.model, feeds)[0], before)


def test_a_concat_of_a_concat_on_the_same_axis_is_one_concat():
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] a, float[N, 3] b, float[N, 4] c) => (float[N, 9] y, float[N, 9] kept, float[N, 5] other) {
            inner = Concat <axis = 1> (b, c)
            y = Concat <axis = 1> (a, inner)
            other = Concat <axis = 1> (a, b)
            kept = Concat <axis = 1> (other, a, a)
            rows = Concat <axis = 0> (c, c)
            cols = Concat <axis = 1> (rows, rows)
        }""")
    r = rng(3)
    feeds = {"a": r.standard_normal((2, 2)).astype(np.float32), "b": r.standard_normal((2, 3)).astype(np.float32),
             "c": r.standard_normal((2, 4)).astype(np.float32)}
    before = run_ort(model, feeds)
    result = RemoveNoops()(model.clone())
    concats = [n for n in result.model.graph if n.op_type == "Concat"]
    # `inner` is spliced; `other` is a graph output and stays; rows/cols (another axis) are dead code
    assert [len(n.inputs) for n in concats] == [3, 2, 3], [len(n.inputs) for n in concats]
    for got, want in zip(run_ort(result.model, feeds), before):
        np.testing.assert_array_equal(got, want)


def _lstm(fill: float, *, layers: int = 1, slice_axis: int | None = None):
    """An LSTM whose initial states are ConstantOfShape(fill) of [layers, N, 5] (N from the input),
    or, with ``slice_axis``, one layer's Slice of that stacked state (torch's multi-layer export)."""
    r = rng(4)
    state = "h0 = ConstantOfShape <value = float[1] {{{fill}}}> (dims)".format(fill=fill)
    if slice_axis is not None:
        state = (f"zeros = ConstantOfShape <value = float[1] {{{fill}}}> (dims)\n"
                 f"start = Constant <value = int64[1] {{0}}> ()\n stop = Constant <value = int64[1] {{1}}> ()\n"
                 f"axes = Constant <value = int64[1] {{{slice_axis}}}> ()\n h0 = Slice (zeros, start, stop, axes)")
    return make_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[T, N, 3] x) => (float[T, 1, N, 5] y) {{
            s = Shape (x)
            i = Constant <value = int64[1] {{1}}> ()
            n = Gather <axis = 0> (s, i)
            stack = Constant <value = int64[1] {{{layers}}}> ()
            five = Constant <value = int64[1] {{5}}> ()
            dims = Concat <axis = 0> (stack, n, five)
            {state}
            y, yh, yc = LSTM <hidden_size = 5> (x, w, rr, b, , h0, h0)
        }}""", initializers={"w": r.standard_normal((1, 20, 3)).astype(np.float32),
                             "rr": r.standard_normal((1, 20, 5)).astype(np.float32),
                             "b": r.standard_normal((1, 40)).astype(np.float32)})


def test_zero_initial_states_of_an_lstm_are_its_default():
    # torch's export builds h0/c0 = zeros from the input's shape: 6-11 nodes onnxsim drops and we kept
    model = _lstm(0.0)
    result = RemoveNoops()(model.clone())
    assert op_types(result.model) == ["LSTM"] and len(next(iter(result.model.graph)).inputs) == 4
    for batch in (1, 3):
        feeds = {"x": rng(batch).standard_normal((4, batch, 3)).astype(np.float32)}
        np.testing.assert_allclose(run_ort(result.model, feeds)[0], run_ort(model, feeds)[0], rtol=1e-6, atol=1e-6)
    assert not RemoveNoops()(_lstm(0.5)).modified  # a nonzero initial state is no default


def test_a_constant_zero_state_that_pins_the_batch_stays():
    # h0 = zeros[1, 1, 5]: the original refuses batch 3; left to the default, the model ran it
    model = _lstm(0.0)
    (lstm,) = [n for n in model.graph if n.op_type == "LSTM"]
    zeros = ir.Value(name="z", const_value=ir.tensor(np.zeros((1, 1, 5), np.float32), name="z"))
    model.graph.register_initializer(zeros)
    lstm.replace_input_with(5, zeros)
    lstm.replace_input_with(6, zeros)
    result = RemoveNoops()(model)
    (lstm,) = [n for n in result.model.graph if n.op_type == "LSTM"]
    assert lstm.inputs[5] is not None and lstm.inputs[5].name == "z"


def test_one_layer_s_zero_state_sliced_from_a_stacked_one_is_the_default():
    # torch's 2-layer LSTM export: zeros[2, N, H] built from the input, each layer's state a Slice of it
    model = _lstm(0.0, layers=2, slice_axis=0)
    result = RemoveNoops()(model.clone())
    assert op_types(result.model) == ["LSTM"]
    feeds = {"x": rng(6).standard_normal((4, 3, 3)).astype(np.float32)}
    np.testing.assert_allclose(run_ort(result.model, feeds)[0], run_ort(model, feeds)[0], rtol=1e-6, atol=1e-6)
    assert "Slice" in op_types(RemoveNoops()(_lstm(0.0, layers=2, slice_axis=1)).model)  # a cut of the batch axis: left
