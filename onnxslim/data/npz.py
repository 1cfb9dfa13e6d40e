"""A .npz read a batch at a time: each member's .npy header gives its dtype and shape, and its rows
are read in order as the batches need them, so memory holds a batch, not the file (calibrating on
the first 64 samples of a 200 MB .npz took 400 MB when every array was loaded up front).

A zip member is a stream (compressed or not): rows are read in order, never sought. A Fortran-order
array has no contiguous rows and is loaded whole, as are labels and inputs passed whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import zipfile
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from onnxslim.errors import DataError, first_line

SCAN_BYTES = 1 << 20
"""Bytes per read when scanning a member for NaN/Inf values."""


def native_order(array: np.ndarray) -> np.ndarray:
    """The array in this machine's byte order: data saved big-endian (``>f4``) is the same float32
    data, and ONNX Runtime takes native arrays only."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


@dataclasses.dataclass(frozen=True)
class Member:
    key: str
    name: str
    """The zip member: ``key`` + ".npy"."""
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool

    def placeholder(self) -> np.ndarray:
        """A zero-byte array of the member's dtype (in native order, as it is read) and shape, for
        the checks that read no values."""
        return np.broadcast_to(np.zeros((), self.dtype.newbyteorder("=")), self.shape)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def read_members(path: Path) -> dict[str, Member]:
    """Every member's header; DataError naming the file for anything that is not a plain .npy array."""
    # np.load takes any file that is not a zip (or .npy) for a pickle, and then says that it "contains
    # pickled (object) data": true of object arrays inside a real .npz, misleading for a text file
    if not zipfile.is_zipfile(path):
        raise DataError("not a valid .npz (zip) file", path=path)
    try:
        with zipfile.ZipFile(path) as archive:
            return {m.key: m for m in (_member(archive, name, path) for name in archive.namelist())}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read as .npz: {first_line(exc)}", path=path) from None


def _member(archive: zipfile.ZipFile, name: str, path: Path) -> Member:
    key = name.removesuffix(".npy")
    with archive.open(name) as stream:
        try:
            shape, fortran, dtype = _header(stream)
        except ValueError:  # np.load returns such a member as its raw bytes
            raise DataError(f"member {key!r} is not a .npy array", path=path) from None
    if dtype.hasobject:  # loading it would unpickle, i.e. run code from the file
        raise DataError(f"array {key!r} contains pickled (object) data, which is not loaded; "
                        "save numeric arrays", path=path)
    return Member(key, name, tuple(shape), dtype, fortran)


def _header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"unsupported .npy version {version}")


def load(path: Path, member: Member) -> np.ndarray:
    """The whole array."""
    with zipfile.ZipFile(path) as archive, archive.open(member.name) as stream:
        return native_order(np.lib.format.read_array(stream, allow_pickle=False))


@contextlib.contextmanager
def row_readers(path: Path, members: list[Member]) -> Iterator[dict[str, RowReader]]:
    """A reader of consecutive rows for each member, open together for one walk through the file."""
    with zipfile.ZipFile(path) as archive, contextlib.ExitStack() as stack:
        yield {m.key: RowReader(path, m, stack.enter_context(archive.open(m.name))) for m in members}


class RowReader:
    """``read(count)``: the member's next ``count`` rows (samples along axis 0)."""

    def __init__(self, path: Path, member: Member, stream: IO[bytes]):
        self.path, self.member, self.stream = path, member, stream
        _header(stream)
        self.whole = load(path, member) if member.fortran else None
        self.done = 0

    def read(self, count: int, *, writable: bool = True) -> np.ndarray:
        start, self.done = self.done, self.done + count
        if self.whole is not None:
            return self.whole[start:start + count]
        data = self.stream.read(count * self.member.row_bytes)
        if len(data) != count * self.member.row_bytes:
            raise DataError(f"array {self.member.key!r} ends before row {start + count} (file changed or truncated?)",
                            path=self.path)
        rows = np.frombuffer(data, self.member.dtype).reshape(count, *self.member.shape[1:])
        if not rows.dtype.isnative:
            return native_order(rows)  # a converted copy: writable
        return rows.copy() if writable else rows  # a view of bytes is read-only; batches were always writable


def count_nonfinite(path: Path, member: Member, *, rows: int | None = None) -> int:
    """NaN/Inf values in a float member (its first ``rows`` rows when given), read ``SCAN_BYTES`` at a time."""
    if not np.issubdtype(member.dtype, np.floating):
        return 0
    if not member.shape:
        return int((~np.isfinite(load(path, member))).sum())
    limit = member.shape[0] if rows is None else min(rows, member.shape[0])
    return _count_rows(path, member, limit)


def _count_rows(path: Path, member: Member, total: int) -> int:
    """NaN/Inf values in the member's first ``total`` rows."""
    rows = max(1, SCAN_BYTES // max(1, member.row_bytes))
    bad = 0
    with row_readers(path, [member]) as readers:
        for start in range(0, total, rows):
            chunk = readers[member.key].read(min(rows, total - start), writable=False)
            bad += int((~np.isfinite(chunk)).sum())
    return bad
