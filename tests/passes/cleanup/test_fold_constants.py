import pytest
import numpy as np
import onnx
import onnx_ir as ir

from onnxslim.passes.cleanup.fold_constants import FoldConstants
from tests.helpers import MODELS, assert_same_outputs, check_full, make_model, op_types, rng

# A Paddle-style export: the weight reaches MatMul through Constant -> Cast -> Mul.
CONSTANT_CHAIN = """
<ir_version: 7, opset_import: ["" : 11]>
g (float[N, 4] x) => (float[N, 3] y) {
    w0 = Constant <value = float[4, 3] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}> ()
    two = Constant <value = double {2.0}> ()
    two_f = Cast <to = 1> (two)
    w = Mul (w0, two_f)
    y = MatMul (x, w)
}
"""

# Reshape target computed from a static dim; the batch dim stays symbolic.
SHAPE_CHAIN = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[batch, 3, 4] x) => (float[batch, 12] y) {
    s = Shape (x)
    idx1 = Constant <value = int64[1] {1}> ()
    idx2 = Constant <value = int64[1] {2}> ()
    d1 = Gather <axis = 0> (s, idx1)
    d2 = Gather <axis = 0> (s, idx2)
    flat = Mul (d1, d2)
    minus_one = Constant <value = int64[1] {-1}> ()
    target = Concat <axis = 0> (minus_one, flat)
    y = Reshape (x, target)
}
"""


def test_constant_chain_folds_to_one_initializer():
    model = make_model(CONSTANT_CHAIN)
    original = model.clone()
    result = FoldConstants()(model)
    assert result.modified
    assert op_types(result.model) == ["MatMul"]
    (weight,) = result.model.graph.initializers.values()
    np.testing.assert_array_equal(weight.const_value.numpy(), 2 * np.arange(1, 13, dtype=np.float32).reshape(4, 3))
    assert result.model.opset_imports[""] == 11
    check_full(result.model)
    assert_same_outputs(original, result.model, {"x": rng().standard_normal((3, 4)).astype(np.float32)}, atol=0, rtol=0)


def test_static_shape_arithmetic_folds_and_batch_stays_symbolic():
    model = make_model(SHAPE_CHAIN)
    original = model.clone()
    result = FoldConstants()(model)
    assert op_types(result.model) == ["Reshape"]
    assert isinstance(result.model.graph.inputs[0].shape[0], ir.SymbolicDim)
    assert result.model.graph.outputs[0].shape[0].value == "batch"
    for batch in (1, 5):
        feeds = {"x": rng().standard_normal((batch, 3, 4)).astype(np.float32)}
        assert_same_outputs(original, result.model, feeds, atol=0, rtol=0)


def test_second_run_is_unchanged():
    model = make_model(SHAPE_CHAIN)
    FoldConstants()(model)
    assert not FoldConstants()(model).modified


def test_output_size_limit_keeps_large_results_unmaterialized():
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[N, 64] x) => (float[N, 64] y) {
        shape = Constant <value = int64[2] {64, 64}> ()
        big = ConstantOfShape <value = float[1] {1.0}> (shape)
        y = MatMul (x, big)
    }
    """
    model = make_model(text)
    FoldConstants(FoldConstants.Config(output_size_limit=100))(model)
    assert "ConstantOfShape" in op_types(model)


def test_folded_and_rewritten_values_carry_no_onnxscript_metadata(tmp_path):
    # onnxscript tags what it folds ("folded_from") and rewrites ("rule_name"); nothing reads them
    from onnxslim import api

    model = make_model(CONSTANT_CHAIN)
    result = FoldConstants()(model)
    keys = [k for v in (*result.model.graph.initializers.values(), *result.model.graph.outputs)
            for k in v.metadata_props]
    keys += [k for n in result.model.graph for k in n.metadata_props]
    assert not [k for k in keys if k.startswith("pkg.onnxscript")]
    out = tmp_path / "out.onnx"
    api.optimize(str(MODELS / "resnet_mini.onnx"), str(out), validate=False)
    saved = onnx.load(str(out))
    holders = [*saved.graph.node, *saved.graph.initializer, *saved.graph.output, *saved.graph.value_info]
    assert not [p.key for h in holders for p in h.metadata_props if p.key.startswith("pkg.onnxscript")]


TIED_EMBEDDING = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[B, S] ids) => (float[B, S, 512] logits, float[B, S, 64] tail) {
    x = Gather <axis = 0> (emb, ids)
    t = Transpose <perm = [1, 0]> (emb)
    logits = MatMul (x, t)
    small_t = Transpose <perm = [1, 0]> (w)
    tail = MatMul (x, small_t)
}
"""


def test_a_tied_table_is_not_copied_by_folding_its_transpose():
    # Gather reads the table, the output MatMul its transpose: folding that would double the weights
    model = make_model(TIED_EMBEDDING, initializers={"emb": rng().standard_normal((512, 64)).astype(np.float32),
                                                     "w": rng(1).standard_normal((64, 64)).astype(np.float32)})
    original = model.clone()
    result = FoldConstants()(model)
    params = sum(v.const_value.size for v in result.model.graph.initializers.values())
    assert params == 512 * 64 + 64 * 64
    assert op_types(result.model).count("Transpose") == 1  # the 64x64 one, read once, still folds
    ids = rng().integers(0, 512, (2, 5)).astype(np.int64)
    assert_same_outputs(original, result.model, {"ids": ids}, atol=0, rtol=0)


# The condition is known: the folder inlines one branch; the other branch's Sub read w_else.
KNOWN_BRANCH = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[4, 512] x) => (float[4, 512] y) {
    one = Constant <value = int64 {1}> ()
    c = Cast <to = 9> (one)
    y = If (c) <then_branch = t () => (float[4, 512] a) { a = Add (x, w_then) },
                else_branch = e () => (float[4, 512] b) { b = Sub (x, w_else) }>
}
"""


def test_a_weight_only_the_dropped_branch_read_is_removed_and_the_result_loads():
    from onnxslim.core.checks import check_model

    r = rng()
    weights = {"w_then": r.standard_normal(512).astype(np.float32), "w_else": r.standard_normal(512).astype(np.float32)}
    model = make_model(KNOWN_BRANCH, initializers=weights)
    result = FoldConstants()(model.clone())
    assert "If" not in op_types(result.model)
    assert set(result.model.graph.initializers) == {"w_then"}
    check_model(result.model)  # ORT took the weights as arrays beside the graph
    x = r.standard_normal((4, 512)).astype(np.float32)
    assert_same_outputs(model, result.model, {"x": x})


# An LSTM's gates reordered as torch exports them: Slices of one weight, then a Concat; as in torch's
# export, some Slices' arguments are Constant nodes written after the first Slice.
GATE_SLICES = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 600] x) => (float[2, ROWS] y) {
    s3 = Constant <value = int64[1] {3}> ()
    s6 = Constant <value = int64[1] {6}> ()
    zero = Constant <value = int64[1] {0}> ()
    a = Slice (w, s3, s6, zero)
    s0 = Constant <value = int64[1] {0}> ()
    b = Slice (w, s0, s3, zero)
    s9 = Constant <value = int64[1] {9}> ()
    c = Slice (w, THIRD, s9, zero)
    wt = Concat <axis = 0> (a, b, c)
    y = Gemm <transB = 1> (x, wt)
}
"""


@pytest.mark.parametrize("third, folds", [("s6", True), ("s0", False)])
def test_slices_that_cut_a_shared_weight_into_parts_fold_and_overlapping_ones_do_not(third, folds):
    # "s0": the third Slice takes all 9 rows again; folding would hold 15 rows for the weight's 9
    rows = 9 if folds else 15
    text = GATE_SLICES.replace("THIRD", third).replace("ROWS", str(rows))
    model = make_model(text, initializers={"w": rng().standard_normal((9, 600)).astype(np.float32)})
    original = model.clone()
    result = FoldConstants()(model)
    params = sum(v.const_value.size for v in result.model.graph.initializers.values() if v.const_value.size > 1)
    if folds:
        assert op_types(result.model) == ["Gemm"]
        assert params == 9 * 600
    else:
        assert op_types(result.model).count("Slice") == 3 and params == 9 * 600
    x = rng(2).standard_normal((2, 600)).astype(np.float32)
    assert_same_outputs(original, result.model, {"x": x})  # a Gemm on a folded weight: last-bit differences
