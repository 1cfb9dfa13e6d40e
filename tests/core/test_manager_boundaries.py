"""The pass manager's bookkeeping: snapshots, refusals on quantized models, lossy marks.

Pinned by a mutation audit: each test fails when the condition it names is dropped or loosened.
"""

from __future__ import annotations

from onnxslim.core.manager import APPLIED, PassManager, UNCHANGED
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.passes.cleanup.remove_noops import RemoveNoops
from tests.core.test_manager import MODEL as _IDENTITY_RELU
from tests.helpers import make_model, op_types


class _LossyNothing(Pass):
    """Test-only: a lossy pass that finds nothing to do."""

    name = "lossy-nothing"
    lossy = True

    def call(self, model):
        return PassResult(model, modified=False)


def test_mgr_a_lossy_pass_that_changed_nothing_is_not_marked_lossy():
    """Only a lossy pass that modified the model counts as lossy (its stats, the lossy tolerances).
    (mutation: ``if slim_pass.lossy and result.modified:`` -> ``if slim_pass.lossy:``)"""
    _, report = PassManager([_LossyNothing()]).run(make_model(_IDENTITY_RELU))
    assert report.records[0].status == UNCHANGED and report.records[0].stats == {}
    assert report.lossy_passes == []


def test_mgr_snapshots_hold_applied_passes_only():
    """The snapshots searched for the first divergent pass are those of passes that changed the model.
    (mutation: dropping ``and record.status == APPLIED``)"""
    manager = PassManager([_LossyNothing(), RemoveNoops()], keep_snapshots=True)
    manager.run(make_model(_IDENTITY_RELU))
    assert [name for name, _ in manager.snapshots] == ["remove-noops"]


def test_mgr_non_float_weight_passes_run_on_a_quantized_model():
    """The "already quantized" refusal is for passes that need float weights; cleanup still runs.
    (mutation: ``slim_pass.float_weights and`` -> ``True and``)"""
    model = make_model("""
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[N, 4] x) => (float[N, 4] y) {
            s = Constant <value = float {0.5}> ()
            z = Constant <value = uint8 {128}> ()
            q = QuantizeLinear (x, s, z)
            d = DequantizeLinear (q, s, z)
            a = Identity (d)
            y = Relu (a)
        }""")
    result, report = PassManager([RemoveNoops()]).run(model)
    assert report.records[0].status == APPLIED and "Identity" not in op_types(result)


class _QuietBreaker(Pass):
    """Breaks its copy of the model and says it changed nothing."""

    name = "quiet-breaker"

    def call(self, model):
        model.graph.outputs[0].name = "renamed"
        return PassResult(model, modified=False)


def test_mgr_changes_of_a_pass_that_reports_none_are_dropped():
    """An unchanged pass is not checked, so its copy must not go on: a pass that renamed the graph
    output (the application's contract) while reporting modified=False got its model through."""
    model = make_model(_IDENTITY_RELU)
    out, report = PassManager([_QuietBreaker()]).run(model)
    assert report.records[0].status == "unchanged"
    assert [v.name for v in out.graph.outputs] == [v.name for v in model.graph.outputs] != ["renamed"]
