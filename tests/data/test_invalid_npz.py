"""A file that is not a .npz (zip) is said to be so, naming the file; numpy's own message for it
("contains pickled (object) data") is kept for what it means: object arrays in a real .npz."""

import zipfile

import numpy as np
import pytest

from onnxslim.cli import main
from onnxslim.data import open_reader
from onnxslim.errors import DataError
from onnxslim.io import save
from tests.helpers import make_model

MODEL = '<ir_version: 8, opset_import: ["" : 17]>\ng (float[N, 3] x) => (float[N, 3] y) { y = Relu(x) }'


def _files(tmp_path):
    """{name: (path, words its error must contain)}."""
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None, 3], dtype=object))
    with zipfile.ZipFile(tmp_path / "member.npz", "w") as archive:
        archive.writestr("x.npy", "not an array")
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04" + bytes(20))
    return {"text": (tmp_path / "text.npz", ["text.npz", "not a valid .npz (zip) file"]),
            "objects": (tmp_path / "objects.npz", ["objects.npz", "'x' contains pickled (object) data"]),
            "member": (tmp_path / "member.npz", ["member.npz", "'x' is not a .npy array"]),
            "cut": (tmp_path / "cut.npz", ["cut.npz", "not a valid .npz (zip) file"])}


@pytest.mark.parametrize("kind", ["text", "objects", "member", "cut"])
def test_the_reader_names_the_file_and_the_problem(tmp_path, kind):
    path, words = _files(tmp_path)[kind]
    with pytest.raises(DataError) as caught:
        open_reader(path, make_model(MODEL))
    assert all(w in str(caught.value) for w in words), caught.value
    assert kind == "objects" or "pickled" not in str(caught.value)


def test_a_folder_of_npz_files_says_the_same(tmp_path):
    folder = tmp_path / "arrays"
    folder.mkdir()
    np.savez(folder / "a.npz", x=np.zeros((2, 3), np.float32))
    (folder / "b.npz").write_text("hello")
    with pytest.raises(DataError, match=r"b\.npz: not a valid \.npz \(zip\) file"):
        list(open_reader(folder, make_model(MODEL)))


@pytest.mark.parametrize("flag", ["--calibration-data", "--data"])
def test_the_cli_prints_one_line_and_exits_2(tmp_path, capsys, flag):
    save(make_model(MODEL), tmp_path / "model.onnx")
    path, words = _files(tmp_path)["text"]
    extra = ["--quantize", "static"] if flag == "--calibration-data" else []
    code = main([str(tmp_path / "model.onnx"), str(tmp_path / "out.onnx"), flag, str(path), *extra])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and all(w in lines[0] for w in words), lines
    assert not (tmp_path / "out.onnx").exists()


def test_a_text_file_named_npy_in_a_folder_is_not_called_pickled(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "a.npy", np.ones((2, 3), np.float32))
    (folder / "b.npy").write_text("1,2,3\n")
    with pytest.raises(DataError) as caught:
        list(open_reader(folder, make_model(MODEL)))
    assert "b.npy" in str(caught.value) and "not a valid .npy file" in str(caught.value)
    assert "pickled" not in str(caught.value)
