"""The cleanup pipeline on trained models from other exporters (PyTorch YOLOv8n and silero VAD,
Paddle PP-OCR, PicoDet layout and PP-LCNet orientation)."""

import numpy as np
import onnx
import pytest

import onnxslim
from tests.helpers import run_ort

# Shapes to run at; the models themselves keep their dynamic dims.
CASES = {
    "yolov8n": {"images": (1, 3, 320, 320)},
    "ppocr_det": {"x": (1, 3, 320, 320)},
    "ppocr_rec": {"x": (1, 3, 48, 320)},
    "ppocr_cls": {"x": (2, 3, 48, 192)},
    "layout": {"image": (1, 3, 800, 608)},
    "orientation": {"x": (2, 3, 224, 224)},
}


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", sorted(CASES))
def test_cleanup_keeps_outputs_and_dynamic_dims(name, real_models, tmp_path):
    src, dst = real_models[name], tmp_path / "out.onnx"
    shapes = CASES[name]
    result = onnxslim.run(src, dst, validation={"input_shapes": shapes})
    assert result.pipeline.ok, [r.reason for r in result.pipeline.records if r.reason]
    assert result.validation.passed and not result.validation.skipped
    assert result.pipeline.after.nodes <= result.pipeline.before.nodes

    original, optimized = onnx.load(str(src)), onnx.load(str(dst))
    assert [_dims(v) for v in optimized.graph.input] == [_dims(v) for v in original.graph.input]
    assert [(o.name, _dims(o)) for o in optimized.graph.output] == [(o.name, _dims(o)) for o in original.graph.output]
    assert [o.version for o in optimized.opset_import if o.domain in ("", "ai.onnx")] == \
        [o.version for o in original.opset_import if o.domain in ("", "ai.onnx")]

    rng = np.random.default_rng(0)
    feeds = {k: rng.uniform(0, 1, s).astype(np.float32) for k, s in shapes.items()}
    for expected, actual in zip(run_ort(src, feeds), run_ort(dst, feeds)):
        assert expected.shape == actual.shape
        assert np.abs(expected - actual).max() <= 1e-4


def test_paddle_constant_weights_become_initializers(real_models):
    model = onnxslim.optimize(real_models["ppocr_cls"], validate=False)
    original = onnx.load(str(real_models["ppocr_cls"]))
    assert sum(n.op_type == "Constant" for n in original.graph.node) > 0
    assert sum(n.op_type == "Constant" for n in model.graph.node) == 0
    assert len(model.graph.node) < len(original.graph.node) / 2


def _speech(batch: int, rate: int, rng) -> np.ndarray:
    """One 32 ms chunk per row: a voiced tone with noise, as silero VAD is fed."""
    t = np.arange(rate // 31.25) / rate
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.1 * np.sin(2 * np.pi * 540 * t)
    return (tone + 0.05 * rng.standard_normal((batch, t.size))).astype(np.float32)


@pytest.mark.parametrize("name", ["silero_vad", "silero_vad_half"])
def test_branches_on_a_scalar_input_fold_and_both_rates_still_work(name, real_models, tmp_path):
    # Its sample-rate branches read the LSTM weights from the main graph; folding used to leave the
    # dropped branch's reads behind, so ORT refused the folded model and fold-constants was rolled back
    src, dst = real_models[name], tmp_path / "out.onnx"
    result = onnxslim.run(src, dst, validate=False)
    assert not [r.name for r in result.pipeline.records if r.status == "rolled-back"]
    assert result.pipeline.after.nodes < result.pipeline.before.nodes / 3
    rng = np.random.default_rng(0)
    for rate in (16000, 8000):
        for batch in (1, 3):
            feeds = {"input": _speech(batch, rate, rng), "sr": np.array(rate, np.int64),
                     "state": (0.1 * rng.standard_normal((2, batch, 128))).astype(np.float32)}
            if "sr" not in {i.name for i in onnx.load(str(src)).graph.input}:
                del feeds["sr"]
            expected, actual = run_ort(src, feeds), run_ort(dst, feeds)
            for want, got in zip(expected, actual):
                assert want.shape == got.shape and want.dtype == got.dtype
                np.testing.assert_allclose(got, want, atol=1e-5 if name == "silero_vad" else 1e-3)
