"""The opset upgrade before per-channel static quantization keeps the model's contract and values.

onnx's version converter writes the shapes it infers into the graph outputs: an opset-11 export
whose outputs declare dims the graph fixes (paddle2onnx names every dim ``p2o.DynamicDimension.N``)
had ``[N, p2o.DynamicDimension.1]`` become ``[N, 10]``, and the whole quantization was rolled back
for changing the model's outputs. Its Resize-11 also took opset 11's defaults (half_pixel) for
Upsample and Resize-10, which compute asymmetric coordinates.
"""

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim import api
from onnxslim.passes.quantization.opset import upgrade_opset
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from tests.helpers import assert_same_outputs, check_full, make_model, rng
from tests.passes.quantization.util import REL_L2_BOUND, context, ops, rel_l2

PADDLE_STYLE = """<ir_version: 6, opset_import: ["" : 11]>
g (float[N, 3, 8, 8] x) => (float[N, "p2o.DynamicDimension.1"] y, float[N, "p2o.DynamicDimension.1", "p2o.DynamicDimension.2", "p2o.DynamicDimension.3"] gap) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
    r = Relu (c)
    gap = GlobalAveragePool (r)
    f = Flatten (gap)
    y = Gemm <transB = 1> (f, fc, fcb)
}"""
SHAPES = {"x": (4, 3, 8, 8)}


def _paddle_style() -> ir.Model:
    r = rng(0)
    model = make_model(PADDLE_STYLE, initializers={
        "w": r.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "b": r.standard_normal(8).astype(np.float32),
        "fc": r.standard_normal((10, 8)).astype(np.float32) * 0.3, "fcb": r.standard_normal(10).astype(np.float32)})
    model.graph.outputs[0].metadata_props["source"] = "paddle2onnx"
    model.graph.outputs[0].doc_string = "logits"
    return model


def _contract(model: ir.Model) -> list:
    return [(v.name, v.dtype, [str(d) for d in v.shape], v.doc_string, dict(v.metadata_props))
            for v in (*model.graph.inputs, *model.graph.outputs)]


def test_upgrade_keeps_declared_io_shapes_and_metadata():
    model = _paddle_style()
    contract = _contract(model)
    assert upgrade_opset(model) is None
    assert model.opset_imports[""] == 13 and _contract(model) == contract
    assert contract[1][2] == ["N", "p2o.DynamicDimension.1"]
    check_full(model)


def test_static_quantization_of_an_opset_11_model_with_symbolic_outputs():
    model = _paddle_style()
    original, contract = model.clone(), _contract(model)
    result = QuantizeStatic(QuantizeStaticConfig(bias_correction=False), context=context(SHAPES))(model)
    assert result.modified and result.stats.get("opset_converted") == 1
    assert ops(result.model)["DequantizeLinear"] > 0 and _contract(result.model) == contract
    check_full(result.model)
    feeds = {"x": rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND


def test_through_run_the_quantization_is_applied(tmp_path):
    src, data = tmp_path / "m.onnx", tmp_path / "calib.npz"
    ir.save(_paddle_style(), src)
    np.savez(data, x=rng(5).standard_normal((8, 3, 8, 8)).astype(np.float32))
    result = api.run(src, quantize="static", calibration_data=str(data), validate=False)
    record = next(r for r in result.pipeline.records if r.name == "quantize-static")
    assert record.status == "applied", record
    assert result.model.opset_imports[""] == 13 and ops(result.model)["DequantizeLinear"] > 0
    assert _contract(result.model) == _contract(api.io.load(src))


LEGACY = """<ir_version: 5, opset_import: ["" : %d]>
g (float[1, 2, 5, 7] x) => (float[1, 2, H, W] y) {
    y = %s <mode = "%s"> (x, scales)
}"""


@pytest.mark.parametrize("opset, op, mode, scales", [
    (9, "Upsample", "linear", [1, 1, 2, 2]),
    (10, "Resize", "linear", [1, 1, 1.5, 2.5]),
    (10, "Resize", "nearest", [1, 1, 1.5, 2.5]),  # floor, not round_prefer_floor of half_pixel
    (10, "Resize", "nearest", [1, 1, 0.6, 0.5]),  # downsampling: ceil
], ids=["upsample9-linear", "resize10-linear", "resize10-nearest-up", "resize10-nearest-down"])
def test_upgraded_upsample_and_resize_10_compute_the_same_values(opset, op, mode, scales):
    model = make_model(LEGACY % (opset, op, mode), initializers={"scales": np.array(scales, np.float32)})
    original = model.clone()
    assert upgrade_opset(model) is None
    resize = next(n for n in model.graph if n.op_type == "Resize")
    assert resize.attributes["coordinate_transformation_mode"].value == "asymmetric"
    check_full(model)
    assert_same_outputs(original, model, {"x": rng(2).standard_normal((1, 2, 5, 7)).astype(np.float32)}, atol=1e-6)


def test_nearest_resize_10_with_run_time_scales_is_not_upgraded():
    model = make_model("""<ir_version: 5, opset_import: ["" : 10]>
g (float[1, 2, 5, 7] x, float[4] s) => (float[1, 2, H, W] y) {
    y = Resize <mode = "nearest"> (x, s)
}""")
    why = upgrade_opset(model)
    assert why is not None and "not constant" in why and model.opset_imports[""] == 10
