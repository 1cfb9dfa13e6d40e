"""The calibration cache is reused only for the same data (contents, not the path), preprocessing,
subset and model; it used to be keyed by the data's path alone and gave stale ranges. Every
calibration method still shares one calibration."""

import os

import numpy as np
import onnx_ir as ir
import pytest

from onnxslim import api
from onnxslim.errors import DataError
from onnxslim.core.pass_base import PassContext
from onnxslim.data import DataBatch, FirstSamples, RandomReader, Reader, open_reader
from onnxslim.passes.quantization import calibrate
from onnxslim.passes.quantization.cache import (CalibrationCache, cache_key, load_calibration_cache, model_fingerprint,
                                                save_calibration_cache)
from onnxslim.passes.quantization.quantize_static import QuantizeStatic, QuantizeStaticConfig
from tests.helpers import MODELS, make_model, rng

CONV = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 1, 8, 8] x) => (float[N, 4] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r = Relu (c)
    p = GlobalAveragePool (r)
    f = Flatten (p)
    y = Gemm <transB = 1> (f, w2, b2)
}
"""


def _model(seed: int = 0, channels: int = 4):
    r = rng(seed)
    return make_model(CONV, initializers={
        "w1": r.standard_normal((channels, 1, 3, 3)).astype(np.float32), "b1": r.standard_normal(channels).astype(np.float32),
        "w2": r.standard_normal((4, channels)).astype(np.float32), "b2": r.standard_normal(4).astype(np.float32)})


@pytest.fixture
def calibrations(monkeypatch):
    """How many calibrations really ran (statistics not taken from the cache)."""
    calls = []
    collect = calibrate.collect_statistics

    def counting(*args, **kwargs):
        calls.append(1)
        return collect(*args, **kwargs)

    monkeypatch.setattr(calibrate, "collect_statistics", counting)
    return calls


def _quantize(model, data, cache=None, method="mse") -> bytes:
    result = QuantizeStatic(QuantizeStaticConfig(method=method),
                            context=PassContext(calibration=data, calibration_cache=cache))(model)
    assert result.modified
    return ir.serde.serialize_model(result.model).SerializeToString()


def _images(folder, count=12):
    from PIL import Image

    folder.mkdir()
    pixels = rng(3).integers(0, 256, (count, 8, 8)).astype(np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return folder


def test_other_preprocessing_of_the_same_images_is_calibrated_again(tmp_path, calibrations):
    folder, cache, model = _images(tmp_path / "imgs"), CalibrationCache(), _model()
    _quantize(model.clone(), open_reader(folder, model), cache)
    spec = "scale=1,mean=0.5,std=0.01"
    cached = _quantize(model.clone(), open_reader(folder, model, preprocess=spec), cache)
    assert len(calibrations) == 2
    assert cached == _quantize(model.clone(), open_reader(folder, model, preprocess=spec))


def test_an_npz_rewritten_in_place_is_calibrated_again(tmp_path, calibrations):
    path, cache, model = tmp_path / "calib.npz", CalibrationCache(), _model()
    np.savez(path, x=rng(4).random((16, 1, 8, 8), np.float32))
    _quantize(model.clone(), open_reader(path, model), cache)
    stamp = path.stat()
    np.savez(path, x=rng(5).random((16, 1, 8, 8), np.float32) * 4)  # same size;
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # even the old time: the bytes tell
    cached = _quantize(model.clone(), open_reader(path, model), cache)
    assert len(calibrations) == 2 and cached == _quantize(model.clone(), open_reader(path, model))


@pytest.mark.parametrize("other", ["weights", "channels"])  # retrained, or channel-pruned
def test_another_model_on_the_same_data_is_calibrated_again(tmp_path, calibrations, other):
    path, cache = tmp_path / "calib.npz", CalibrationCache()
    np.savez(path, x=rng(4).random((16, 1, 8, 8), np.float32))
    _quantize(_model(), open_reader(path, _model()), cache)
    changed = _model(seed=1) if other == "weights" else _model(channels=3)
    cached = _quantize(changed.clone(), open_reader(path, changed), cache)
    assert len(calibrations) == 2 and cached == _quantize(changed.clone(), open_reader(path, changed))


def test_another_subset_is_calibrated_again(tmp_path, calibrations):
    path, cache, model = tmp_path / "calib.npz", CalibrationCache(), _model()
    np.savez(path, x=rng(4).random((16, 1, 8, 8), np.float32))
    _quantize(model.clone(), FirstSamples(open_reader(path, model), 8), cache)
    _quantize(model.clone(), FirstSamples(open_reader(path, model), 12), cache)
    _quantize(model.clone(), open_reader(path, model, batch_size=4), cache)  # other batches: other histograms
    assert len(calibrations) == 3


def test_every_method_reuses_one_calibration_through_the_file(tmp_path, calibrations):
    path, file, model = tmp_path / "calib.npz", tmp_path / "ranges.npz", _model()
    np.savez(path, x=rng(4).random((16, 1, 8, 8), np.float32))
    first = load_calibration_cache(file)
    _quantize(model.clone(), open_reader(path, model), first)
    save_calibration_cache(first, file)
    for method in ("minmax", "entropy", "percentile", "mse"):
        cache, before = load_calibration_cache(file), len(calibrations)
        cached = _quantize(model.clone(), open_reader(path, model), cache, method=method)
        assert len(calibrations) == before and not cache.modified
        assert cached == _quantize(model.clone(), open_reader(path, model), method=method)  # byte for byte


def test_a_channel_pruned_model_does_not_reuse_the_unpruned_model_s_cache(tmp_path, calibrations):
    file = str(tmp_path / "ranges.npz")
    common = {"quantize": "static", "calibration_data": str(MODELS / "digits_calib.npz"), "validate": False}
    pruning = {"prune": 0.3, "prune_method": "channel"}
    api.run(MODELS / "digits_cnn.onnx", calibration_cache=file, **common)
    cached = api.run(MODELS / "digits_cnn.onnx", calibration_cache=file, **pruning, **common)
    assert len(calibrations) == 2
    assert [r.status for r in cached.pipeline.records if r.name in ("prune-channels", "quantize-static")] == ["applied"] * 2
    fresh = api.run(MODELS / "digits_cnn.onnx", **pruning, **common)
    assert ir.serde.serialize_model(cached.model).SerializeToString() == ir.serde.serialize_model(fresh.model).SerializeToString()


def test_the_key_survives_the_file_and_an_older_file_is_recalibrated(tmp_path):
    model, data = _model(), [DataBatch({"x": rng(4).random((4, 1, 8, 8), np.float32)})]
    cache = CalibrationCache()
    _quantize(model.clone(), data, cache)
    save_calibration_cache(cache, tmp_path / "ranges.npz")
    loaded = load_calibration_cache(tmp_path / "ranges.npz")
    assert loaded.key == cache.key == cache_key(model, data) and set(loaded.stats) == set(cache.stats)
    np.savez(tmp_path / "old.npz", format=np.array("onnxslim-calibration/1"), source=np.array("calib.npz"))
    old = load_calibration_cache(tmp_path / "old.npz")  # keyed by the data path only: stale
    assert old.key is None and not old.stats


def test_keys_of_readers_and_batches_in_memory():
    model = _model()
    arrays = [{"x": rng(4).random((4, 1, 8, 8), np.float32)}]
    same = [{"x": arrays[0]["x"].copy()}]
    other = [{"x": arrays[0]["x"] + 1}]
    assert cache_key(model, arrays) == cache_key(model, same) != cache_key(model, other)
    assert RandomReader(model, 2, seed=1).identity() == RandomReader(model, 2, seed=1).identity()
    assert RandomReader(model, 2, seed=1).identity() != RandomReader(model, 2, seed=2).identity()
    assert model_fingerprint(model) == model_fingerprint(model.clone()) != model_fingerprint(_model(seed=1))


def test_data_without_an_identity_is_never_cached(calibrations):
    class Plain(Reader):  # a reader that cannot say whether its batches changed
        def __iter__(self):
            yield DataBatch({"x": rng(4).random((4, 1, 8, 8), np.float32)})

    cache, model = CalibrationCache(), _model()
    _quantize(model.clone(), Plain(), cache)
    _quantize(model.clone(), Plain(), cache)
    assert len(calibrations) == 2 and not cache.modified and not cache.stats


def test_a_damaged_or_foreign_file_is_refused_in_one_line(tmp_path):
    model, data = _model(), [DataBatch({"x": rng(4).random((4, 1, 8, 8), np.float32)})]
    cache = CalibrationCache()
    _quantize(model.clone(), data, cache)
    save_calibration_cache(cache, tmp_path / "ranges.npz")
    with np.load(tmp_path / "ranges.npz") as archive:
        arrays = dict(archive)
    arrays["counts/0"] = arrays["counts/0"][:7]  # histograms cut to 7 bins: other ranges, silently
    np.savez(tmp_path / "cut.npz", **arrays)
    with pytest.raises(DataError, match="7 histogram bins"):
        load_calibration_cache(tmp_path / "cut.npz")
    (tmp_path / "notes.txt").write_text("ranges\n")
    with pytest.raises(DataError, match="not an .npz archive") as caught:
        load_calibration_cache(tmp_path / "notes.txt")
    assert "pickle" not in str(caught.value)


def test_the_cache_file_gets_the_permissions_of_a_new_file(tmp_path):
    # it was written through mkstemp alone: 0600, unreadable by the CI job that shares it
    import os

    umask = os.umask(0o022)
    try:
        save_calibration_cache(CalibrationCache(), tmp_path / "ranges.npz")
    finally:
        os.umask(umask)
    assert (tmp_path / "ranges.npz").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["ranges.npz"]
