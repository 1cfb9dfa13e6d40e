"""Image folders for integer inputs, 16- and 32-bit images, hidden files in class folders, and the
preprocessing spec's checks (each error names the flag the spec came from)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.data import open_reader, parse_preprocess
from onnxslim.errors import DataError
from tests.helpers import make_model

Image = pytest.importorskip("PIL.Image")

UINT8 = """<ir_version: 8, opset_import: ["" : 17]>
    g (uint8[N, 4, 4, 3] x) => (uint8[N, 4, 4, 3] y) { y = Identity(x) }"""
GRAY = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 1, 4, 4] x) => (float[N, 1, 4, 4] y) { y = Relu(x) }"""


def test_an_integer_input_gets_the_pixels_as_they_are(tmp_path):
    # scale 1/255 then astype(uint8): every pixel became 0 or 1
    Image.new("RGB", (4, 4), (200, 17, 255)).save(tmp_path / "a.png")
    batch = next(iter(open_reader(tmp_path, make_model(UINT8))))
    assert batch.inputs["x"].dtype == np.uint8 and batch.inputs["x"][0, 0, 0].tolist() == [200, 17, 255]


@pytest.mark.parametrize("spec", ["scale=1/255", "mean=0.5", "mean=-1", "scale=2"])
def test_preprocessing_an_integer_input_cannot_take_is_refused(tmp_path, spec):
    Image.new("RGB", (4, 4), (200, 17, 255)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"a\.png: --preprocess makes values .* not all uint8 integers"):
        list(open_reader(tmp_path, make_model(UINT8), preprocess=spec))


def test_a_16_bit_image_keeps_its_range(tmp_path):
    # convert("L") clipped 16-bit pixels at 255: almost every pixel read as white (1.0)
    pixels = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode.startswith("I")
    got = next(iter(open_reader(tmp_path, make_model(GRAY)))).inputs["x"][0, 0]
    assert np.allclose(got, pixels / 65535, atol=1e-6)


def test_a_16_bit_image_for_an_8_bit_input_is_rounded(tmp_path):
    # refused ("--preprocess makes values ... not all uint8 integers") though no spec was given
    pixels = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000
    Image.fromarray(pixels).save(tmp_path / "a.png")
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (uint8[N, 4, 4, 1] x) => (uint8[N, 4, 4, 1] y) { y = Identity(x) }""")
    got = next(iter(open_reader(tmp_path, model))).inputs["x"][0, :, :, 0]
    assert got.dtype == np.uint8 and got.tolist() == np.round(pixels * (255 / 65535)).astype(np.uint8).tolist()


def test_a_32_bit_float_image_is_refused(tmp_path):
    Image.fromarray(np.full((4, 4), 900.0, np.float32)).save(tmp_path / "a.tif")
    with pytest.raises(DataError, match=r"a\.tif: a 32-bit float image \(mode F\) has no fixed value range"):
        list(open_reader(tmp_path, make_model(GRAY)))


def test_hidden_files_in_class_folders_are_skipped(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("L", (4, 4), 10).save(tmp_path / name / "a.png")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    batches = list(open_reader(tmp_path, make_model(GRAY)))
    assert batches[0].labels.tolist() == [0, 1]


@pytest.mark.parametrize("spec, why", [("std=0", "std must not be 0"), ("std=0.5;0;1", "std must not be 0"),
                                       ("size=0", "sizes must be positive"), ("size=4x-2", "sizes must be positive")])
def test_unusable_values_are_refused_when_the_spec_is_read(spec, why):
    with pytest.raises(DataError, match=f"--calibration-preprocess: bad value .*{why}"):
        parse_preprocess(spec, flag="--calibration-preprocess")


def test_errors_name_the_calibration_flag(tmp_path):
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 1, H, W] x) => (float[N, 1, H, W] y) { y = Relu(x) }""")
    Image.new("L", (4, 4), 10).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="give --calibration-preprocess size=WxH"):
        open_reader(tmp_path, model, preprocess_flag="--calibration-preprocess")
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(DataError, match="--calibration-preprocess applies to a folder of images"):
        open_reader(tmp_path / "d.npz", model, preprocess="size=4", preprocess_flag="--calibration-preprocess")


def test_a_pinned_size_is_the_image_size(tmp_path):
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 1, H, W] x) => (float[N, 1, H, W] y) { y = Relu(x) }""")
    Image.new("L", (9, 9), 10).save(tmp_path / "a.png")
    batch = next(iter(open_reader(tmp_path, model, input_shapes={"x": (1, 1, 3, 5)})))
    assert batch.inputs["x"].shape == (1, 1, 3, 5)


def test_a_single_npy_file_is_said_to_go_in_a_folder(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"x\.npy: a \.npy file is read from a folder"):
        open_reader(tmp_path / "x.npy", make_model(GRAY))


def test_negative_height_and_width_are_dynamic(tmp_path):
    # Paddle's -1 was taken for a size: "image size (-1, -1)"
    import onnx

    proto = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 1, H, W] x) => (float[N, 1, H, W] y) { y = Relu(x) }""")
    for axis in (0, 2, 3):
        proto.graph.input[0].type.tensor_type.shape.dim[axis].dim_value = -1
    model = make_model(onnx.printer.to_text(proto))
    Image.new("L", (6, 6), 10).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="dynamic height/width; give --preprocess size=WxH"):
        open_reader(tmp_path, model)
    assert next(iter(open_reader(tmp_path, model, preprocess="size=3"))).inputs["x"].shape == (1, 1, 3, 3)
