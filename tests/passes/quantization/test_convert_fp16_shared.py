"""convert-fp16 on values several kept-float32 readers share, I/O shapes, externally stored weights.

onnxruntime's converter names the Cast it puts before a float32 reader after the value read
(``v_cast_to_fp32``): two readers of one value made two Casts declaring the same output (YOLOv8n's
two Resize nodes share one scales initializer after cleanup), and the pass was rolled back.
"""

import collections
import shutil

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxslim import api
from onnxslim.passes.quantization.convert_fp16 import ConvertFp16
from onnxslim.passes.quantization.ort_tools import float_weight_bytes
from tests.helpers import MODELS, check_full, make_model, rng, run_ort
from tests.passes.quantization.test_convert_fp16 import FP16_REL_L2, _rel

SHARED_SCALES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4, 8, 8] x) => (float[N, 8, 16, 16] y) {
    a = Conv <pads = [1, 1, 1, 1]> (x, w1)
    b = Conv <pads = [1, 1, 1, 1]> (x, w2)
    ra = Resize <mode = "nearest"> (a, roi, scales)
    rb = Resize <mode = "nearest"> (b, roi, scales)
    y = Concat <axis = 1> (ra, rb)
}
"""

SHARED_ACTIVATION = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 16] x) => (float[N, 16] e, float[N, 16] s, float[N, 16] y) {
    a = MatMul (x, w)
    e = Exp (a)
    s = Sqrt (e)
    y = Pow (a, two)
}
"""


def _shared_scales() -> ir.Model:
    r = rng(0)
    return make_model(SHARED_SCALES, initializers={
        "w1": r.standard_normal((4, 4, 3, 3)).astype(np.float32) / 4,
        "w2": r.standard_normal((4, 4, 3, 3)).astype(np.float32) / 4,
        "roi": np.zeros(0, np.float32), "scales": np.array([1, 1, 2, 2], np.float32)})


def _shared_activation() -> ir.Model:
    return make_model(SHARED_ACTIVATION, initializers={"w": rng(0).standard_normal((16, 16)).astype(np.float32) / 8,
                                                       "two": np.array(2, np.float32)})


def _contract(model: ir.Model):
    return [(v.name, v.dtype, v.shape) for v in (*model.graph.inputs, *model.graph.outputs)]


def _assert_unique_outputs(model: ir.Model):
    proto = ir.serde.serialize_model(model)
    counts = collections.Counter(name for node in proto.graph.node for name in node.output)
    assert [name for name, n in counts.items() if n > 1] == []


@pytest.mark.parametrize("build, feeds", [
    (_shared_scales, {"x": rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)}),
    (_shared_activation, {"x": rng(1).standard_normal((8, 16)).astype(np.float32)}),
], ids=["resize-scales", "kept-float-readers"])
def test_shared_inputs_of_kept_float32_readers_convert(build, feeds):
    model = build()
    original, contract = model.clone(), _contract(model)
    result = ConvertFp16()(model)
    assert result.modified
    out = result.model
    check_full(out)
    _assert_unique_outputs(out)
    assert _contract(out) == contract
    assert float_weight_bytes(out, ir.DataType.FLOAT16) > 0
    for expected, actual in zip(run_ort(original, feeds), run_ort(out, feeds)):
        assert actual.dtype == np.float32 and _rel(expected, actual) < FP16_REL_L2  # measured 2e-4 to 4e-4


def test_resize_scales_stay_float32_without_casts():
    out = ConvertFp16()(_shared_scales()).model
    assert out.graph.initializers["scales"].const_value.dtype == ir.DataType.FLOAT
    resizes = [n for n in out.graph if n.op_type == "Resize"]
    assert [n.inputs[2].name for n in resizes] == ["scales", "scales"]  # read directly, no float32->float32 Cast
    assert {n.inputs[1].const_value.dtype for n in out.graph if n.op_type == "Conv"} == {ir.DataType.FLOAT16}


def test_kept_float_readers_share_one_cast():
    out = ConvertFp16()(_shared_activation()).model
    exp, power = (next(n for n in out.graph if n.op_type == op) for op in ("Exp", "Pow"))
    cast = exp.inputs[0].producer()
    assert cast.op_type == "Cast" and power.inputs[0] is exp.inputs[0]


def test_io_shapes_are_the_source_models_after_the_input_shape_was_fixed():
    """Shape inference turns a symbolic output dim into the fixed input's; the contract stays the source's."""
    model = make_model(SHARED_ACTIVATION.replace("float[N, 16] x", "float[1, 16] x"),
                       initializers={"w": rng(0).standard_normal((16, 16)).astype(np.float32) / 8,
                                     "two": np.array(2, np.float32)})
    contract = _contract(model)
    out = ConvertFp16()(model).model
    assert _contract(out) == contract and [str(d) for d in out.graph.outputs[0].shape] == ["N", "16"]


def _external_copy(folder, name):
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save(onnx.load(str(MODELS / name)), str(path), save_as_external_data=True, location="m.data", size_threshold=64)
    return path


def _locations(path):
    proto = onnx.load(str(path), load_external_data=False)
    return {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}


def _alone(path, folder):
    folder.mkdir()
    shutil.copy(path, folder / path.name)
    return folder / path.name


def test_fp16_on_a_model_with_external_data(tmp_path):
    src = _external_copy(tmp_path / "in", "resnet_mini.onnx")
    (tmp_path / "out").mkdir()
    result = api.run(src, tmp_path / "out" / "o.onnx", fp16=True, validate=False)
    record = result.pipeline.records[-1]
    assert record.name == "convert-fp16" and record.status == "applied"
    out = tmp_path / "out" / "o.onnx"
    assert _locations(out) == set()
    saved = api.io.load(out)
    assert float_weight_bytes(saved, ir.DataType.FLOAT16) >= 0.49 * float_weight_bytes(api.io.load(src), ir.DataType.FLOAT)
    feeds = {"input": np.load(MODELS / "digits16_eval.npz")["input"][:64]}
    expected, actual = run_ort(MODELS / "resnet_mini.onnx", feeds)[0], run_ort(_alone(out, tmp_path / "alone"), feeds)[0]
    assert _rel(expected, actual) < FP16_REL_L2 and (expected.argmax(1) == actual.argmax(1)).all()


def test_int4_weights_on_a_model_with_external_data(tmp_path):
    """MatMulNBitsQuantizer read the weights relative to its scratch folder (FileNotFoundError 'm.data')."""
    src = _external_copy(tmp_path / "in", "vit_tiny.onnx")
    (tmp_path / "out").mkdir()
    result = api.run(src, tmp_path / "out" / "o.onnx", quantize_weights="int4", validate=False)
    record = result.pipeline.records[-1]
    assert record.name == "quantize-weights" and record.status == "applied" and record.stats["nodes_quantized"] > 0
    out = tmp_path / "out" / "o.onnx"
    assert _locations(out) == set()
    reference = api.run(MODELS / "vit_tiny.onnx", quantize_weights="int4", validate=False).model
    feeds = {"input": np.load(MODELS / "digits_eval.npz")["input"][:32]}
    np.testing.assert_allclose(run_ort(_alone(out, tmp_path / "alone"), feeds)[0], run_ort(reference, feeds)[0],
                               rtol=1e-5, atol=1e-5)  # the same model as from the inline source


@pytest.mark.parametrize("text", [
    # the input is also an output (a pass-through)
    '<ir_version: 8, opset_import: ["" : 17]>\ng (float[1, 64] x) => (float[1, 64] y, float[1, 64] x) { y = MatMul (x, w) }',
    # an initializer is also an output
    '<ir_version: 8, opset_import: ["" : 17]>\ng (float[1, 64] x) => (float[1, 64] y, float[64, 64] w) { y = MatMul (x, w) }',
])
def test_outputs_that_are_inputs_or_initializers_decline_with_the_reason(text):
    model = make_model(text, initializers={"w": rng(0).standard_normal((64, 64)).astype(np.float32)})
    result = ConvertFp16()(model)
    assert not result.modified and "also graph inputs or initializers" in result.details[0]["skipped"]
