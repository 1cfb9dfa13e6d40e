"""Saving and the API at their edges: file modes, report folders, external data, divergence
search, lossy reasons, pinned batches.

Pinned by a mutation audit: each test fails when the condition it names is dropped or loosened.
"""

from __future__ import annotations

import os

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim import api, io
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.errors import OutputPathError
from onnxslim.io import save
from onnxslim.passes.cleanup.remove_noops import RemoveNoops
from tests.helpers import make_model, rng


_ADD = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 500] x) => (float[N, 500] y) { y = Add (x, w) }"""


def _add_model():
    return make_model(_ADD, initializers={"w": np.ones(500, np.float32)})


@pytest.mark.parametrize("external", [False, True])
def test_io_saved_model_gets_the_umask_mode_of_a_new_file(tmp_path, external):
    """A new model file is as readable as any file the user creates (umask 002: 0664), not mkstemp's 0600.
    (mutation: ``0o666 & ~umask`` -> ``0o644`` in _file_mode; also kills dropping the chmod)"""
    old = os.umask(0o002)
    try:
        io.save(_add_model(), tmp_path / "m.onnx", external_data=external)
    finally:
        os.umask(old)
    assert (tmp_path / "m.onnx").stat().st_mode & 0o777 == 0o664


def test_io_report_into_a_missing_folder_is_an_output_path_error(tmp_path):
    """A report whose folder does not exist: a typed error naming it (exit 2), not a bare FileNotFoundError.
    (mutation: ``if not target.parent.exists():`` -> ``if False:`` in write_bytes)"""
    with pytest.raises(OutputPathError, match="report folder does not exist"):
        io.write_text(tmp_path / "missing" / "r.json", "{}")


def test_io_weights_over_the_protobuf_limit_go_to_external_data(tmp_path, monkeypatch):
    """external_data=None: weights above the 2 GB protobuf limit go to <name>.data automatically.
    (mutation: ``model_nbytes(model) > PROTOBUF_LIMIT`` -> ``> PROTOBUF_LIMIT * 4``)"""
    monkeypatch.setattr(io, "PROTOBUF_LIMIT", 1000)  # the 2000-byte weight stands for > 2 GB
    io.save(_add_model(), tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx.data").is_file()


class _Perturb(Pass):
    """Test-only: a valid model with different numbers (a lossless pass gone wrong)."""

    name = "perturb-weight"

    def call(self, model):
        value = model.graph.initializers["w"]
        array = value.const_value.numpy().copy()
        array.flat[0] += 5.0
        value.const_value = ir.tensor(array, name=value.name)
        return PassResult(model, modified=True)


def _mlp():
    return make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            a = Identity (x)
            y = MatMul (a, w)
        }""", initializers={"w": rng(0).standard_normal((4, 4)).astype(np.float32)})


def test_api_first_divergent_pass_is_found_before_a_later_applied_pass():
    """The perturbing pass runs first and a cleanup after it: the search names the first, not the last.
    (mutation: the bisection's ``if validate_models(...).passed`` inverted)"""
    result = api.run(_mlp(), passes=[_Perturb(), RemoveNoops()], simplify=False)
    assert not result.passed and [r.status for r in result.pipeline.records] == ["applied", "applied"]
    assert result.first_divergent_pass == "perturb-weight"


def test_api_validate_lossy_says_it_was_asked_for(tmp_path):
    """onnxslim.validate(..., lossy=True): the lossy tolerances, and the reason "asked for (--lossy)".
    (mutation: ``if checks.lossy:`` -> ``if False:`` in validate)"""
    save(_mlp(), tmp_path / "a.onnx")
    report = api.validate(tmp_path / "a.onnx", tmp_path / "a.onnx", lossy=True, latency_runs=0)
    assert report.passed and report.lossy and report.lossy_reason == "asked for (--lossy)"


def test_api_pinned_batch_needs_one_batch_size_for_all_inputs():
    """Two inputs pinned at batches 2 and 4 fix no single batch size.
    (mutation: ``len(firsts) == 1`` -> ``>= 1`` in _pinned_batch)"""
    assert api._pinned_batch({"a": (2, 3), "b": (4, 3)}) is None
    assert api._pinned_batch({"a": (2, 3), "b": (2, 5)}) == 2
    assert api._pinned_batch({"a": (0, 3)}) is None
