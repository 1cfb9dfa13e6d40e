"""Magnitude and N:M pruning on tiny Conv/Gemm/MatMul graphs."""

import numpy as np
import pytest

from onnxslim.errors import ConfigError
from onnxslim.passes.pruning.prune_magnitude import PruneMagnitude, PruneMagnitudeConfig
from onnxslim.passes.pruning.prune_nm import PruneNM, PruneNMConfig
from tests.helpers import check_full, make_model, rng, run_ort
from tests.passes.pruning._util import calibration, conv_weights, feeds

MODEL = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4, 6, 6] x) => (float[N, 5] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r = Relu (c)
    d = Conv <pads = [1, 1, 1, 1]> (r, w2)
    p = GlobalAveragePool (d)
    f = Flatten (p)
    h = Gemm <transB = 1> (f, w3, b3)
    y = MatMul (h, w4)
}"""


def weights(seed=0):
    r = rng(seed)
    return {"w1": conv_weights(r, 8, 4), "b1": r.standard_normal(8).astype(np.float32), "w2": conv_weights(r, 8, 8),
            "w3": r.standard_normal((16, 8)).astype(np.float32), "b3": r.standard_normal(16).astype(np.float32),
            "w4": r.standard_normal((16, 5)).astype(np.float32)}


def sparsity(model, name):
    array = model.graph.initializers[name].const_value.numpy()
    return float(np.mean(array == 0))


def test_layerwise_magnitude_hits_the_amount_and_skips_edges():
    model = make_model(MODEL, initializers=weights())
    result = PruneMagnitude(PruneMagnitudeConfig(amount=0.5))(model)
    assert result.modified and result.stats["layers_pruned"] == 2
    assert sparsity(model, "w2") == 0.5 and sparsity(model, "w3") == 0.5
    assert sparsity(model, "w1") == 0 and sparsity(model, "w4") == 0  # first and last layers
    kept = model.graph.initializers["w2"].const_value.numpy()
    original = weights()["w2"]
    assert np.abs(original[kept == 0]).max() <= np.abs(original[kept != 0]).min()  # the smallest went
    rows = {row["layer"]: row for row in result.details}
    assert rows["d"]["deflate_bytes_after"] < rows["d"]["deflate_bytes_before"]
    assert result.stats["deflate_ratio"] < 1
    check_full(model)


def test_global_scope_and_overrides():
    model = make_model(MODEL, initializers=weights())
    config = PruneMagnitudeConfig(amount=0.5, scope="global", skip_first_last=False, overrides=("y=0.25",))
    PruneMagnitude(config)(model)
    total = sum(model.graph.initializers[n].const_value.size for n in ("w1", "w2", "w3"))
    zeros = sum(np.sum(model.graph.initializers[n].const_value.numpy() == 0) for n in ("w1", "w2", "w3"))
    assert zeros == int(0.5 * total)
    assert sparsity(model, "w4") == 0.25


def test_second_run_is_unchanged_and_skip_list_is_honoured():
    model = make_model(MODEL, initializers=weights())
    PruneMagnitude(PruneMagnitudeConfig(amount=0.5, skip=("h",)))(model)
    assert sparsity(model, "w3") == 0
    assert not PruneMagnitude(PruneMagnitudeConfig(amount=0.5, skip=("h",)))(model).modified


def test_nm_pattern_along_input_channels():
    model = make_model(MODEL, initializers=weights())
    result = PruneNM(PruneNMConfig(skip_first_last=False))(model)
    w2 = model.graph.initializers["w2"].const_value.numpy()  # [8, 8, 3, 3]
    blocks = (w2 != 0).transpose(0, 2, 3, 1).reshape(8, 3, 3, 2, 4)
    assert (blocks.sum(-1) == 2).all()
    w3 = model.graph.initializers["w3"].const_value.numpy()  # [16, 8], rows are outputs
    assert ((w3 != 0).reshape(16, 2, 4).sum(-1) == 2).all()
    w4 = model.graph.initializers["w4"].const_value.numpy()  # [16, 5], reduction is axis 0
    assert ((w4 != 0).T.reshape(5, 4, 4).sum(-1) == 2).all()
    assert result.stats["sparsity"] == 0.5
    check_full(model)
    assert not PruneNM(PruneNMConfig(skip_first_last=False))(model).modified


def test_nm_skips_layers_whose_channels_do_not_divide():
    model = make_model(MODEL, initializers=weights())
    result = PruneNM(PruneNMConfig(n=1, m=8, skip_first_last=False))(model)
    skipped = {row["layer"]: row["skipped"] for row in result.details if "skipped" in row}
    assert skipped == {"c": "4 input channels, not a multiple of 8"}
    assert sparsity(model, "w1") == 0 and sparsity(model, "w2") == 7 / 8


def test_reconstruction_reduces_the_output_error():
    context = calibration((8, 4, 6, 6))
    errors = {}
    for refit in (False, True):
        model = make_model(MODEL, initializers=weights())
        original = model.clone()
        config = PruneMagnitudeConfig(amount=0.6, reconstruct=refit, importance="magnitude")
        result = PruneMagnitude(config, context=context)(model)
        x = feeds((16, 4, 6, 6), seed=5)
        errors[refit] = float(np.linalg.norm(run_ort(model, x)[0] - run_ort(original, x)[0]))
        if refit:
            assert result.stats["layers_refit"] == 2
            assert sparsity(model, "w2") == int(0.6 * 576) / 576  # the refit keeps the zero pattern
    assert errors[True] < 0.7 * errors[False]


def test_reconstruct_without_calibration_is_a_config_error():
    with pytest.raises(ConfigError):
        PruneMagnitude(PruneMagnitudeConfig(reconstruct=True))
    with pytest.raises(ValueError):
        PruneMagnitudeConfig(amount=1.0)
    with pytest.raises(ValueError):
        PruneNMConfig(n=4, m=4)


def test_params_pruned_counts_the_zeros_the_weights_hold():
    # it was params x the sparsity rounded to 4 digits: 27596 reported for 27595 zeros on digits_cnn
    from onnxslim import io
    from tests.helpers import MODELS

    model = io.load(MODELS / "digits_cnn.onnx")
    before = {n: int(np.count_nonzero(v.const_value.numpy() == 0)) for n, v in model.graph.initializers.items()}
    result = PruneMagnitude(PruneMagnitudeConfig(amount=0.3))(model)
    after = {n: int(np.count_nonzero(v.const_value.numpy() == 0)) for n, v in result.model.graph.initializers.items()}
    assert result.stats["params_pruned"] == sum(after.values()) - sum(before.values()) > 0


def test_activation_importance_scores_each_weight_by_its_input_norm():
    """Wanda's |w| * ||x||: input 1 carries twice the activation norm of input 0, so its weight
    0.6 (score 1.2) outlives weight 1.0 (score 1.0), which magnitude alone would keep; 0.4 (0.8)
    goes, which scoring by the energy ||x||^2 would keep (1.6 > 1.0)."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 2] x) => (float[N, 1] y) {
        h = MatMul (x, w)
        y = Identity (h)
    }"""
    from onnxslim.core.pass_base import PassContext
    from onnxslim.data import DataBatch

    x = rng(3).standard_normal((64, 2)).astype(np.float32)
    x /= np.linalg.norm(x, axis=0)  # columns of norm 1, then 2
    x[:, 1] *= 2
    for weight, pruned in (([1.0, 0.6], 0), ([1.0, 0.4], 1)):
        model = make_model(text, initializers={"w": np.array(weight, np.float32).reshape(2, 1)})
        config = PruneMagnitudeConfig(amount=0.5, skip_first_last=False, importance="activation")
        PruneMagnitude(config, context=PassContext(calibration=[DataBatch({"x": x})]))(model)
        kept = model.graph.initializers["w"].const_value.numpy().ravel()
        assert kept[pruned] == 0 and kept[1 - pruned] == weight[1 - pruned]
