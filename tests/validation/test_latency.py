"""Latency: round-robin variants, the noise band from a repeat of the original, the 'slower' flag."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxslim.validation.latency import measure_latency

INPUT = {"x": np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)}


def _model(heavy_layers: int) -> bytes:
    """y = Relu(x) (+ 0 * sum of a MatMul chain on x when heavy: same outputs, more work)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])
    nodes, inits = [helper.make_node("Relu", ["x"], ["r"])], []
    last = "x"
    weight = np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32) * np.float32(0.05)
    inits.append(numpy_helper.from_array(weight, "w"))
    for i in range(heavy_layers):
        nodes.append(helper.make_node("MatMul", [last, "w"], [f"h{i}"]))
        last = f"h{i}"
    if heavy_layers:
        inits.append(numpy_helper.from_array(np.zeros((1,), np.float32), "zero"))
        nodes += [helper.make_node("ReduceSum", [last], ["s"], keepdims=1), helper.make_node("Mul", ["s", "zero"], ["z"]),
                  helper.make_node("Add", ["r", "z"], ["y"])]
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["y"]))
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10).SerializeToString()


def test_same_model_is_within_the_noise_band():
    light = _model(0)
    # A statistical claim on a shared machine: one of three measurements must not flag the
    # identical model (a load spike from another process can hit one of them).
    for _ in range(3):
        report = measure_latency(light, light, INPUT, runs=30, warmup=3, threads=1)
        assert [v.label for v in report.variants] == ["original", "optimized", "original (repeat)"]
        assert all(v.runs == 30 and 0 < v.median_ms <= v.p90_ms for v in report.variants)
        assert report.threads == 1
        if not report.slower:
            break
    assert not report.slower


def test_slower_optimized_model_is_flagged():
    report = measure_latency(_model(0), _model(200), INPUT, runs=15, warmup=2, threads=1)
    assert report.ratio > 3 and report.slower
    report = measure_latency(_model(200), _model(0), INPUT, runs=15, warmup=2, threads=1)
    assert report.ratio < 0.5 and not report.slower


def test_each_variant_is_timed_exactly_the_runs_asked_for():
    # --latency 5 timed 6 calls per model (two in each of three rounds), the default 20 timed 21
    from onnxslim.validation.latency import time_round_robin

    model = _model(0)
    for runs in (1, 2, 5, 20):
        times = time_round_robin({"a": model, "b": model}, INPUT, runs=runs, warmup=0, threads=1)
        assert [len(t) for t in times.values()] == [runs, runs]


def test_the_slower_flag_needs_more_than_the_noise_band_and_the_minimum_margin(monkeypatch):
    """The decision on given timings (ms per call: original, optimized, original repeated)."""
    import onnxslim.validation.latency as latency

    def decide(original, optimized, repeat):
        times = {"original": [original] * 3, "optimized": [optimized] * 3, "original (repeat)": [repeat] * 3}
        monkeypatch.setattr(latency, "time_round_robin", lambda *a, **k: times)
        return measure_latency(b"", b"", INPUT, runs=3, warmup=0, threads=1)

    quiet = decide(1.0, 1.04, 1.0)  # 4% slower, no noise: within the 5% margin
    assert quiet.noise == 0.0 and quiet.ratio == 1.04 and not quiet.slower
    assert decide(1.0, 1.06, 1.0).slower  # beyond the margin
    noisy = decide(1.0, 1.2, 1.25)  # the original itself moved 25%
    assert noisy.noise == 0.25 and not noisy.slower
    assert decide(1.0, 1.3, 1.25).slower
