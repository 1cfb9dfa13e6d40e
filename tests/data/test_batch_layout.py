"""How data is cut into batches for a model's inputs (``checks.input_layout``): a fixed or pinned
batch size is the one batches get, Paddle's -1 dims are dynamic, scalars and inputs without the
batch axis are passed whole with every batch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxslim.cli import main
from onnxslim.data import FirstSamples, open_reader
from onnxslim.errors import DataError
from onnxslim.runtime import run_batches
from tests.helpers import MODELS, make_model, rng

FIXED = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[{batch}, 3] x) => (float[{batch}, 3] y) {{ y = Relu(x) }}"""
SCALAR = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3] x, float thr) => (float[N, 3] y) { y = Mul(x, thr) }"""
TABLE = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 8] x, float[8, 4] t) => (float[N, 4] y) { y = MatMul(x, t) }"""


def _x(n, width=3):
    return rng(n).standard_normal((n, width)).astype(np.float32)


def _pin_batch(src, dst, size: int):
    """A copy of ``src`` exported at a fixed batch size (its first input and output dims)."""
    proto = onnx.load(str(src))
    for value in [*proto.graph.input, *proto.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = size
    onnx.save(proto, str(dst))
    return dst


@pytest.mark.parametrize("batch", [1, 4])
def test_a_fixed_batch_model_gets_batches_of_its_size(tmp_path, batch):
    model = make_model(FIXED.format(batch=batch))
    np.savez(tmp_path / "d.npz", x=_x(8), labels=np.arange(8))
    reader = open_reader(tmp_path / "d.npz", model)  # default batch_size 32: the model takes no other than `batch`
    assert {b.inputs["x"].shape[0] for b in reader} == {batch} and reader.fixed_batch == batch
    assert run_batches(model, reader).samples == 8


def test_a_pinned_batch_is_the_batch_size(tmp_path):
    np.savez(tmp_path / "d.npz", x=_x(6))
    reader = open_reader(tmp_path / "d.npz", make_model(FIXED.format(batch="N")), input_shapes={"x": (2, 3)})
    assert [len(b.inputs["x"]) for b in reader] == [2, 2, 2]


def test_samples_that_do_not_fill_the_fixed_batch_are_one_error_naming_the_file(tmp_path):
    model = make_model(FIXED.format(batch=4))
    np.savez(tmp_path / "d.npz", x=_x(10))
    with pytest.raises(DataError, match=r"d\.npz: 10 samples do not fill batches of 4"):
        open_reader(tmp_path / "d.npz", model)
    np.savez(tmp_path / "d.npz", x=_x(12))
    with pytest.raises(DataError, match=r"d\.npz: --calibration-samples 6 is not a multiple of 4"):
        FirstSamples(open_reader(tmp_path / "d.npz", model), 6)
    assert [len(b.inputs["x"]) for b in FirstSamples(open_reader(tmp_path / "d.npz", model), 8)] == [4, 4]


def test_a_folder_file_is_cut_into_batches_of_the_fixed_size(tmp_path):
    model = make_model(FIXED.format(batch=1))
    np.save(tmp_path / "a.npy", _x(3))
    batches = list(open_reader(tmp_path, model))
    assert [b.inputs["x"].shape for b in batches] == [(1, 3)] * 3 and batches[2].source.endswith("(samples 2-2)")


def test_cli_calibrates_a_batch_1_export_on_a_npz(tmp_path, capsys):
    # the .npz was cut into batches of 32: "Got: 32 Expected: 1", exit 2
    model = _pin_batch(MODELS / "resnet_mini.onnx", tmp_path / "b1.onnx", 1)
    code = main([str(model), str(tmp_path / "out.onnx"), "--quantize", "static", "--calibration-data",
                 str(MODELS / "digits16_calib.npz"), "--calibration-samples", "16", "--no-validate", "-q"])
    assert code == 0, capsys.readouterr().err


def test_negative_dims_are_dynamic(tmp_path):
    # Paddle exports write -1: "dim 1 is 5, the model expects -1"
    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, H, W] x) => (float[N, 3, H, W] y) { y = Relu(x) }""")
    for value in [*proto.graph.input, *proto.graph.output]:
        for axis in (0, 2, 3):
            value.type.tensor_type.shape.dim[axis].dim_value = -1
    model = make_model(onnx.printer.to_text(proto))
    assert list(model.graph.inputs[0].shape)[2] == -1
    np.savez(tmp_path / "d.npz", x=np.ones((2, 3, 5, 7), np.float32))
    assert [b.inputs["x"].shape for b in open_reader(tmp_path / "d.npz", model)] == [(2, 3, 5, 7)]


def test_a_scalar_input_is_passed_whole_with_every_batch(tmp_path):
    # len() of the scalar: "internal error: TypeError: len() of unsized object", exit 3
    model = make_model(SCALAR)
    np.savez(tmp_path / "d.npz", x=_x(5), thr=np.array(0.5, np.float32))
    batches = list(open_reader(tmp_path / "d.npz", model, batch_size=2))
    assert [b.samples for b in batches] == [2, 2, 1] and all(b.inputs["thr"].shape == () for b in batches)
    assert [b.samples for b in FirstSamples(open_reader(tmp_path / "d.npz", model, batch_size=2), 3)] == [2, 1]
    result = run_batches(model, batches)
    assert result.samples == 5 and np.allclose(result.outputs["y"], _x(5) * 0.5)
    np.savez(tmp_path / "d64.npz", x=_x(5), thr=np.full(5, 0.5, np.float32))
    with pytest.raises(DataError, match="'thr' has rank 1"):
        open_reader(tmp_path / "d64.npz", model)


def test_an_input_without_the_batch_axis_is_passed_whole(tmp_path):
    # "inputs have different sample counts [8, 64]"
    model = make_model(TABLE)
    table = rng(1).standard_normal((8, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=_x(64, 8), t=table)
    batches = list(open_reader(tmp_path / "d.npz", model))
    assert [b.samples for b in batches] == [32, 32] and all(b.inputs["t"].shape == (8, 4) for b in batches)
    assert np.allclose(run_batches(model, batches).outputs["y"], _x(64, 8) @ table, atol=1e-5)
    np.savez(tmp_path / "bad.npz", x=_x(64, 8), t=table[:5])
    with pytest.raises(DataError, match="'t' dim 0 is 5, the model expects 8"):
        open_reader(tmp_path / "bad.npz", model)


def test_folder_single_samples_get_a_batch_axis_but_not_the_scalar(tmp_path):
    np.savez(tmp_path / "a.npz", x=_x(1)[0], thr=np.array(2.0, np.float32))
    (batch,) = open_reader(tmp_path, make_model(SCALAR))
    assert batch.inputs["x"].shape == (1, 3) and batch.inputs["thr"].shape == ()


def test_cli_validates_a_scalar_input_model(tmp_path, capsys):
    from onnxslim.io import save

    save(make_model(SCALAR), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=_x(5), thr=np.array(0.5, np.float32))
    code = main([str(tmp_path / "m.onnx"), str(tmp_path / "out.onnx"), "--data", str(tmp_path / "d.npz"), "-q"])
    assert code == 0, capsys.readouterr().err
