"""Providers, sessions and capture of intermediate tensors."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from onnxslim import io
from onnxslim.errors import ConfigError
from onnxslim.runtime import ProviderUnavailable, make_session, parse_providers, run_batches, unavailable_reason
from onnxslim.runtime.runner import _cpu_nodes
from onnxslim.runtime.session import model_bytes, session_model
from tests.helpers import MODELS, make_model

DIGITS = MODELS / "digits_cnn.onnx"
CUDA_MISSING = unavailable_reason("cuda")


def test_parse_providers():
    assert parse_providers("cpu") == ["cpu"] and parse_providers(" CUDA , cpu,cuda") == ["cuda", "cpu"]
    assert parse_providers("all") == ["cpu", "cuda"] and parse_providers(None) == ["cpu"]
    with pytest.raises(ConfigError, match="tpu"):
        parse_providers("cpu,tpu")


def test_cpu_is_always_available():
    assert unavailable_reason("cpu") is None


@pytest.mark.skipif(CUDA_MISSING is None, reason="CUDA is available here")
def test_missing_cuda_raises_provider_unavailable_not_a_silent_cpu_run():
    with pytest.raises(ProviderUnavailable, match="CUDAExecutionProvider"):
        make_session(io.load(DIGITS), provider="cuda")


def test_capture_returns_intermediates_of_the_first_batch_only():
    model = io.load(DIGITS)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    names = ["/features/features.0/Conv_output_0", "/classifier/classifier.2/Relu_output_0"]
    result = run_batches(model, [{"input": x[:2]}, {"input": x[2:]}], capture=names)
    assert result.outputs["logits"].shape == (3, 10) and result.samples == 3
    assert result.captured[names[0]].shape == (2, 16, 8, 8) and result.captured[names[1]].shape[0] == 2
    plain = run_batches(model, [{"input": x}])
    assert np.allclose(plain.outputs["logits"], result.outputs["logits"], atol=1e-5) and plain.captured == {}


def test_cpu_nodes_come_from_the_session_profile(tmp_path):
    session = make_session(io.load(DIGITS), profile_prefix=str(tmp_path / "p"))
    session.run(None, {"input": np.zeros((1, 1, 8, 8), np.float32)})
    nodes = _cpu_nodes(session.end_profiling())
    assert any(n.startswith("Gemm ") for n in nodes) and any(n.startswith("MaxPool ") for n in nodes)


WEIGHTED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 64] x) => (float[N, 8, 16] y) {
    h = MatMul (x, w)
    c = Cast <to = 10> (h)
    b16 = Add (c, bias16)
    b = Cast <to = 1> (b16)
    y = Reshape (b, shape)
}
"""


def test_large_weights_reach_the_session_as_arrays_and_the_model_is_left_as_it_was():
    r = np.random.default_rng(3)
    arrays = {"w": r.standard_normal((64, 128)).astype(np.float32), "bias16": r.standard_normal(128).astype(np.float16),
              "shape": np.array([-1, 8, 16], np.int64), "unused": np.ones(4096, np.float32)}
    model = make_model(WEIGHTED, initializers=arrays)
    before = model_bytes(model)
    packed = session_model(model, ["h"])
    assert set(packed.weights) == {"w"}  # float16 bias 256 B, int64 shape, the unused one: inline
    assert len(packed.data) < len(before) - arrays["w"].nbytes + 1024
    assert model_bytes(model) == before  # the caller's model is unchanged
    x = r.standard_normal((3, 64)).astype(np.float32)
    got = make_session(packed).run(["y", "h"], {"x": x})
    want = ort.InferenceSession(model_bytes(model, ["h"]), providers=["CPUExecutionProvider"]).run(["y", "h"], {"x": x})
    assert got[0].shape == (3, 8, 16)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # the same through make_session(ir.Model, extra_outputs=...)
    np.testing.assert_array_equal(make_session(model, extra_outputs=["h"]).run(["h"], {"x": x})[0], want[1])


BRANCH_WEIGHTS = """
<ir_version: 8, opset_import: ["" : 13]>
branches (float[4, 512] x, bool c) => (float[4, 512] y) {
    y = If (c) <then_branch = g1 () => (float[4, 512] t) { t = Add (x, w) },
                else_branch = g2 () => (float[4, 512] e) { e = Sub (x, x) }>
}
"""


def test_the_size_counts_weights_inside_branches(tmp_path):
    # silero VAD keeps every weight in its If branches: the report said 2.2 MB -> 50 KB
    from onnxslim.runtime.session import save_for_session

    proto = onnx.parser.parse_model(BRANCH_WEIGHTS)
    proto.graph.node[0].attribute[0].g.initializer.append(onnx.numpy_helper.from_array(np.ones(512, np.float32), "w"))
    model = ir.serde.deserialize_model(proto)
    path, size = save_for_session(model, tmp_path, "m")
    assert size > 512 * 4 > 1024  # large enough to be external data
    assert size == sum(f.stat().st_size for f in tmp_path.iterdir())
    x = np.ones((4, 512), np.float32)
    np.testing.assert_array_equal(make_session(path).run(["y"], {"x": x, "c": np.array(True)})[0], x + 1)
