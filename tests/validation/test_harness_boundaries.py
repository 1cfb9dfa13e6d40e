"""The validation harness at its edges: what localization compares, scored outputs, empty data,
pinned batches, capture settings, report fields and lines.

Pinned by a mutation audit: each test fails when the condition it names is dropped or loosened.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.errors import DataError
from onnxslim.validation.compare import LOSSLESS, OutputComparison
from onnxslim.validation.harness import score_outputs
from onnxslim.validation.localize import bisect_passes, capturable, localize
from onnxslim.validation.report import tolerances_line
from onnxslim.validation.result import ProviderRun, ValidationReport
from tests.helpers import make_model, rng


_CAST_PAIR = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 8] x) => (float[N, 8] y) <{t_type} t> {{
    axes = Constant <value = int64[1] {{2}}> ()
    t = {t_op}
    y = {y_op}
}}"""


def _pair(t_type, t_op, y_op):
    original = make_model(_CAST_PAIR.format(t_type="float[N, 8]", t_op="Relu (x)", y_op="Neg (t)"))
    optimized = make_model(_CAST_PAIR.format(t_type=t_type, t_op=t_op, y_op=y_op))
    return original, optimized


def test_capture_skips_a_tensor_of_another_dtype():
    """A tensor that the optimized model holds in float16 is not compared with the float32 original's.
    (mutation: ``a.dtype != b.dtype`` -> ``False`` in _same_type)"""
    original, optimized = _pair("float16[N, 8]", "Cast <to = 10> (x)", "Cast <to = 1> (t)")
    assert "t" in capturable(original, original)
    assert "t" not in capturable(original, optimized)


def test_capture_skips_a_tensor_of_another_rank():
    """A tensor of another rank (same name) is another tensor: not compared.
    (mutation: dropping ``len(a.shape) == len(b.shape) and`` in _same_type)"""
    original, optimized = _pair("float[N, 8, 1]", "Unsqueeze (x, axes)", "Squeeze (t, axes)")
    assert "t" not in capturable(original, optimized)


def test_localization_lists_at_most_five_offenders():
    """The first diverging tensor plus the 4 largest errors: TOP_OFFENDERS rows, not one more.
    (mutation: ``[:TOP_OFFENDERS - 1]`` -> ``[:TOP_OFFENDERS]``)"""
    lines = "\n".join(f"    t{i} = Neg (t{i - 1})" for i in range(1, 9))
    model = make_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] t0) => (float[N, 8] t8) {{
        {lines}
        }}""")
    r = rng(0)
    ref = {f"t{i}": r.standard_normal((2, 8)).astype(np.float32) for i in range(1, 8)}
    got = {name: value + (i + 1) for i, (name, value) in enumerate(ref.items())}  # every one diverges
    found = localize(model, model, ref, got, LOSSLESS)
    assert found.compared == 7 and found.first.name == "t1"
    assert len(found.offenders) == 5 and found.offenders[0].name == "t1"


def test_localization_skips_tensors_whose_runtime_shapes_differ():
    """A captured tensor with another runtime shape in the optimized model is not compared.
    (mutation: ``if ref[name].shape != got[name].shape:`` -> ``if False:``)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] t0) => (float[N, 8] t2) {
            t1 = Neg (t0)
            t2 = Neg (t1)
        }""")
    ref = {"t1": np.ones((2, 8), np.float32)}
    got = {"t1": np.ones((1, 8), np.float32)}
    found = localize(model, model, ref, got, LOSSLESS)
    assert found.compared == 0 and found.first is None and found.curve == []


# bisect_passes: target tests/validation/test_localize.py


def _marker(label):
    class Mark(Pass):
        """Test-only: leaves a mark in the model's metadata (a modified, valid model)."""

        name = label

        def call(self, model):
            model.metadata_props[label] = "1"
            return PassResult(model, modified=True)
    return Mark()


def test_bisect_names_the_first_breaking_pass_among_four():
    """Four passes, the third breaks the outputs: bisection narrows to exactly that one.
    (mutation: ``while high - low > 1`` -> ``> 2``: it stopped one pass late)"""
    original = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) { y = Relu (x) }""")
    passes = [_marker(f"p{i}") for i in range(4)]
    found = bisect_passes(original, passes, lambda a, b: "p2" not in b.metadata_props)
    assert (found.pass_name, found.index) == ("p2", 2)


def test_a_conv_head_through_flatten_is_a_score_output():
    """SqueezeNet-style: class scores from a 1x1 Conv, then GlobalAveragePool-free Flatten: held to top-1.
    (mutation: "Conv" dropped from SCORING_OPS)"""
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8, 1, 1] x) => (float[N, 10] y) {
            c = Conv (x, w)
            y = Flatten (c)
        }""", initializers={"w": rng(0).standard_normal((10, 8, 1, 1)).astype(np.float32)})
    assert score_outputs(model) == frozenset({"y"})


def test_zero_random_samples_is_no_agreement():
    """random_samples=0: nothing compared must not read as a pass.
    (mutation: ``if ran and ran[0].samples == 0`` -> ``and False`` in _validate)"""
    from onnxslim.errors import DataError
    from onnxslim.validation import ValidationOptions
    from onnxslim.validation.harness import validate_models

    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) { y = Relu (x) }""")
    with pytest.raises(DataError, match="no samples"):
        validate_models(model, model.clone(), ValidationOptions(random_samples=0, latency_runs=0))


def _relu_pair(second="Relu"):
    from onnxslim.validation import ValidationOptions  # noqa: F401

    text = """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {{ h = Relu (x)
         y = {op} (h) }}"""
    return make_model(text.format(op="Relu")), make_model(text.format(op=second))


def test_random_batches_under_pinned_shapes_are_described_as_they_are():
    """--input-shape pins the batch: the random batches take the pinned size, and the report does
    not claim "batches of 2". (mutation: ``... if dynamic and not options.input_shapes else 1`` without the pins clause)"""
    from onnxslim.validation import ValidationOptions
    from onnxslim.validation.harness import validate_models

    original, _ = _relu_pair()
    report = validate_models(original, original.clone(),
                             ValidationOptions(input_shapes={"x": (3, 4)}, random_samples=2, latency_runs=0))
    assert report.passed and report.samples == 6 and report.data == "2 random batch(es), seed 0"


def test_capture_off_means_no_localization_even_on_failure():
    """capture="off": a failed validation is not followed by a capture run to localize it.
    (mutation: ``elif not record.passed and options.capture == "auto"`` -> ``and True``)"""
    from onnxslim.validation import ValidationOptions
    from onnxslim.validation.harness import validate_models

    original, broken = _relu_pair("Neg")
    report = validate_models(original, broken, ValidationOptions(capture="off", latency_runs=0))
    assert not report.passed and report.localization is None
    auto = validate_models(original, broken, ValidationOptions(latency_runs=0))
    assert auto.localization is not None


def test_cpu_run_has_no_cross_provider_rows():
    """The CPU run is the reference of the cross-provider comparison: no "cpu vs cpu" rows.
    (mutation: dropping ``outcome.record.provider == "cpu" or`` in _attach_cross)"""
    from onnxslim.validation import ValidationOptions
    from onnxslim.validation.harness import validate_models

    original, _ = _relu_pair()
    report = validate_models(original, original.clone(), ValidationOptions(latency_runs=0))
    assert [p.provider for p in report.providers] == ["cpu"] and report.providers[0].cross == []


def test_latency_under_a_pinned_batch_runs_at_that_batch(tmp_path):
    """Data read under an --input-shape pin of batch 4: latency is timed on the pinned batch (the
    models take no other), not cut to one sample.
    (mutation: ``getattr(prep.reader, "fixed_batch", None) or`` -> ``False or`` in _head)"""
    from onnxslim.validation import ValidationOptions
    from onnxslim.validation.harness import validate_models

    original, _ = _relu_pair()
    np.savez(tmp_path / "d.npz", x=rng(0).standard_normal((8, 4)).astype(np.float32))
    report = validate_models(original, original.clone(), ValidationOptions(
        data=str(tmp_path / "d.npz"), input_shapes={"x": (4, 4)}, latency_runs=2, latency_warmup=1))
    assert report.samples == 8 and report.latency.batch == 4


def _report(*runs):
    return ValidationReport(passed=False, outputs=[], samples=2, providers=list(runs))


def _failed_output(failure):
    return OutputComparison("y", 1.0, 0.5, 0.9, 0, False, failures=[failure])


def test_tolerances_decide_only_a_metrics_failure():
    """tolerances_decided (which offers looser tolerances) is False when a provider could not run the
    optimized model, or when an output changed shape: no tolerance turns those into a pass.
    (mutation: dropping ``and not any(p.failure for p in self.providers)``; also kills the "shape " one)"""
    metrics = ProviderRun("cpu", "ran", outputs=[_failed_output("cosine 0.9 < 0.9999")])
    assert _report(metrics).tolerances_decided
    broken = ProviderRun("cuda", "ran", failure="the optimized model does not run where the original does: x")
    assert not _report(metrics, broken).tolerances_decided
    reshaped = ProviderRun("cpu", "ran", outputs=[_failed_output("shape [2, 3] != reference [2, 4] (first batch)")])
    assert not _report(reshaped).tolerances_decided


def test_failures_name_a_provider_that_could_not_run_the_optimized_model():
    """A run failure is a failure line (printed in red by the CLI, and the reason of a strict failure).
    (mutation: the ``{p.provider}: {p.failure}`` lines dropped from ValidationReport.failures)"""
    broken = ProviderRun("cpu", "ran", failure="the optimized model does not run where the original does: boom")
    report = _report(broken)
    assert report.failures() == ["cpu: the optimized model does not run where the original does: boom"]
    assert report.reasons() == report.failures()


def test_tolerances_line_says_when_there_is_no_elementwise_check():
    """An infinite rtol (or atol) means no elementwise check; lossy runs say why they are lossy.
    (mutation: ``math.isinf(tol.atol) or math.isinf(tol.rtol)`` -> ``math.isinf(tol.atol)``; also kills dropping the reason)"""
    half = ValidationReport(passed=True, outputs=[], samples=1, lossy=True, lossy_reason="quantize-static ran",
                            tolerances=dataclasses.replace(LOSSLESS, rtol=math.inf))
    line = tolerances_line(half)
    assert line.startswith("tolerances: lossy (quantize-static ran): cosine >= 0.9999")
    assert line.endswith("; no elementwise check") and "atol" not in line
    assert "lossy (" not in tolerances_line(dataclasses.replace(half, lossy_reason=None))


def test_no_accuracy_when_the_optimized_outputs_are_no_longer_class_scores(tmp_path):
    """Labels given, but the optimized model's output is no classifier output any more ([N, 1]):
    no accuracy line (and a failed validation), not a crash.
    (mutation: dropping ``or found["optimized"] is None`` in harness._accuracy)"""
    from onnxslim.validation import ValidationOptions
    from onnxslim.validation.harness import validate_models

    text = """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, M] y) {{ {body} }}"""
    original = make_model(text.format(body="y = MatMul (x, w)"),
                          initializers={"w": rng(0).standard_normal((4, 10)).astype(np.float32)})
    optimized = make_model(text.format(body="axes = Constant <value = int64[1] {1}> ()\n y = ReduceSum (x, axes)"))
    np.savez(tmp_path / "d.npz", x=rng(1).standard_normal((6, 4)).astype(np.float32), labels=np.arange(6) % 10)
    report = validate_models(original, optimized, ValidationOptions(data=str(tmp_path / "d.npz"), latency_runs=0))
    assert not report.passed and report.accuracy is None


def test_shape_failure_is_not_blamed_on_the_first_batch_when_it_agreed(tmp_path):
    """The first batch's output shapes agree ([4, 4]); a later batch's do not: the failure keeps the
    joined shapes, not a "shape [4, 4] != reference [4, 4] (first batch)" that contradicts itself.
    (mutation: dropping ``and before != after`` in _run_provider)"""
    from onnxslim.validation import ValidationOptions
    from onnxslim.validation.harness import validate_models

    text = """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[P, M] y) {{ {body} }}"""
    original = make_model(text.format(body="y = Relu (x)"))
    optimized = make_model(text.format(body="s = Constant <value = int64[2] {4, -1}> ()\n y = Reshape (x, s)"))
    np.savez(tmp_path / "d.npz", x=np.abs(rng(1).standard_normal((6, 4))).astype(np.float32))
    report = validate_models(original, optimized, ValidationOptions(data=str(tmp_path / "d.npz"), batch_size=4,
                                                                   latency_runs=0, capture="off"))
    shape_lines = [f for f in report.failures() if "shape" in f]
    assert not report.passed and shape_lines and not any("(first batch)" in f for f in shape_lines), report.failures()
