"""A reader cut to its first N samples (``--calibration-samples``)."""

from __future__ import annotations

from typing import Iterator

from onnxslim.data.identity import digest
from onnxslim.data.readers import DataBatch, Reader
from onnxslim.errors import DataError


class FirstSamples(Reader):
    def __init__(self, reader: Reader, count: int):
        if count < 1:
            raise DataError(f"--calibration-samples must be at least 1, got {count}")
        fixed = reader.fixed_batch
        if fixed and count % fixed:  # the last batch would be cut short, and the model refuses it
            raise DataError(f"--calibration-samples {count} is not a multiple of {fixed}, the only batch size the "
                            f"model takes (its first dim is fixed or pinned at {fixed})", path=reader.path)
        self.reader, self.count = reader, count
        self.path, self.fixed_batch = reader.path, fixed
        self.source = f"first {count} samples of {reader.describe()}"

    def identity(self) -> str | None:
        inner = self.reader.identity() if hasattr(self.reader, "identity") else None
        return None if inner is None else digest("first", self.count, inner)

    def __iter__(self) -> Iterator[DataBatch]:
        left = self.count
        for batch in self.reader:
            size = batch.samples
            if size >= left:
                yield batch.head(left)
                return
            left -= size
            yield batch
