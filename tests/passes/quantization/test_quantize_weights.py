"""quantize-weights: block-wise int4/int8 MatMul weights as ONNX Runtime's MatMulNBits."""

import os

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from onnxslim import api
from onnxslim.core.flags import family_steps
from onnxslim.errors import ConfigError
from onnxslim.passes.quantization.quantize_weights import QuantizeWeights, QuantizeWeightsConfig
from tests.helpers import MODELS, check_full, make_model, rng, run_ort
from tests.passes.quantization.util import ops

MLP = """
<ir_version: 8, opset_import: ["" : OPSET]>
g (float[N, K] x, float[N, 16] z) => (float[N, 16] y) {
    h = MatMul (x, w1)
    r = Relu (h)
    a = MatMul (r, w2)
    t = Transpose <perm = [1, 0]> (z)
    s = MatMul (a, t)
    y = MatMul (s, z)
}
"""

# Symmetric blocks, rounding error uniform within +-step/2 with step = 2*absmax/(2^bits - 1):
# roughly 8-10% relative weight error for int4 blocks of 32 Gaussian weights, 0.5% for int8.
# Measured output relative L2 on this MLP (two quantized layers): int4 9.7% (8.9% with K = 40), int8 0.49%.
BOUND = {4: 0.12, 8: 0.01}


def _mlp(k: int = 64, opset: int = 17) -> ir.Model:
    r = rng(0)
    text = MLP.replace("OPSET", str(opset)).replace("K]", f"{k}]")
    return make_model(text, initializers={"w1": r.standard_normal((k, 48)).astype(np.float32),
                                          "w2": r.standard_normal((48, 16)).astype(np.float32)})


def _feeds(k: int = 64):
    r = rng(1)
    return {"x": r.standard_normal((8, k)).astype(np.float32), "z": r.standard_normal((8, 16)).astype(np.float32)}


def _rel(before, after, feeds) -> float:
    expected, actual = run_ort(before, feeds)[0], run_ort(after, feeds)[0]
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize("bits", [4, 8])
def test_constant_weights_become_matmulnbits_within_bounds(bits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = _mlp()
    original = model.clone()
    result = QuantizeWeights(QuantizeWeightsConfig(bits=bits, block_size=32))(model)
    assert result.modified and result.stats["nodes_quantized"] == 2
    counts = ops(result.model)
    assert counts["MatMulNBits"] == 2 and counts["MatMul"] == 2  # the activation x activation MatMuls stay
    assert result.model.opset_imports.get("com.microsoft") == 1 and result.model.opset_imports[""] == 17
    float_bytes = 4 * (64 * 48 + 48 * 16)
    blocks = 48 * 2 + 16 * 2  # N * ceil(K / 32): w2's K = 48 is padded to 64
    packed = blocks * 32 * bits // 8 + 4 * blocks  # data + one float scale per block
    assert result.stats["bytes_saved"] == float_bytes - packed
    check_full(result.model)
    ort.InferenceSession(ir.serde.serialize_model(result.model).SerializeToString(), providers=["CPUExecutionProvider"])
    assert _rel(original, result.model, _feeds()) < BOUND[bits]
    assert os.listdir(tmp_path) == []  # the quantizer ran in a scratch folder


def test_k_not_a_multiple_of_the_block_and_old_opset():
    model = _mlp(k=40, opset=11)  # 40 = 32 + 8: the last block is padded
    original = model.clone()
    result = QuantizeWeights(QuantizeWeightsConfig(bits=4, block_size=32))(model)
    assert result.stats["nodes_quantized"] == 2 and result.model.opset_imports[""] == 11
    check_full(result.model)
    assert _rel(original, result.model, _feeds(40)) < BOUND[4]


def test_selection_and_second_run():
    config = QuantizeWeightsConfig(min_elements=1000)  # w2 (768 elements) stays float
    result = QuantizeWeights(config)(_mlp())
    assert result.stats["nodes_quantized"] == 1
    assert any("fewer than 1000" in str(d.get("kept_float")) for d in result.details)
    assert not QuantizeWeights(QuantizeWeightsConfig(exclude=("MatMul",)))(_mlp()).modified
    again = QuantizeWeights()(result.model)
    assert not again.modified and "already quantized" in again.details[0]["skipped"]
    with pytest.raises(ValueError, match="power of two"):
        QuantizeWeightsConfig(block_size=48)


def test_flags_become_steps():
    (step,) = family_steps({"quantize_weights": "int8", "quantize_block_size": 64, "quantize_exclude": "head"})
    assert step.name == "quantize-weights" and step.options == {"bits": 8, "block_size": 64, "exclude": "head"}
    (step,) = family_steps({"fp16": True, "fp16_keep_float": "Softmax"})
    assert step.name == "convert-fp16" and step.options == {"keep_float": "Softmax"}
    for bad, match in [({"fp16": True, "quantize": "static"}, "cannot be combined"),
                       ({"fp16": True, "quantize_weights": "int4"}, "cannot be combined"),
                       ({"quantize_block_size": 64}, "without --quantize-weights"),
                       ({"quantize_weights": "int4", "calibration_method": "mse"}, "does not apply")]:
        with pytest.raises(ConfigError, match=match):
            family_steps(bad)


def test_trained_vit_int4_keeps_accuracy_and_shrinks():
    result = api.run(MODELS / "vit_tiny.onnx", quantize_weights="int4", validate=False)
    record = result.pipeline.records[-1]
    assert record.name == "quantize-weights" and record.status == "applied" and record.stats["nodes_quantized"] == 8
    data = np.load(MODELS / "digits_eval.npz")
    before = api.io.load(MODELS / "vit_tiny.onnx")
    expected = run_ort(before, {"input": data["input"]})[0].argmax(1)
    actual = run_ort(result.model, {"input": data["input"]})[0].argmax(1)
    # measured: 99.4% top-1 agreement, accuracy 97.8% -> 97.5%
    assert (expected == actual).mean() >= 0.98
    assert (actual == data["labels"]).mean() >= (expected == data["labels"]).mean() - 0.01
    assert record.stats["bytes_saved"] > 0.7 * 4 * sum(n.inputs[1].const_value.size for n in before.graph
                                                        if n.op_type == "MatMul" and n.inputs[1].const_value is not None)


def test_an_unfolded_weight_says_why_it_was_left():
    # with --no-simplify nothing folds Transpose(W): the MatMul was skipped without a row
    model = make_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[B, 64] x, float[B, 32] z) => (float[B, 32] y, float[B, B] q) {
            wt = Transpose <perm = [1, 0]> (w)
            y = MatMul (x, wt)
            zt = Transpose <perm = [1, 0]> (z)
            q = MatMul (z, zt)
        }
    """, initializers={"w": rng(0).standard_normal((32, 64)).astype(np.float32)})
    result = QuantizeWeights(QuantizeWeightsConfig(bits=4))(model)
    (row,) = result.details  # the activation x activation MatMul is not a weight MatMul: no row
    assert row["kept_float"].startswith("weight is computed from constants")
