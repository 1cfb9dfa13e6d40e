"""The first N calibration samples (sensitivity ranking, bias correction, smoothing with a cache):
a batch is cut only along a batch axis that all inputs share, else taken whole."""

import numpy as np
import pytest

from onnxslim.core.pass_base import PassContext
from onnxslim.data import DataBatch
from onnxslim.passes.quantization.cache import CalibrationCache
from onnxslim.passes.quantization.mixed_precision import labelled_subset, subset
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from tests.helpers import check_full, make_model, rng
from tests.passes.quantization.util import REL_L2_BOUND, rel_l2


def _data(count=3, batch=12, table=False):
    r = rng(2)
    out = []
    for _ in range(count):
        inputs = {"x": r.standard_normal((batch, 16)).astype(np.float32)}
        if table:
            inputs["p"] = np.linspace(-1, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
        out.append(DataBatch(inputs, labels=np.arange(batch) % 4))
    return out


def test_subset_cuts_only_a_shared_batch_axis():
    data = _data()
    assert [len(f["x"]) for f in subset(data, 16)] == [12, 4]
    assert [len(f["x"]) for f in subset(data, 16, splittable=False)] == [12, 12]
    # an input without the batch axis (16 rows of a table): nothing can be cut
    assert [len(f["x"]) for f in subset(_data(table=True), 16)] == [12, 12]
    feeds, labels = labelled_subset(data, 16, splittable=False)
    assert len(labels) == 24 and sum(len(f["x"]) for f in feeds) == 24


# GELU FFN with a fixed batch of 12 (as exported with a static batch), Gemms for bias correction
FIXED_BATCH = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[12, 16] x) => (float[12, 4] y) {
    h = Gemm (x, w1, b1)
    d = Div (h, sqrt2)
    e = Erf (d)
    one_plus = Add (e, one)
    g1 = Mul (h, one_plus)
    g2 = Mul (g1, half)
    o = MatMul (g2, w2)
    y = Gemm (o, w3, b3)
}
"""


def _fixed_batch_model():
    r = rng(5)
    w1 = (r.standard_normal((16, 32)) / 4).astype(np.float32)
    w1[:, 5] *= 30
    return make_model(FIXED_BATCH, initializers={
        "w1": w1, "b1": (r.standard_normal(32) / 5).astype(np.float32),
        "w2": (r.standard_normal((32, 16)) / 6).astype(np.float32), "w3": (r.standard_normal((16, 4)) / 3).astype(np.float32),
        "b3": (r.standard_normal(4) / 5).astype(np.float32), "sqrt2": np.array(1.4142135, np.float32),
        "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)})


@pytest.mark.parametrize("options", [{}, {"cache": True}, {"min_cosine": 0.999}])
def test_a_fixed_batch_model_is_never_fed_a_cut_batch(options):
    # sensitivity_samples 16 falls inside the second batch of 12, which the model only takes whole
    cache = CalibrationCache() if options.pop("cache", False) else None
    result = QuantizeStatic(QuantizeStaticConfig(**options), context=PassContext(calibration=_data(), calibration_cache=cache))(
        _fixed_batch_model())
    assert result.stats["activations_smoothed"] == 1 and result.stats["biases_corrected"] >= 1
    feeds = {"x": rng(9).standard_normal((12, 16)).astype(np.float32)}
    assert rel_l2(_fixed_batch_model(), result.model, feeds) < REL_L2_BOUND
    check_full(result.model)
