"""The cleanup pipeline on trained models from other exporters (PyTorch YOLOv8n, Paddle PP-OCR)."""

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
