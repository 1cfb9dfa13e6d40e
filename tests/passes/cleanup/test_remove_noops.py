import numpy as np

from onnxslim.passes.cleanup.remove_noops import RemoveNoops
from tests.helpers import assert_same_outputs, check_full, make_model, op_types, rng

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
