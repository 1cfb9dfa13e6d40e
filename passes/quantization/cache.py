"""Calibration statistics kept between runs, so re-quantizing with other settings skips calibration.

The pass reads and fills a ``CalibrationCache`` object; only ``load_calibration_cache`` and
``save_calibration_cache`` touch files, and the API calls them around the pipeline.

Statistics are reused only under the same ``CacheKey``:

- ``data``: the reader's ``identity()`` (``onnxslim/data/identity.py``): each file's name, size,
  modification time and a sample of its bytes (no second read of a large data set), the image
  preprocessing, the batch size and the subset (``--calibration-samples``); an in-memory list of
  batches: a digest of its arrays. A source without an identity is never cached.
- ``model``: a digest of the graph the statistics were computed on (after the cleanup passes,
  pruning, smoothing...): the serialized graph without its large weights (every node, attribute,
  name, shape, opset) plus the bytes of each of those weights.

The calibration method is not in the key: every method reads the same statistics, so minmax,
entropy and mse on the same data and model calibrate once (and give the models of uncached runs).

Rescaled tensors (activation smoothing, ``rescaled.py``) add to the model part of the key what
their divisors depend on (the first samples' count, the smoothing strength); the cache keeps each
one's per-channel maximum over those samples, from which a cached run decides the same divisors
without reading the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx_ir as ir

from onnxslim.data.identity import arrays_digest
from onnxslim.errors import DataError
from onnxslim.io import write_bytes
from onnxslim.passes.quantization.statistics import BINS, TensorStats
from onnxslim.proto import weights_detached

logger = logging.getLogger(__name__)

_FORMAT = "onnxslim-calibration/2"
_STALE_FORMATS = ("onnxslim-calibration/1",)
"""Keyed by the data path alone: read as empty, so the next run recalibrates and rewrites the file."""


@dataclasses.dataclass(frozen=True)
class CacheKey:
    data: str
    model: str

    def changed(self, other: CacheKey) -> str:
        """What differs from ``other``, in words ("" when nothing does)."""
        return " and ".join(part for part in ("data", "model") if getattr(self, part) != getattr(other, part))


@dataclasses.dataclass
class CalibrationCache:
    key: CacheKey | None = None
    source: str = ""
    """The data's description (``reader.describe()``), for people reading the file."""
    samples: int = 0
    stats: dict[str, TensorStats] = dataclasses.field(default_factory=dict)
    magnitudes: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """Per rescaled tensor, ``max |x|`` per channel over the samples that decide its divisor (empty:
    none seen)."""
    modified: bool = False

    def lookup(self, key: CacheKey, tensors, rescaled=()) -> dict[str, TensorStats] | None:
        """The cached statistics for every one of ``tensors`` under ``key``, or None; None also when
        a tensor of ``rescaled`` has no magnitudes (its divisor could not be decided again)."""
        if self.miss(key, tensors, rescaled) is not None:
            return None
        return {t: self.stats[t] for t in tensors}

    def miss(self, key: CacheKey, tensors, rescaled=()) -> str | None:
        """Why ``lookup`` finds nothing, in words, or None when it finds everything."""
        if self.key is None:
            return "the cache was empty"
        if key != self.key:
            return f"the {key.changed(self.key)} changed since it was written"
        if any(t not in self.stats for t in tensors) or any(t not in self.magnitudes for t in rescaled):
            return "it holds other tensors (other settings)"
        return None

    def store(self, key: CacheKey, source: str, samples: int, stats: dict[str, TensorStats],
              magnitudes: dict[str, np.ndarray] | None = None) -> None:
        """Adds ``stats`` (and rescaled tensors' ``magnitudes``) under ``key``; those under another key are dropped."""
        if key != self.key:
            self.stats, self.magnitudes = {}, {}
        self.key, self.source, self.samples = key, source, samples
        self.stats.update(stats)
        self.magnitudes.update(magnitudes or {})
        self.modified = True


def cache_key(model: ir.Model, calibration: Iterable, variant: str = "") -> CacheKey | None:
    """The key of statistics of ``model`` over ``calibration``; None when the data has no identity.
    ``variant``: what else the statistics depend on (rescaled tensors' settings; "" for none)."""
    if hasattr(calibration, "identity"):
        data = calibration.identity()
    elif isinstance(calibration, (list, tuple)):  # batches in memory: hashing them reads nothing again
        data = arrays_digest(dict(getattr(b, "inputs", b)) for b in calibration)
    else:
        data = None
    return None if data is None else CacheKey(data, model_fingerprint(model, variant))


def model_fingerprint(model: ir.Model, variant: str = "") -> str:
    """A digest of the serialized model without its large weights, plus each such weight's bytes
    (sha256, hardware-accelerated: 0.1 s for all-MiniLM-L6-v2's 90 MB, against 0.4 s of calibration
    at 32 samples; only computed when a cache is given), plus ``variant`` when given."""
    hasher = hashlib.sha256()
    if variant:
        hasher.update(variant.encode())
    with weights_detached(model) as weights:
        hasher.update(ir.serde.serialize_model(model).SerializeToString())
        for name, tensor in weights.items():
            hasher.update(name.encode())
            hasher.update(_tensor_bytes(tensor))
    return hasher.hexdigest()[:32]


def _tensor_bytes(tensor: ir.TensorProtocol):
    array = tensor.numpy()
    if isinstance(array, np.ndarray) and array.dtype != object:
        return np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return tensor.tobytes()


def load_calibration_cache(path: str | Path) -> CalibrationCache:
    """The cache in ``path``; an empty one when the file does not exist yet or has a stale format."""
    path = Path(path)
    if not path.exists():
        return CalibrationCache()
    if path.is_file() and not zipfile.is_zipfile(path):  # np.load would talk about pickled data
        raise DataError("not a calibration cache: not an .npz archive", path=path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if str(archive["format"]) in _STALE_FORMATS:
                logger.info("%s: calibration cache from an older version (keyed by the data path only): "
                            "recalibrating", path)
                return CalibrationCache()
            if str(archive["format"]) != _FORMAT:
                raise ValueError(f"format {archive['format']} (expected {_FORMAT})")
            names = [str(n) for n in archive["names"]]
            stats = {n: _checked(n, archive[f"limits/{i}"], archive[f"counts/{i}"]) for i, n in enumerate(names)}
            key = CacheKey(str(archive["data"]), str(archive["model"])) if str(archive["data"]) else None
            rescaled = [str(n) for n in archive["rescaled"]] if "rescaled" in archive.files else []
            magnitudes = {n: archive[f"magnitudes/{i}"] for i, n in enumerate(rescaled)}
            return CalibrationCache(key, str(archive["source"]), int(archive["samples"]), stats, magnitudes)
    except Exception as exc:
        raise DataError(f"not a calibration cache: {exc}", path=path) from None


def _checked(name: str, limits: np.ndarray, counts: np.ndarray) -> TensorStats:
    """A tensor's cached statistics, refused when they are not what this version writes (an edited
    or damaged file would otherwise give other ranges without a word)."""
    if counts.shape != (BINS,) or counts.dtype.kind not in "iu" or (counts < 0).any():
        raise ValueError(f"tensor {name!r}: {counts.size} histogram bins of {counts.dtype} (expected {BINS} counts)")
    if limits.ndim != 1 or not 3 <= limits.size <= 4 or not np.isfinite(limits[2]) or limits[2] < 0:
        raise ValueError(f"tensor {name!r}: damaged limits {limits.tolist()}")
    return TensorStats.from_arrays(limits, counts)


def save_calibration_cache(cache: CalibrationCache, path: str | Path) -> None:
    """Writes ``cache`` atomically, with the permissions a new file gets in its folder (``io.write_bytes``)."""
    path = Path(path)
    names = list(cache.stats)
    key = cache.key or CacheKey("", "")
    arrays = {"format": np.array(_FORMAT), "data": np.array(key.data), "model": np.array(key.model),
              "source": np.array(cache.source), "samples": np.array(cache.samples), "names": np.array(names, dtype=str)}
    for i, name in enumerate(names):
        arrays[f"limits/{i}"] = cache.stats[name].to_arrays()["limits"]
        arrays[f"counts/{i}"] = cache.stats[name].counts
    arrays["rescaled"] = np.array(list(cache.magnitudes), dtype=str)
    for i, magnitude in enumerate(cache.magnitudes.values()):
        arrays[f"magnitudes/{i}"] = np.asarray(magnitude, np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes(path, buffer.getvalue(), what="calibration cache")
