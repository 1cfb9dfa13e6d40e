"""prefetched: the next calibration batch is read on a worker thread while the current one runs."""

import threading

import pytest

from onnxslim.data.prefetch import prefetched
from onnxslim.errors import DataError


def test_batches_come_in_order_and_all_of_them():
    assert list(prefetched(iter(range(50)))) == list(range(50))
    assert list(prefetched([])) == []


def test_the_next_batch_is_read_while_the_caller_works_on_this_one():
    second_read = threading.Event()

    def reader():
        yield 1
        second_read.set()
        yield 2

    batches = prefetched(reader())
    assert next(batches) == 1
    # without a worker thread the second batch would only be read on the next call
    assert second_read.wait(timeout=10)
    assert list(batches) == [2]


def test_a_reader_error_is_raised_where_its_batch_would_have_come():
    def reader():
        yield "first"
        raise DataError("calib.npz: input 'x' has NaN values")

    batches = prefetched(reader())
    assert next(batches) == "first"
    with pytest.raises(DataError, match="NaN values"):
        next(batches)


def test_stopping_early_stops_the_reader():
    read = []

    def reader():
        for i in range(1000):
            read.append(i)
            yield i

    for batch in prefetched(reader()):
        if batch == 2:
            break
    threading.Event().wait(0.3)
    assert len(read) <= 5  # one batch ahead at most, plus the one being read when the caller stopped
    assert not [t for t in threading.enumerate() if t.name == "onnxslim-prefetch"]
