"""Each bad input is one clear line on stderr and exit code 2."""

from __future__ import annotations

import numpy as np
import pytest

from tests.validation.conftest import DIGITS, run_cli

GOOD = np.zeros((3, 1, 8, 8), np.float32)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _case(tmp_path, kind):
    """(data path, extra flags, words the error must contain)."""
    if kind == "keys":
        return _npz(tmp_path / "keys.npz", image=GOOD), [], ["keys.npz", "no array for input(s) input"]
    if kind == "extra-key":
        return _npz(tmp_path / "extra.npz", input=GOOD, mask=GOOD), [], ["extra.npz", "mask match no model input"]
    if kind == "dtype":
        return _npz(tmp_path / "dtype.npz", input=GOOD.astype(np.float64)), [], ["dtype.npz", "float64", "float32"]
    if kind == "rank":
        return _npz(tmp_path / "rank.npz", input=GOOD[:, 0]), [], ["rank.npz", "rank 3", "rank 4"]
    if kind == "labels":
        return _npz(tmp_path / "labels.npz", input=GOOD, labels=np.zeros(2, np.int64)), [], ["labels.npz", "one per sample"]
    if kind == "empty-folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", [], ["empty", "folder is empty"]
    if kind == "non-image":
        folder = tmp_path / "images"
        folder.mkdir()
        _png(folder / "a.png")
        (folder / "notes.txt").write_text("hello")
        return folder, [], ["notes.txt", "not an image file"]
    if kind == "corrupt-image":
        folder = tmp_path / "images"
        folder.mkdir()
        (folder / "broken.png").write_bytes(b"not a png")
        return folder, [], ["broken.png", "cannot read as an image"]
    if kind == "npy-rank":
        folder = tmp_path / "arrays"
        folder.mkdir()
        np.save(folder / "x.npy", np.zeros((8, 8), np.float32))
        return folder, [], ["x.npy", "rank 2"]
    if kind == "bad-spec":
        folder = tmp_path / "images"
        folder.mkdir()
        _png(folder / "a.png")
        return folder, ["--preprocess", "size=big"], ["--preprocess", "size"]
    if kind == "missing":
        return tmp_path / "nope.npz", [], ["nope.npz", "not found"]
    if kind == "nan":  # was exit 1 with the model written and fold-constants blamed for the NaN outputs
        bad = GOOD.copy()
        bad[1, 0, 2, 2] = np.nan
        return _npz(tmp_path / "nan.npz", input=bad), [], ["nan.npz", "1 NaN/Inf"]
    if kind == "no-samples":
        return _npz(tmp_path / "none.npz", input=GOOD[:0]), [], ["none.npz", "no samples"]
    raise AssertionError(kind)


def _png(path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)


CASES = ["keys", "extra-key", "dtype", "rank", "labels", "empty-folder", "non-image", "corrupt-image", "npy-rank", "bad-spec", "missing", "no-samples", "nan"]


@pytest.mark.parametrize("kind", CASES)
def test_bad_data_is_one_line_and_exit_2(tmp_path, capsys, kind):
    if "image" in kind or kind == "bad-spec":
        pytest.importorskip("PIL", reason="image folders need Pillow")
    data, flags, words = _case(tmp_path, kind)
    for command in (["validate", DIGITS, DIGITS], [DIGITS, tmp_path / "out.onnx"]):
        code, out, err = run_cli([*command, "--data", data, *flags], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith("onnxslim: error: ") and all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("flags, words", [(["--providers", "tpu"], ["tpu", "known: cpu, cuda"]),
                                          (["--input-shape", "input:1,3"], ["rank 4"])])
def test_bad_flags_are_one_line_and_exit_2(capsys, flags, words):
    code, _, err = run_cli(["validate", DIGITS, DIGITS, *flags], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and all(w in lines[0] for w in words), err
