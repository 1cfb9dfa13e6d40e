"""Readers: .npz, folders of .npz/.npy, folders of images with a preprocessing spec, random."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.data import RandomReader, load_samples, open_reader, parse_preprocess, random_samples
from onnxslim.errors import DataError
from tests.helpers import make_model



@pytest.fixture(scope="module")
def one_input():
    return make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 4, 5] x) => (float[N, 3, 4, 5] y) { y = Relu(x) }""")


@pytest.fixture(scope="module")
def two_inputs():
    return make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] a, int64[N] b) => (float[N, 2] y) { y = Relu(a) }""")


def _x(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 4, 5)).astype(np.float32)


def test_npz_streams_batches_with_labels(tmp_path, one_input):
    x, labels = _x(70), np.arange(70)
    np.savez(tmp_path / "d.npz", x=x, labels=labels)
    reader = open_reader(tmp_path / "d.npz", one_input, batch_size=32)
    batches = list(reader)
    assert [len(b.inputs["x"]) for b in batches] == [32, 32, 6]
    assert np.array_equal(np.concatenate([b.labels for b in batches]), labels)
    assert len(list(reader)) == 3  # re-iterable: calibration and validation walk it more than once
    inputs, got_labels = load_samples(tmp_path / "d.npz", one_input, batch_size=50)
    assert np.array_equal(np.concatenate([b["x"] for b in inputs]), x) and np.array_equal(got_labels, labels)


def test_folder_of_npy_single_samples_and_batches(tmp_path, one_input):
    np.save(tmp_path / "a.npy", _x(1)[0])  # one sample: gets a batch axis
    np.save(tmp_path / "b.npy", _x(4, 1))  # a batch
    batches = list(open_reader(tmp_path, one_input))
    assert [b.inputs["x"].shape for b in batches] == [(1, 3, 4, 5), (4, 3, 4, 5)]
    assert np.array_equal(batches[1].inputs["x"], _x(4, 1)) and batches[0].labels is None


def test_folder_of_npz_for_multi_input_models(tmp_path, two_inputs):
    np.savez(tmp_path / "0.npz", a=np.ones((3, 2), np.float32), b=np.arange(3), labels=np.array([1, 0, 1]))
    np.savez(tmp_path / "1.npz", a=np.ones((2,), np.float32), b=np.array(7), labels=np.array(2))
    batches = list(open_reader(tmp_path, two_inputs))
    assert [len(b.inputs["b"]) for b in batches] == [3, 1] and list(batches[1].labels) == [2]


def test_npy_folder_needs_a_single_input_model(tmp_path, two_inputs):
    np.save(tmp_path / "a.npy", np.ones((1, 2), np.float32))
    with pytest.raises(DataError, match="single-input model"):
        open_reader(tmp_path, two_inputs)


def test_mixed_folder_names_the_odd_file(tmp_path, one_input):
    np.save(tmp_path / "a.npy", _x(1))
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match="b.png"):
        open_reader(tmp_path, one_input)


def test_random_reader_is_seeded_and_resolves_dynamic_batch(one_input):
    first = [b.inputs["x"] for b in RandomReader(one_input, 3, seed=5)]
    again = random_samples(one_input, 3, seed=5)
    assert all(np.array_equal(a, b["x"]) for a, b in zip(first, again)) and first[0].shape == (1, 3, 4, 5)
    assert not np.array_equal(first[0], random_samples(one_input, 1, seed=6)[0]["x"])
    with pytest.raises(DataError, match="dim 1 is fixed at 3"):
        RandomReader(one_input, 1, input_shapes={"x": (2, 4, 4, 5)})


def test_preprocess_spec_parsing():
    pre = parse_preprocess("size=6x4,mean=0.5;0.25;0,std=0.5;0.5;1,scale=1/255,layout=nhwc,color=BGR")
    assert pre.size == (6, 4) and pre.mean == (0.5, 0.25, 0.0) and pre.layout == "NHWC" and pre.color == "BGR"
    assert pre.scale == pytest.approx(1 / 255)
    assert parse_preprocess("size=320").size == (320, 320)  # one number: a square
    for bad in ("size=6x4x2", "size=x", "layout=CHW", "zoom=2", "scale=1/0"):
        with pytest.raises(DataError, match="--preprocess"):
            parse_preprocess(bad)


def test_image_folder_with_class_subfolders(tmp_path):
    image = pytest.importorskip("PIL.Image")
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 4, 6] x) => (float[N, 3, 4, 6] y) { y = Relu(x) }""")
    for label, color in enumerate([(255, 0, 0), (0, 0, 255)]):
        (tmp_path / f"class{label}").mkdir()
        for i in range(3):
            image.new("RGB", (10, 10), color).save(tmp_path / f"class{label}" / f"{i}.png")
    spec = "mean=0.5;0.5;0.5,std=0.5;0.5;0.5"  # size and layout from the model: 6 wide, 4 high, NCHW
    batches = list(open_reader(tmp_path, model, batch_size=4, preprocess=spec))
    assert [b.inputs["x"].shape for b in batches] == [(4, 3, 4, 6), (2, 3, 4, 6)]
    assert list(np.concatenate([b.labels for b in batches])) == [0, 0, 0, 1, 1, 1]
    first = batches[0].inputs["x"][0]
    assert np.allclose(first[0], 1.0) and np.allclose(first[1:], -1.0)  # red: (1 - .5) / .5 and (0 - .5) / .5
    bgr = next(iter(open_reader(tmp_path, model, preprocess=spec + ",color=BGR"))).inputs["x"][0]
    assert np.allclose(bgr[2], 1.0) and np.allclose(bgr[0], -1.0)


def test_image_folder_nhwc_grayscale(tmp_path):
    image = pytest.importorskip("PIL.Image")
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 5, 5, 1] x) => (float[N, 5, 5, 1] y) { y = Relu(x) }""")
    image.new("L", (8, 8), 51).save(tmp_path / "a.png")
    batch = next(iter(open_reader(tmp_path, model)))
    assert batch.inputs["x"].shape == (1, 5, 5, 1) and np.allclose(batch.inputs["x"], 0.2)


def test_random_masks_are_ones_and_segment_ids_zeros():
    # random 0..7 masks made all-MiniLM-L6-v2 output NaN throughout, and validation compared nothing
    from tests.helpers import make_model

    model = make_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[N, 6] input_ids, int64[N, 6] attention_mask, int64[N, 6] token_type_ids) => (int64[N, 6] y) {
        s = Add (input_ids, attention_mask)
        y = Add (s, token_type_ids)
    }
    """)
    (batch,) = list(RandomReader(model, 1, seed=3))
    assert (batch.inputs["attention_mask"] == 1).all() and (batch.inputs["token_type_ids"] == 0).all()
    assert batch.inputs["input_ids"].max() > 1  # other integer inputs stay random


@pytest.mark.parametrize("kind", ["fortran", "compressed", "big-endian", "big-endian-fortran"])
def test_npz_batches_hold_the_file_s_values_in_any_layout(tmp_path, one_input, kind):
    x = _x(70)
    if kind.startswith("big-endian"):  # saved on (or for) a big-endian machine: the same values
        swapped = x.astype(">f4")
        np.savez(tmp_path / "d.npz", x=np.asfortranarray(swapped) if "fortran" in kind else swapped,
                 labels=np.arange(70).astype(">i8"))
    elif kind == "fortran":  # no contiguous rows: loaded whole
        np.savez(tmp_path / "d.npz", x=np.asfortranarray(x), labels=np.arange(70))
    else:  # a deflated stream, read in order
        np.savez_compressed(tmp_path / "d.npz", x=x, labels=np.arange(70))
    batches = list(open_reader(tmp_path / "d.npz", one_input, batch_size=16))
    assert np.array_equal(np.concatenate([b.inputs["x"] for b in batches]), x)
    assert np.array_equal(np.concatenate([b.labels for b in batches]), np.arange(70))
    assert batches[0].inputs["x"].flags.writeable and batches[0].inputs["x"].dtype.isnative


def test_big_endian_arrays_in_a_folder_are_read_natively(tmp_path, two_inputs, one_input):
    np.save(tmp_path / "a.npy", _x(2).astype(">f4"))
    (batch,) = list(open_reader(tmp_path, one_input))
    assert batch.inputs["x"].dtype == np.float32 and np.array_equal(batch.inputs["x"], _x(2))
    np.savez(tmp_path / "n.npz", a=np.ones((3, 2), ">f4"), b=np.arange(3).astype(">i8"))
    (tmp_path / "a.npy").unlink()
    (batch,) = list(open_reader(tmp_path, two_inputs))
    assert batch.inputs["a"].dtype == np.float32 and list(batch.inputs["b"]) == [0, 1, 2]


def test_npz_reader_holds_a_batch_not_the_file(tmp_path, one_input):
    # every array was loaded up front: 400 MB to calibrate on 64 samples of a 200 MB file
    import tracemalloc

    from onnxslim.data import FirstSamples

    big = np.random.default_rng(0).standard_normal((1 << 16, 3, 4, 5)).astype(np.float32)  # 15 MB
    np.savez(tmp_path / "big.npz", x=big)
    del big
    tracemalloc.start()
    try:
        batches = list(FirstSamples(open_reader(tmp_path / "big.npz", one_input), 64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(len(b.inputs["x"]) for b in batches) == 64 and peak < 4 << 20, peak


def test_calibration_samples_bound_what_an_npz_must_hold(tmp_path):
    # with --calibration-samples 64 the whole file was scanned (a NaN in sample 100 refused it) and
    # had to fill a fixed batch (130 samples, batch 8: refused though 64 do)
    import onnxslim
    from tests.helpers import MODELS

    data = np.load(MODELS / "digits_calib.npz")["input"][:128]
    inputs = np.concatenate([data, data[:2]])  # 130
    inputs[100, 0, 0, 0] = np.nan
    np.savez(tmp_path / "c.npz", input=inputs)
    common = dict(quantize="static", calibration_data=str(tmp_path / "c.npz"), input_shapes={"input": [8, 1, 8, 8]},
                  validate=False)
    result = onnxslim.run(MODELS / "digits_cnn.onnx", calibration_samples=64, **common)
    assert result.pipeline.records[-1].stats["calibration_samples"] == 64
    with pytest.raises(DataError, match="NaN"):
        onnxslim.run(MODELS / "digits_cnn.onnx", **common)


def test_an_input_named_labels_is_fed_from_its_key(tmp_path):
    # the key "labels" was always taken for the class labels: such a model could never be fed
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x, int64[N] labels) => (float[N, 4] y) { y = Relu(x) }""")
    np.savez(tmp_path / "d.npz", x=np.ones((6, 4), np.float32), labels=np.arange(6, dtype=np.int64))
    (batch,) = list(open_reader(tmp_path / "d.npz", model))
    assert batch.inputs["labels"].tolist() == list(range(6)) and batch.labels is None


def test_data_may_feed_an_input_that_has_a_default(tmp_path):
    # "key(s) scale match no model input" although scale is one: its default can be overridden
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] x, float scale) => (float[N, 2] y) <float scale = {2.0}> { y = Mul(x, scale) }""")
    x = np.ones((5, 2), np.float32)
    np.savez(tmp_path / "d.npz", x=x, scale=np.float32(5.0))
    batches = list(open_reader(tmp_path / "d.npz", model, batch_size=2))
    assert [b.inputs["scale"].item() for b in batches] == [5.0] * 3 and [len(b.inputs["x"]) for b in batches] == [2, 2, 1]
    np.savez(tmp_path / "d.npz", x=x)
    assert "scale" not in next(iter(open_reader(tmp_path / "d.npz", model))).inputs  # the default stays
    np.savez(tmp_path / "d.npz", x=x, scale=np.float64(5.0))
    with pytest.raises(DataError, match="'scale' is float64, the model expects float32"):
        open_reader(tmp_path / "d.npz", model)
    np.savez(tmp_path / "d.npz", x=x, scale=np.ones(2, np.float32))
    with pytest.raises(DataError, match=r"'scale' has shape \[2\], the model expects \[\]"):
        open_reader(tmp_path / "d.npz", model)


def test_random_batches_with_a_scalar_input_count_their_samples():
    # an If's condition listed first: the batch counted len() of the scalar (exit 3 in validation)
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (bool cond, float[N, 4] x) => (float[N, 4] y) { y = Relu (x) }""")
    (batch,) = list(RandomReader(model, 1, batch=2))
    assert batch.samples == 2 and batch.inputs["cond"].shape == () and "cond" in batch.whole
