"""A weight several MatMuls read (ALBERT's cross-layer sharing) is quantized once, by static and
dynamic quantization alike; each reader used to get its own int8 copy (the model grew 2x over
what int8 should give), and dynamic quantization reported more bytes saved than the model held."""

import numpy as np
import pytest

from onnxslim.passes.quantization.quantize_dynamic import QuantizeDynamic
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from tests.helpers import check_full, make_model, rng
from tests.passes.quantization.util import REL_L2_BOUND, context, fused_ops, rel_l2

SHARED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 64] x) => (float[N, 64] y) {
    h = MatMul (x, w)
    a = Relu (h)
    b = MatMul (a, w)
    c = Relu (b)
    y = MatMul (c, w_last)
}
"""


def _model():
    r = rng(0)
    return make_model(SHARED, initializers={"w": (r.standard_normal((64, 64)) / 8).astype(np.float32),
                                            "w_last": (r.standard_normal((64, 64)) / 8).astype(np.float32)})


def _weight_tensors(model) -> list[tuple[str, str]]:
    return sorted((v.name, v.const_value.dtype.name) for v in model.graph.initializers.values()
                  if v.const_value is not None and v.const_value.size >= 64 * 64)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_a_shared_weight_gets_one_int8_copy(mode):
    model = _model()
    original = model.clone()
    if mode == "static":
        result = QuantizeStatic(QuantizeStaticConfig(bias_correction=False), context=context({"x": (8, 64)}))(model)
    else:
        result = QuantizeDynamic()(model)
    check_full(result.model)
    weights = _weight_tensors(result.model)
    assert len(weights) == 2 and all(dtype == "INT8" for _, dtype in weights), weights
    feeds = {"x": rng(2).standard_normal((8, 64)).astype(np.float32)}
    assert rel_l2(original, result.model, feeds) < REL_L2_BOUND
    fused = fused_ops(result.model)
    integer = sum(fused[op] for op in ("QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"))
    assert integer == 3 and fused["MatMul"] == 0, fused  # ORT still fuses all three readers
    if mode == "dynamic":
        assert result.stats["bytes_saved"] == 2 * 64 * 64 * 4 - sum(
            v.const_value.nbytes for v in result.model.graph.initializers.values())
    rows = [row for row in result.details if row.get("weight_shared")]
    assert len(rows) == 1 and rows[0]["weight_elements"] == 0
