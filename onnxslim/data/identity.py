"""Digests that say whether a reader would yield the same batches as before (the calibration cache's key).

A file's identity is its name, size, modification time and a sample of its bytes: whole when
small, else ``BLOCKS`` blocks spread from its first to its last byte. That catches a rewritten
file (new time, and for compressed data almost every block changes) without reading a large
data set a second time: the per-file sample shrinks with the number of files, from ``MAX_SAMPLE``
for one .npz to ``MIN_SAMPLE`` for a folder of thousands of images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

MAX_SAMPLE = 1 << 20
MIN_SAMPLE = 16 << 10
TOTAL_SAMPLE = 32 << 20
"""Bytes read per file: ``TOTAL_SAMPLE`` shared by the files, within [MIN_SAMPLE, MAX_SAMPLE]."""
BLOCKS = 16


def digest(*parts: object) -> str:
    """A short hex digest of the parts' text (``repr`` of each)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def files_digest(paths: Sequence[Path], root: Path) -> str:
    """Each file's path relative to ``root``, size, modification time (ns) and sampled bytes."""
    sample = max(MIN_SAMPLE, min(MAX_SAMPLE, TOTAL_SAMPLE // max(1, len(paths))))
    hasher = hashlib.sha256()
    for path in paths:
        status = path.stat()
        hasher.update(repr((str(path.relative_to(root)), status.st_size, status.st_mtime_ns)).encode())
        hasher.update(_sampled_bytes(path, status.st_size, sample))
    return hasher.hexdigest()[:32]


def _sampled_bytes(path: Path, size: int, sample: int) -> bytes:
    with open(path, "rb") as stream:
        if size <= sample:
            return stream.read()
        block, chunks = sample // BLOCKS, []
        for index in range(BLOCKS):  # the first block starts at 0, the last one ends at the end of the file
            stream.seek((size - block) * index // (BLOCKS - 1))
            chunks.append(stream.read(block))
        return b"".join(chunks)


def arrays_digest(batches: Iterable[Mapping[str, np.ndarray]]) -> str:
    """Every array's name, dtype, shape and bytes, batch by batch (for data already in memory)."""
    hasher = hashlib.sha256()
    for batch in batches:
        for name, value in batch.items():
            array = np.ascontiguousarray(value)  # at least 1-D: the shape comes from ``value``
            hasher.update(repr((name, array.dtype.str, np.shape(value))).encode())
            hasher.update(array.view(np.uint8).reshape(-1) if array.dtype != object else repr(array.tolist()).encode())
    return hasher.hexdigest()[:32]
