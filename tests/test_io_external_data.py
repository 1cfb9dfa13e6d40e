"""Models stored with external data: the output is self-contained, never tied to the input's data file."""

import hashlib
import shutil

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnxslim
from onnxslim import io
from onnxslim.cli import main
from onnxslim.errors import OutputPathError
from onnxslim.external_data import model_tensor_protos
from tests.helpers import MODELS, run_ort

RESNET = MODELS / "resnet_mini.onnx"


def _external_copy(folder, model=RESNET, location="m.data"):
    """``model`` saved as ``folder/m.onnx`` + ``folder/<location>``; a small threshold puts the small
    tensors (BatchNorm vectors, shapes) out there too."""
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save(onnx.load(str(model)), str(path), save_as_external_data=True, location=location, size_threshold=64)
    return path


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _locations(path):
    """The external data locations the saved model refers to."""
    proto = onnx.load(str(path), load_external_data=False)
    return {entry.value for tensor in model_tensor_protos(proto)
            for entry in tensor.external_data if entry.key == "location"}


def _feeds():
    return {"input": np.load(MODELS / "digits16_eval.npz")["input"][:8]}


def _runs_alone(files, folder):
    """Copies ``files`` (the model first) into a folder of their own; outputs there."""
    folder.mkdir()
    for file in files:
        shutil.copy(file, folder / file.name)
    return run_ort(folder / files[0].name, _feeds())


@pytest.mark.parametrize("validate", [False, True])
def test_output_elsewhere_is_self_contained_and_inline(tmp_path, validate):
    src = _external_copy(tmp_path / "in")
    before = _digests(src.parent)
    (tmp_path / "out").mkdir()
    result = onnxslim.run(src, tmp_path / "out" / "o.onnx", validate=validate)
    assert result.pipeline.ok  # the cleanup ran on the externally stored weights, nothing rolled back
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["o.onnx"]  # under 2 GB: inline, no temp files left
    assert _locations(tmp_path / "out" / "o.onnx") == set()
    expected = run_ort(RESNET, _feeds())[0]
    np.testing.assert_allclose(_runs_alone([tmp_path / "out" / "o.onnx"], tmp_path / "alone")[0], expected,
                               rtol=1e-5, atol=1e-5)
    assert _digests(src.parent) == before


def test_output_beside_the_input_does_not_read_its_data_file(tmp_path):
    src = _external_copy(tmp_path / "in")
    before = _digests(src.parent)
    assert main([str(src), str(src.parent / "o.onnx"), "--no-validate", "-q"]) == 0
    assert _locations(src.parent / "o.onnx") == set()
    assert sorted(p.name for p in src.parent.iterdir()) == ["m.data", "m.onnx", "o.onnx"]
    assert {k: v for k, v in _digests(src.parent).items() if k != "o.onnx"} == before
    actual = _runs_alone([src.parent / "o.onnx"], tmp_path / "alone")[0]
    np.testing.assert_allclose(actual, run_ort(src, _feeds())[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("same_folder", [False, True])
def test_external_output_gets_its_own_data_file(tmp_path, same_folder):
    src = _external_copy(tmp_path / "in")
    before = _digests(src.parent)
    out = src.parent if same_folder else tmp_path / "out"
    out.mkdir(exist_ok=True)
    assert main([str(src), str(out / "o.onnx"), "--external-data", "--no-validate", "-q"]) == 0
    assert _locations(out / "o.onnx") == {"o.onnx.data"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # temporary files renamed or removed
    actual = _runs_alone([out / "o.onnx", out / "o.onnx.data"], tmp_path / "alone")[0]
    np.testing.assert_allclose(actual, run_ort(RESNET, _feeds())[0], rtol=1e-5, atol=1e-5)
    assert {k: v for k, v in _digests(src.parent).items() if k in before} == before


def _constant_matmul(path, weights):
    """``y = x @ w`` with ``w`` a Constant node, its value stored in ``m.data`` (onnx.save's
    convert_attribute=True); onnx-ir's saver re-writes initializers only."""
    constant = onnx.helper.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(weights, "w_value"))
    graph = onnx.helper.make_graph(
        [constant, onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 64])])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(proto, str(path), save_as_external_data=True, location="m.data", size_threshold=64, convert_attribute=True)
    assert _locations(path) == {"m.data"}


@pytest.mark.parametrize("loader", ["onnxslim", "onnx_ir"])  # io.load reads such tensors at once; ir.load lazily
@pytest.mark.parametrize("external_data", [False, True])
def test_constant_node_tensors_stored_externally_are_copied(tmp_path, external_data, loader):
    weights = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "m.onnx"
    _constant_matmul(src, weights)
    (tmp_path / "out").mkdir()
    model = io.load(src) if loader == "onnxslim" else ir.load(src)
    dst = io.save(model, tmp_path / "out" / "o.onnx", external_data=external_data)
    assert _locations(dst) == set()  # a Constant's value is serialized inline (only initializers go to o.onnx.data)
    x = {"x": np.ones((2, 64), np.float32)}
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(dst, alone / "o.onnx")
    np.testing.assert_allclose(run_ort(alone / "o.onnx", x)[0], x["x"] @ weights, rtol=1e-4, atol=1e-4)


def test_cli_with_validation_on_a_constant_stored_externally(tmp_path):
    """The checks and the harness save through onnx-ir, which re-writes initializers only."""
    weights = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "m.onnx"
    _constant_matmul(src, weights)
    assert main([str(src), str(src.parent / "o.onnx"), "-q"]) == 0
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(src.parent / "o.onnx", alone / "o.onnx")
    x = {"x": np.ones((2, 64), np.float32)}
    np.testing.assert_allclose(run_ort(alone / "o.onnx", x)[0], x["x"] @ weights, rtol=1e-4, atol=1e-4)


def test_saving_over_the_data_file_the_model_reads_is_refused(tmp_path):
    src = _external_copy(tmp_path / "in", location="m.onnx.data")
    before = _digests(src.parent)
    with pytest.raises(OutputPathError, match="read by the model"):
        io.save(io.load(src), src, external_data=True)
    assert _digests(src.parent) == before


def test_a_failed_save_leaves_the_previous_output_and_no_temporary_files(tmp_path, monkeypatch):
    src = _external_copy(tmp_path / "in")
    (tmp_path / "out").mkdir()
    dst = tmp_path / "out" / "o.onnx"
    dst.write_bytes(b"previous")

    def fail(model):
        raise RuntimeError("disk full")

    monkeypatch.setattr(io, "_compact_proto", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save(io.load(src), dst)
    assert [p.name for p in dst.parent.iterdir()] == ["o.onnx"] and dst.read_bytes() == b"previous"


def test_optimize_returns_a_self_contained_proto(tmp_path):
    proto = onnxslim.optimize(_external_copy(tmp_path / "in"), validate=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    reference = run_ort(onnx.load(str(RESNET)), _feeds())
    np.testing.assert_allclose(run_ort(proto, _feeds())[0], reference[0], rtol=1e-4, atol=1e-5)


def test_opset_upgrade_for_per_channel_weights_keeps_external_weights(tmp_path):
    """An opset-12 export quantized per channel goes through onnx's version converter (a proto round
    trip): the upgraded graph must still find its weights."""
    old, proto = tmp_path / "old.onnx", onnx.load(str(RESNET))
    proto.opset_import[0].version = 12  # its ops (Conv, BatchNormalization, Relu, Add, pooling, Gemm) read the same at 12
    for node in proto.graph.node:  # but for BatchNormalization's training_mode (opset 14), which is 0 anyway
        kept = [a for a in node.attribute if a.name != "training_mode"]
        del node.attribute[:]
        node.attribute.extend(kept)
    onnx.save(proto, str(old))
    path = _external_copy(tmp_path / "in", model=old)
    out = tmp_path / "out" / "q.onnx"
    out.parent.mkdir()
    assert main([str(path), str(out), "--quantize", "static", "--calibration-data",
                 str(MODELS / "digits16_calib.npz"), "--no-validate", "-q"]) == 0
    assert _locations(out) == set()
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    run_ort(onnx.load(str(out)), _feeds())
