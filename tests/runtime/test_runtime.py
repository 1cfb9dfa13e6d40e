"""Providers, sessions and capture of intermediate tensors."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim import io
from onnxslim.errors import ConfigError
from onnxslim.runtime import ProviderUnavailable, make_session, parse_providers, run_batches, unavailable_reason
from onnxslim.runtime.runner import _cpu_nodes
from tests.helpers import MODELS

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
