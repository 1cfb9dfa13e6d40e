"""remove-unused on what onnx-ir's passes leave: initializers of If/Loop bodies that nothing reads."""

import numpy as np
import onnx
import onnx_ir as ir

from onnxslim.passes.cleanup.remove_unused import RemoveUnused
from tests.helpers import assert_same_outputs, check_full, rng

BRANCHES = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[4, 64] x, bool c) => (float[4, 64] y) {
    y = If (c) <then_branch = t () => (float[4, 64] a) { a = Add (x, w) },
                else_branch = e () => (float[4, 64] b) { b = Neg (x) }>
}
"""


def test_an_initializer_no_branch_node_reads_is_removed_and_a_read_one_stays():
    proto = onnx.parser.parse_model(BRANCHES)
    then = proto.graph.node[0].attribute[0].g
    then.initializer.extend([onnx.numpy_helper.from_array(rng().standard_normal(64).astype(np.float32), "w"),
                             onnx.numpy_helper.from_array(np.ones(512, np.float32), "leftover")])
    model = ir.serde.deserialize_model(proto)
    original = model.clone()
    result = RemoveUnused()(model)
    branch = result.model.graph.node(0).attributes["then_branch"].as_graph()
    assert set(branch.initializers) == {"w"} and result.stats["bytes_saved"] == 512 * 4
    check_full(result.model)
    for cond in (True, False):
        feeds = {"x": rng(1).standard_normal((4, 64)).astype(np.float32), "c": np.array(cond)}
        assert_same_outputs(original, result.model, feeds, atol=0, rtol=0)
