import numpy as np
import pytest

from onnxslim.passes.cleanup.fuse_hard_activations import FuseHardActivations
from tests.helpers import assert_same_outputs, check_full, make_model, op_types, rng

PADDLE_HARDSWISH = """
<ir_version: 7, opset_import: ["" : {opset}]>
g (float[N, 8, 5] x) => (float[N, 8, 5] y) {{
    three = Constant <value = float[1] {{3.0}}> ()
    zero = Constant <value = float {{0.0}}> ()
    six = Constant <value = float {{6.0}}> ()
    six1 = Constant <value = float[1] {{{divisor}}}> ()
    a = Add (x, three)
    c = Clip (a, zero, six)
    m = Mul (x, c)
    y = Div (m, six1)
}}
"""

HARDSIGMOID = """
<ir_version: 7, opset_import: ["" : 12]>
g (float[N, 8] x) => (float[N, 8] y) {
    three = Constant <value = float {3.0}> ()
    zero = Constant <value = float {0.0}> ()
    six = Constant <value = float {6.0}> ()
    a = Add (three, x)
    c = Clip (a, zero, six)
    y = Div (c, six)
}
"""


def _feeds(shape):
    return {"x": (4 * rng().standard_normal(shape)).astype(np.float32)}  # spans both clip edges


@pytest.mark.parametrize("opset, expected", [(12, ["HardSigmoid", "Mul"]), (14, ["HardSwish"])])
def test_paddle_hardswish_becomes_hardswish_or_gate(opset, expected):
    model = make_model(PADDLE_HARDSWISH.format(opset=opset, divisor="6.0"))
    original = model.clone()
    result = FuseHardActivations()(model)
    assert result.stats["fused"] == 1
    assert [t for t in op_types(result.model) if t != "Constant"] == expected
    assert result.model.opset_imports[""] == opset
    check_full(result.model)
    assert_same_outputs(original, result.model, _feeds((3, 8, 5)), atol=1e-6, rtol=1e-6)
    assert not FuseHardActivations()(result.model).modified


def test_hardsigmoid_with_constant_first():
    model = make_model(HARDSIGMOID)
    original = model.clone()
    FuseHardActivations()(model)
    assert [t for t in op_types(model) if t != "Constant"] == ["HardSigmoid"]
    assert_same_outputs(original, model, _feeds((4, 8)), atol=1e-6, rtol=1e-6)


def test_other_constants_are_left_alone():
    model = make_model(PADDLE_HARDSWISH.format(opset=14, divisor="5.0"))
    assert not FuseHardActivations()(model).modified


def test_double_stays_decomposed():
    # ONNX Runtime's CPU provider has no double HardSigmoid/HardSwish: the fused model did not load
    model = make_model(HARDSIGMOID.replace("float", "double"))
    result = FuseHardActivations()(model)
    assert not result.modified and "HardSigmoid" not in op_types(result.model)


@pytest.mark.parametrize("opset, fused", [(13, ["HardSigmoid", "Mul"]), (14, ["HardSwish"])])
def test_the_division_written_as_a_product_by_one_sixth_fuses(opset, fused):
    model = make_model(PADDLE_HARDSWISH.format(opset=opset, divisor=6.0).replace("y = Div (m, six1)", "y = Mul (m, sixth)")
                       .replace("six1 = Constant <value = float[1] {6.0}> ()", "sixth = Constant <value = float[1] {0.16666667}> ()"))
    feeds = {"x": rng(0).uniform(-5, 5, (2, 8, 5)).astype(np.float32)}
    result = FuseHardActivations()(model.clone())
    assert sorted(op_types(result.model)) == sorted(fused)
    assert_same_outputs(model, result.model, feeds, atol=1e-6, rtol=1e-6)
