"""Common subexpressions whose duplicate is a graph output keep the output's declared type and shape."""

import numpy as np

from onnxslim.passes.cleanup.eliminate_common_subexpressions import EliminateCommonSubexpressions
from tests.helpers import check_full, make_model, op_types, run_ort


def test_a_duplicate_that_is_a_graph_output_merges_and_keeps_its_declaration():
    # the merged output took the earlier duplicate's value, which had no type: rolled back for
    # "output 'b' dtype changed FLOAT -> None", losing every other merge of the pass
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 8] o, float[N, 8] b) {
            a = Relu (x)
            b = Relu (x)
            o = Neg (a)
        }""")
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)}
    before = run_ort(model, feeds)
    result = EliminateCommonSubexpressions()(model)
    assert result.modified and sorted(op_types(result.model)) == ["Neg", "Relu"]
    (out_o, out_b) = result.model.graph.outputs
    assert out_b.name == "b" and out_b.dtype is not None and [str(d) for d in out_b.shape] == ["N", "8"]
    for got, want in zip(run_ort(result.model, feeds), before):
        np.testing.assert_array_equal(got, want)
    check_full(result.model)
