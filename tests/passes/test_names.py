"""Fresh names for what a rewrite adds (passes/_names.py)."""

from onnxslim.passes._names import Names
from tests.helpers import make_model


def test_a_fresh_main_graph_name_is_not_taken_inside_a_branch_either():
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float[4] x, bool c) => (float[4] y) {
        y = If (c) <then_branch = t () => (float[4] y_scale) { y_scale = Relu (x) },
                    else_branch = e () => (float[4] z) { z = Neg (x) }>
    }
    """)
    names = Names(model.graph)
    assert names.fresh("y_scale") == "y_scale_1"  # ORT refuses two producers of one name
    assert names.fresh("x") == "x_1" and names.fresh("fresh") == "fresh" and names.fresh("fresh") == "fresh_1"
