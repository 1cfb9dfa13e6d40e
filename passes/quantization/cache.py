"""Calibration statistics kept between runs, so re-quantizing with other settings skips calibration.

The pass reads and fills a ``CalibrationCache`` object; only ``load_calibration_cache`` and
``save_calibration_cache`` touch files, and the API calls them around the pipeline. The cache
remembers which data produced it (``source``) and is reused only for the same data.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from onnxslim.errors import DataError
from onnxslim.passes.quantization.statistics import TensorStats

_FORMAT = "onnxslim-calibration/1"


@dataclasses.dataclass
class CalibrationCache:
    source: str = ""
    samples: int = 0
    stats: dict[str, TensorStats] = dataclasses.field(default_factory=dict)
    modified: bool = False

    def lookup(self, source: str, tensors) -> dict[str, TensorStats] | None:
        """The cached statistics for every one of ``tensors`` from ``source``, or None."""
        if source != self.source or any(t not in self.stats for t in tensors):
            return None
        return {t: self.stats[t] for t in tensors}

    def store(self, source: str, samples: int, stats: dict[str, TensorStats]) -> None:
        if source != self.source:
            self.stats = {}
        self.source, self.samples = source, samples
        self.stats.update(stats)
        self.modified = True


def load_calibration_cache(path: str | Path) -> CalibrationCache:
    """The cache in ``path``; an empty one when the file does not exist yet."""
    path = Path(path)
    if not path.exists():
        return CalibrationCache()
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = [str(n) for n in archive["names"]]
            if str(archive["format"]) != _FORMAT:
                raise ValueError(f"format {archive['format']} (expected {_FORMAT})")
            stats = {n: TensorStats.from_arrays(archive[f"limits/{i}"], archive[f"counts/{i}"]) for i, n in enumerate(names)}
            return CalibrationCache(str(archive["source"]), int(archive["samples"]), stats)
    except Exception as exc:
        raise DataError(f"not a calibration cache: {exc}", path=path) from None


def save_calibration_cache(cache: CalibrationCache, path: str | Path) -> None:
    """Writes ``cache`` atomically (a temp file in the same folder, then rename)."""
    path = Path(path)
    names = list(cache.stats)
    arrays = {"format": np.array(_FORMAT), "source": np.array(cache.source), "samples": np.array(cache.samples),
              "names": np.array(names, dtype=str)}
    for i, name in enumerate(names):
        arrays[f"limits/{i}"] = cache.stats[name].to_arrays()["limits"]
        arrays[f"counts/{i}"] = cache.stats[name].counts
    handle, temp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(handle)
    try:
        with open(temp, "wb") as stream:
            np.savez_compressed(stream, **arrays)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
