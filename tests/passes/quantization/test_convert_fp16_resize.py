"""convert-fp16 on Resize inputs that must stay float32: torch's ``F.interpolate(size=...)`` export
``Resize(X, roi=[], scales=[], sizes)``, whose identical empty roi and scales the cleanup merges
into one tensor (or leaves as Constant nodes).

The converter made that tensor float16 and fed ``scales`` through a Cast: at opset >= 13 ORT
refused the model ("Either `sizes` or `scales` must be provided, but not both") and the pass was
rolled back; at 11/12 the scales were computed at run time from the float16 roi. Now ``scales``
reads an empty float32 initializer of its own.
"""

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim import api
from onnxslim.passes.quantization.convert_fp16 import ConvertFp16
from tests.helpers import check_full, make_model, rng, run_ort
from tests.passes.quantization.test_convert_fp16 import FP16_REL_L2, _rel

SHARED = """<ir_version: 7, opset_import: ["" : %d]>
g (float[1, 3, 6, 10] x) => (float[1, 4, 12, 20] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    y = Resize <mode = "linear"> (c, empty, empty, sizes)
}"""

CONSTANTS = """<ir_version: 7, opset_import: ["" : %d]>
g (float[1, 3, 6, 10] x) => (float[1, 4, 12, 20] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    roi = Constant <value = float[0] {}> ()
    scales = Constant <value = float[0] {}> ()
    y = Resize <mode = "linear"> (c, roi, scales, sizes)
}"""

OPSET_10 = """<ir_version: 5, opset_import: ["" : 10]>
g (float[1, 3, 6, 10] x) => (float[1, 4, 12, 20] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w)
    y = Resize <mode = "linear"> (c, scales)
}"""

FEEDS = {"x": rng(1).standard_normal((1, 3, 6, 10)).astype(np.float32)}


def _model(text: str, **extra) -> ir.Model:
    weights = {"w": (rng(0).standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), **extra}
    return make_model(text, initializers=weights)


def _sized(text: str, opset: int) -> ir.Model:
    extra = {"sizes": np.array([1, 4, 12, 20], np.int64)}
    return _model(text % opset, **({"empty": np.zeros(0, np.float32)} if "empty" in text else {}), **extra)


def _check(original: ir.Model, out: ir.Model) -> ir.Node:
    check_full(out)
    expected, actual = run_ort(original, FEEDS)[0], run_ort(out, FEEDS)[0]  # ORT loads it
    assert actual.dtype == np.float32 and _rel(expected, actual) < FP16_REL_L2
    resize = next(n for n in out.graph if n.op_type == "Resize")
    assert resize.inputs[0].dtype == ir.DataType.FLOAT16  # the Resize itself runs in float16
    return resize


def _assert_own_float32_scales(resize: ir.Node, index: int = 2, size: int = 0) -> None:
    scales = resize.inputs[index]
    assert scales.producer() is None and scales.const_value is not None  # an initializer, not a Cast's output
    assert scales.const_value.dtype == ir.DataType.FLOAT and scales.const_value.size == size


@pytest.mark.parametrize("opset", [13, 11])
@pytest.mark.parametrize("text", [SHARED, CONSTANTS], ids=["shared-initializer", "constant-nodes"])
def test_empty_scales_beside_sizes_stay_an_empty_float32_initializer(text, opset):
    model = _sized(text, opset)
    original = model.clone()
    result = ConvertFp16()(model)
    assert result.modified
    resize = _check(original, result.model)
    _assert_own_float32_scales(resize)
    assert not any(n.op_type == "Constant" and not n.outputs[0].uses() for n in result.model.graph)  # none left over


def test_second_run_is_unchanged():
    out = ConvertFp16()(_sized(SHARED, 13)).model
    assert not ConvertFp16()(out).modified


def test_resize_at_opset_10_converts_with_its_scales_float32():
    # Resize-10's scales are input 1 (no roi): it was taken for a float16 input the schema lacks and
    # the whole Resize stayed float32, with Casts around it
    model = _model(OPSET_10, scales=np.array([1, 1, 2, 2], np.float32))
    original = model.clone()
    result = ConvertFp16()(model)
    assert not any(row.get("op") == "Resize" for row in result.details), result.details
    _assert_own_float32_scales(_check(original, result.model), index=1, size=4)


@pytest.mark.parametrize("opset", [13, 11])
def test_through_run_with_the_cleanup(tmp_path, opset):
    src = tmp_path / "m.onnx"
    ir.save(_sized(CONSTANTS, opset), src)
    result = api.run(src, fp16=True, validate=False)
    record = result.pipeline.records[-1]
    assert record.name == "convert-fp16" and record.status == "applied", record
    resize = _check(api.io.load(src), result.model)
    _assert_own_float32_scales(resize)
    assert resize.inputs[1] is not resize.inputs[2]


IN_BRANCHES = """<ir_version: 7, opset_import: ["" : 13]>
g (float[1, 3, 6, 10] x, bool cond) => (float[1, 3, 12, 20] y) {
    c = Relu (x)
    y = If (cond) <then_branch = t () => (float[1, 3, 12, 20] a) {
        roi = Constant <value = float[0] {}> ()
        scales = Constant <value = float[0] {}> ()
        sizes = Constant <value = int64[4] {1, 3, 12, 20}> ()
        a = Resize <mode = "linear"> (c, roi, scales, sizes)
    }, else_branch = e () => (float[1, 3, 12, 20] b) {
        roi2 = Constant <value = float[0] {}> ()
        scales2 = Constant <value = float[4] {1, 1, 2, 2}> ()
        b = Resize <mode = "nearest"> (c, roi2, scales2)
    }>
}"""


def test_resize_constants_inside_if_branches():
    # the converter put the Cast of a branch's float16 scales in the main graph, before the
    # branch's Constant: an unsorted graph the checker refused
    model = make_model(IN_BRANCHES)
    original = model.clone()
    result = ConvertFp16()(model)
    assert result.modified
    check_full(result.model)
    assert not any(n.op_type == "Cast" and "scales" in n.inputs[0].name for n in result.model.graph)
    for cond in (True, False):
        feeds = {**FEEDS, "cond": np.array(cond)}
        expected, actual = run_ort(original, feeds)[0], run_ort(result.model, feeds)[0]
        assert _rel(expected, actual) < FP16_REL_L2
