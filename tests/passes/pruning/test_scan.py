"""The sensitivity scan: units, cosine/accuracy per amount, the greedy proposal and its check."""

import numpy as np
import pytest

import onnxslim
from onnxslim.data.readers import DataBatch
from onnxslim.passes.pruning.scan import (Proposal, ScanPoint, ScanResult, UnitScan, propose_amounts, scan_prune,
                                          scan_sensitivity, scan_units)
from tests.helpers import MODELS, make_model, rng
from tests.passes.pruning._util import conv_weights

HEAD = '<ir_version: 8, opset_import: ["" : 17]>\n'
TEXT = """g (float[N, 3, 8, 8] x) => (float[N, 4] y) {
    a = Conv <pads = [1, 1, 1, 1]> (x, wa)
    b = Conv <pads = [1, 1, 1, 1]> (a, wb)
    s = Add (b, a)
    r = Relu (s)
    c = Conv <pads = [1, 1, 1, 1]> (r, wc)
    p = GlobalAveragePool (c)
    f = Flatten (p)
    y = Gemm <transB = 1> (f, wf)
}"""


def model():
    r = rng(0)
    return make_model(HEAD + TEXT, initializers={"wa": conv_weights(r, 8, 3), "wb": conv_weights(r, 8, 8),
                                                 "wc": conv_weights(r, 8, 8), "wf": r.standard_normal((4, 8)).astype(np.float32)})


def batches(labels=True):
    r = rng(1)
    return [DataBatch({"x": r.standard_normal((8, 3, 8, 8)).astype(np.float32)},
                      r.integers(0, 4, 8) if labels else None) for _ in range(2)]


def test_units_are_groups_with_the_coupled_stem_and_without_the_last_layer():
    units = scan_units(model(), "channel")
    assert [u.layers for u in units] == [["a", "b"], ["c"]]
    assert units[0].params == 8 * 3 * 9 + 8 * 8 * 9
    assert [u.layers for u in scan_units(model(), "magnitude")] == [["b"], ["c"]]  # first and last layers skipped


def test_scan_measures_each_unit_alone():
    scan = scan_sensitivity(model(), batches(), amounts=(0.25, 0.5), importance="magnitude", round_to=1)
    assert scan.baseline_accuracy is not None and scan.params == 8 * 3 * 9 + 2 * 8 * 8 * 9 + 32
    for unit in scan.units:
        assert [p.amount for p in unit.points] == [0.25, 0.5]
        removed = [p.params_removed for p in unit.points]
        assert 0 < removed[0] < removed[1]
        assert all(-1 <= p.cosine < 1 and p.accuracy is not None for p in unit.points)
        assert unit.points[1].cosine < unit.points[0].cosine  # seeded run: more pruning, lower cosine
    assert scan.to_dict()["units"][0]["points"][0]["amount"] == 0.25
    without = scan_sensitivity(model(), batches(labels=False), amounts=(0.5,), importance="magnitude", round_to=1)
    assert without.baseline_accuracy is None and without.units[0].points[0].accuracy is None


def synthetic_scan():
    def unit(name, curve):
        return UnitScan(name, [name], 100, [ScanPoint(a, c, None, p) for a, c, p in curve])
    return ScanResult("channel", [0.3, 0.6], 1000, None, [
        unit("robust", [(0.3, 0.999, 100), (0.6, 0.99, 200)]),  # loss per param: 1e-5, then 9e-5
        unit("fragile", [(0.3, 0.95, 100), (0.6, 0.8, 200)]),
    ])


def test_proposal_takes_the_cheapest_loss_per_parameter_within_the_budget():
    proposal = propose_amounts(synthetic_scan(), max_cosine_loss=0.02)
    assert proposal.amounts == {"robust": 0.6}
    assert proposal.overrides == ["robust=0.6"] and proposal.params_removed == 200 and proposal.param_reduction == 0.2
    assert proposal.predicted_cosine_loss == pytest.approx(0.01)
    assert propose_amounts(synthetic_scan(), target_reduction=0.05).amounts == {"robust": 0.3}  # stops at the target
    assert propose_amounts(synthetic_scan(), max_cosine_loss=1.0).amounts == {"robust": 0.6, "fragile": 0.6}
    assert propose_amounts(synthetic_scan(), max_cosine_loss=0.0).amounts == {}
    with pytest.raises(ValueError):
        propose_amounts(synthetic_scan(), target_reduction=1.5)


def test_scan_prune_on_the_digits_model_checks_its_proposal():
    archive = np.load(MODELS / "digits_eval.npz")
    data = [DataBatch({"input": archive["input"][i:i + 120]}, archive["labels"][i:i + 120]) for i in range(0, 360, 120)]
    cleaned = onnxslim.api.run(MODELS / "digits_cnn.onnx", validate=False).model
    scan = scan_prune(cleaned, data, amounts=(0.3, 0.5), max_cosine_loss=0.02, importance="magnitude")
    assert scan.baseline_accuracy == pytest.approx(0.9917, abs=1e-3)  # models/README.md
    assert len(scan.units) == 3  # the uncoupled stem and the classifier's outputs are not scanned
    proposal = scan.proposal
    assert isinstance(proposal, Proposal) and proposal.amounts and proposal.param_reduction > 0.1
    # losses add up only to first order: the measured loss of the whole proposal stays near the budget
    assert 1 - proposal.measured_cosine <= 0.04 and proposal.measured_accuracy >= 0.95


def test_report_renders_table_and_html():
    from rich.console import Console

    from onnxslim.passes.pruning.scan_report import scan_html, scan_table

    scan = synthetic_scan()
    scan.proposal = propose_amounts(scan, max_cosine_loss=0.02)
    data = scan.to_dict()
    console = Console(width=120, record=True)
    console.print(scan_table(data))
    text = console.export_text()
    assert "robust" in text and "0.9990" in text and "60%" in text and "20.0% of the parameters" in text
    page = scan_html(data)
    assert page.count("<svg") == 2 and '--prune-overrides "robust=0.6"' in page


def test_the_printed_command_applies_the_proposal_as_the_scan_measured_it(tmp_path, capsys):
    """Channels were ranked by activation importance on the scan's data: the command must carry it."""
    import json
    import shlex

    import onnx

    from onnxslim import cli

    argv = ["scan-prune", str(MODELS / "resnet_mini.onnx"), "--calibration-data", str(MODELS / "digits16_calib.npz"),
            "--calibration-samples", "16", "--target-reduction", "0.3", "--json"]
    assert cli.main(argv) == 0
    proposal = json.loads(capsys.readouterr().out)["proposal"]
    command = shlex.split(proposal["command"])
    assert command[0] == "onnxslim" and "--calibration-data" in command and "--calibration-samples" in command
    command[2] = str(tmp_path / "pruned.onnx")
    assert cli.main([*command[1:], "--no-validate", "--json"]) == 0
    passes = json.loads(capsys.readouterr().out)["pipeline"]["passes"]
    stats = next(p["stats"] for p in passes if p["name"] == "prune-channels")
    assert stats["params_removed"] == proposal["params_removed"] > 0
    assert onnx.load(str(tmp_path / "pruned.onnx")).graph.node
