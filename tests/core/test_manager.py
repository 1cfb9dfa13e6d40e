import onnx_ir as ir
import pytest

from onnxslim.core.manager import APPLIED, ROLLED_BACK, UNCHANGED, PassManager
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.errors import PipelineFailed
from onnxslim.passes.cleanup.remove_noops import RemoveNoops
from tests.helpers import make_model, op_types

MODEL = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 4] y) {
    a = Identity (x)
    y = Relu (a)
}
"""


class BreakModel(Pass):
    """Test-only: wires a node to a value that does not exist."""

    name = "break-model"

    def call(self, model):
        node = model.graph.node(-1)
        ghost = ir.Value(name="ghost")
        node.replace_input_with(0, ghost)
        return PassResult(model, modified=True)


class RenameOutput(Pass):
    """Test-only: changes the contract while staying a valid model."""

    name = "rename-output"

    def call(self, model):
        model.graph.outputs[0].name = "renamed"
        return PassResult(model, modified=True)


class Crash(Pass):
    name = "crash"

    def call(self, model):
        raise RuntimeError("boom\nsecond line")


@pytest.mark.parametrize("bad_pass, reason", [
    (BreakModel(), "onnx"),
    (RenameOutput(), "inputs/outputs"),
    (Crash(), "RuntimeError: boom"),
])
def test_failing_pass_is_rolled_back_and_later_passes_still_run(bad_pass, reason):
    model = make_model(MODEL)
    result_model, report = PassManager([bad_pass, RemoveNoops()]).run(model)
    assert [r.status for r in report.records] == [ROLLED_BACK, APPLIED]
    assert reason in report.records[0].reason and "\n" not in report.records[0].reason
    assert not report.ok
    assert op_types(result_model) == ["Relu"]
    assert [o.name for o in result_model.graph.outputs] == ["y"]


def test_strict_stops_at_the_failing_pass():
    with pytest.raises(PipelineFailed, match="break-model"):
        PassManager([BreakModel()], strict=True).run(make_model(MODEL))


def test_input_model_is_not_modified_and_stats_are_recorded():
    model = make_model(MODEL)
    out, report = PassManager([RemoveNoops(), RemoveNoops()]).run(model)
    assert op_types(model) == ["Identity", "Relu"]
    assert op_types(out) == ["Relu"]
    first, second = report.records
    assert (first.status, first.before.nodes, first.after.nodes) == (APPLIED, 2, 1)
    assert second.status == UNCHANGED
    assert first.seconds >= 0 and report.ok
    assert report.to_dict()["passes"][0]["stats"]["nodes_removed"] == 1


def test_progress_callback_sees_every_pass():
    seen = []
    PassManager([RemoveNoops(), RemoveNoops()], progress=lambda name, i, n: seen.append((name, i, n))).run(make_model(MODEL))
    assert seen == [("remove-noops", 0, 2), ("remove-noops", 1, 2), ("", 2, 2)]


class PerturbWeight(Pass):
    """Test-only: a valid model with different numbers (a lossless pass gone wrong)."""

    name = "perturb-weight"

    def call(self, model):
        value = next(iter(model.graph.initializers.values()))
        array = value.const_value.numpy().copy()
        array.flat[0] += 5.0
        value.const_value = ir.tensor(array, name=value.name)
        return PassResult(model, modified=True)


def test_failed_validation_names_the_first_divergent_pass():
    import onnxslim
    from tests.helpers import MODELS

    result = onnxslim.run(MODELS / "digits_cnn.onnx", passes=[PerturbWeight(), RemoveNoops()],
                          validation={"data": str(MODELS / "digits_eval.npz")})
    assert not result.passed
    assert result.first_divergent_pass == "perturb-weight"
    assert result.to_dict()["first_divergent_pass"] == "perturb-weight"


class LossyNoop(Pass):
    """Test-only: claims to be lossy (so latency is measured) and changes nothing that matters."""

    name = "lossy-noop"
    lossy = True

    def call(self, model):
        return PassResult(model, modified=True)


def _slow_latency(*args, **kwargs):
    from onnxslim.validation.latency import LatencyReport, LatencyStats

    stats = [LatencyStats(label, ms, ms, 3) for label, ms in (("original", 1.0), ("optimized", 2.0), ("original (repeat)", 1.0))]
    return LatencyReport("cpu", 1, 1, stats, noise=0.0, ratio=2.0, slower=True)


def test_a_lossy_pipeline_that_runs_slower_is_flagged_and_fails_under_strict(tmp_path, monkeypatch, capsys):
    import onnxslim
    from onnxslim import cli
    from onnxslim.core import registry
    from onnxslim.validation import harness
    from tests.helpers import MODELS

    monkeypatch.setattr(harness, "measure_latency", _slow_latency)
    result = onnxslim.run(MODELS / "digits_cnn.onnx", passes=[LossyNoop()])
    assert result.validation.latency is not None  # measured without being asked
    assert result.slower_than_original and "SLOWER" in result.warnings[0]

    original = registry.all_passes
    monkeypatch.setattr(registry, "all_passes", lambda: {**original(), LossyNoop.name: LossyNoop})
    out = tmp_path / "out.onnx"
    assert cli.main([str(MODELS / "digits_cnn.onnx"), str(out), "--pass", "lossy-noop", "--strict"]) == 1
    assert not out.exists() and "SLOWER" in capsys.readouterr().err
    assert cli.main([str(MODELS / "digits_cnn.onnx"), str(out), "--pass", "lossy-noop", "-q"]) == 0 and out.exists()


@pytest.mark.parametrize("family", [{"prune": 0.3}, {"lowrank": 0.95}])
def test_a_float_weight_pass_after_quantization_warns_instead_of_doing_nothing_silently(tmp_path, family):
    # a recipe's [[pass]] steps run before its [options] families: quantize then prune found no
    # float weight, and reported "unchanged" with no word of why
    import onnxslim
    from tests.helpers import MODELS

    recipe = tmp_path / "r.toml"
    recipe.write_text('[[pass]]\nname = "quantize-dynamic"\n')
    result = onnxslim.run(MODELS / "vit_tiny.onnx", recipe=recipe, validate=False, **family)
    record = result.pipeline.records[-1]
    assert record.name in ("prune-magnitude", "prune-channels", "split-lowrank") and record.status == UNCHANGED
    assert any("run it before quantization" in w for w in result.warnings)


BRANCH_MATMUL = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 64] x, bool c) => (float[N, 64] y) {
    y = If (c) <then_branch = t () => (float[N, 64] a) { a = MatMul (x, w) },
                else_branch = e () => (float[N, 64] b) { b = Relu (x) }>
}
"""


@pytest.mark.parametrize("family", [{"quantize": "dynamic"}, {"prune": 0.5}, {"lowrank": 0.9}])
def test_a_compression_pass_that_finds_its_weights_only_inside_branches_says_so(family):
    # silero VAD keeps every weight in its If branches: --quantize / --prune reported "unchanged", no warning
    import numpy as np
    import onnx

    import onnxslim

    proto = onnx.parser.parse_model(BRANCH_MATMUL)
    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    proto.graph.node[0].attribute[0].g.initializer.append(onnx.numpy_helper.from_array(weight, "w"))
    result = onnxslim.run(proto, validate=False, **family)
    lossy = [r for r in result.pipeline.records if r.name.startswith(("quantize", "prune", "split-lowrank"))]
    assert lossy and all(r.status == UNCHANGED for r in lossy)
    assert any("100% of the weights are inside If/Loop bodies, which it does not enter" in w for w in result.warnings)
