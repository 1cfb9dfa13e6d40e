"""Localization along the graph, and bisection over the pass pipeline."""

from __future__ import annotations

import numpy as np
import onnx.parser
import onnx_ir as ir

from onnxslim import io
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.validation import ValidationOptions, bisect_passes, validate_models
from onnxslim.validation.localize import capturable
from tests.validation.conftest import DIGITS, DIGITS_DATA


class Nothing(Pass):
    """Test-only: changes nothing."""

    name = "nothing"

    def call(self, model):
        return PassResult(model, modified=False)


class ScaleWeight(Pass):
    """Test-only: scales the second conv's weight by 1.05 (replacing the tensor, never mutating it)."""

    name = "scale-weight"

    def call(self, model):
        value = model.graph.initializers["features.2.weight"]
        value.const_value = ir.tensor(value.const_value.numpy() * np.float32(1.05), name=value.name)
        return PassResult(model, modified=True)


class RenameTensor(Pass):
    """Test-only: renames an intermediate tensor (numerically harmless)."""

    name = "rename-tensor"

    def call(self, model):
        model.graph.node(0).outputs[0].name = "renamed"
        return PassResult(model, modified=True)


def test_capturable_skips_renamed_and_output_tensors():
    original = io.load(DIGITS)
    renamed, _ = _run([RenameTensor()], original)
    names = capturable(original, renamed)
    assert "/features/features.0/Conv_output_0" not in names and "logits" not in names
    assert names[0] == "/features/features.1/Relu_output_0" and len(names) == 10


def test_bisect_finds_the_pass_that_breaks_outputs():
    original = io.load(DIGITS)
    passes = [Nothing(), RenameTensor(), Nothing(), ScaleWeight(), Nothing(), Nothing()]
    options = ValidationOptions(data=str(DIGITS_DATA), capture="off")
    result = bisect_passes(original, passes, lambda a, b: validate_models(a, b, options).passed)
    assert result.pass_name == "scale-weight" and result.index == 3
    assert len(result.checked) <= 4  # full pipeline, then log2(6) prefixes


def test_bisect_reports_none_when_pipeline_agrees():
    original = io.load(DIGITS)
    result = bisect_passes(original, [Nothing(), RenameTensor()], lambda a, b: validate_models(a, b, ValidationOptions()).passed)
    assert result.pass_name is None and result.checked == [2]


def test_localization_after_a_pass_names_the_broken_layer():
    original = io.load(DIGITS)
    broken, _ = _run([RenameTensor(), ScaleWeight()], original)
    report = validate_models(original, broken, ValidationOptions(data=str(DIGITS_DATA)))
    assert not report.passed
    loc = report.localization
    assert loc.first.node == "/features/features.2/Conv" and loc.first.op_type == "Conv"
    assert loc.curve[0].diverged is False and all(t.diverged for t in loc.curve[1:])


def _run(passes, model):
    from onnxslim.core.manager import PassManager

    return PassManager(passes).run(model)


def test_capture_and_latency_use_the_first_samples_of_a_dynamic_batch(monkeypatch):
    import onnxslim.validation.harness as harness

    fed = []
    run = harness.run_batches

    def recording(model, batches, **kwargs):
        batches = list(batches)
        if kwargs.get("capture"):
            fed.extend(len(next(iter(b.values() if isinstance(b, dict) else b.inputs.values()))) for b in batches)
        return run(model, batches, **kwargs)

    monkeypatch.setattr(harness, "run_batches", recording)
    broken = io.load(DIGITS)
    broken.graph.initializers[next(iter(broken.graph.initializers))].const_value = ir.tensor(
        np.asarray(next(iter(broken.graph.initializers.values())).const_value.numpy()) * 1.5)
    report = validate_models(io.load(DIGITS), broken, ValidationOptions(data=str(DIGITS_DATA), latency_runs=3))
    assert not report.passed and report.providers[0].localization is not None
    assert fed == [harness.CAPTURE_SAMPLES] * 2  # both models, first 4 samples of the first batch of 32
    assert report.latency.batch == 1 and report.to_dict()["latency"]["batch"] == 1


def test_divergence_can_start_at_a_graph_output_that_later_nodes_read(tmp_path):
    # the outputs were left out of the captured tensors: the start was put one node too late
    for capture in ("auto", "always"):
        report = validate_models(io.load(_chain(2.0)), io.load(_chain(2.5)), ValidationOptions(capture=capture))
        (run,) = report.providers
        assert not report.passed and run.localization.first.name == "t2", (capture, run.localization.first)


def _chain(k: float):
    return onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y, float[N, 4] t2) <float k = {{{k}}}, float one = {{1.0}}> {{
            t1 = Relu(x)
            t2 = Mul(t1, k)
            t3 = Add(t2, one)
            t4 = Tanh(t3)
            y = Neg(t4)
        }}""")
