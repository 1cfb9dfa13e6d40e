"""A reader cut to its first N samples (``--calibration-samples``)."""

from __future__ import annotations

from typing import Iterator

from onnxslim.data.identity import digest
from onnxslim.data.readers import DataBatch, Reader
from onnxslim.errors import DataError


class FirstSamples(Reader):
    def __init__(self, reader: Reader, count: int):
        if count < 1:
            raise DataError(f"the number of samples must be at least 1, got {count}")
        self.reader, self.count = reader, count
        self.source = f"first {count} samples of {reader.describe()}"

    def identity(self) -> str | None:
        inner = self.reader.identity() if hasattr(self.reader, "identity") else None
        return None if inner is None else digest("first", self.count, inner)

    def __iter__(self) -> Iterator[DataBatch]:
        left = self.count
        for batch in self.reader:
            size = len(next(iter(batch.inputs.values())))
            if size >= left:
                labels = None if batch.labels is None else batch.labels[:left]
                yield DataBatch({k: v[:left] for k, v in batch.inputs.items()}, labels)
                return
            left -= size
            yield batch
