"""Data readers at their edges: random integer inputs, npz archives named .npy, labels.

Pinned by a mutation audit: each test fails when the condition it names is dropped or loosened.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.data import open_reader
from onnxslim.data.readers import random_array
from onnxslim.errors import DataError
from tests.helpers import make_model, rng


_MODEL = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y) { y = Relu (x) }"""


def test_random_integer_inputs_are_small_valid_indices():
    """Integer inputs get 0..7: valid token ids / indices for any table of 8 or more rows.
    (mutation: ``rng.integers(0, 8, shape)`` -> ``rng.integers(0, 100, shape)``)"""
    values = random_array(np.random.default_rng(0), (1000,), np.dtype(np.int64), "ids")
    assert values.dtype == np.int64 and values.min() == 0 and values.max() == 7


def test_an_npz_archive_named_npy_is_read_as_npz(tmp_path):
    """np.savez into a file handle named *.npy writes a zip: it is read as the .npz it is.
    (mutation: dropping ``and not zipfile.is_zipfile(path)`` in open_reader)"""
    path = tmp_path / "data.npy"
    with open(path, "wb") as handle:
        np.savez(handle, x=rng(0).standard_normal((3, 4)).astype(np.float32))
    batches = list(open_reader(path, make_model(_MODEL)))
    assert len(batches) == 1 and batches[0].inputs["x"].shape == (3, 4)


def test_float_labels_are_refused(tmp_path):
    """labels must be integer class indices (float labels compared with argmax would never match).
    (mutation: dropping ``or not np.issubdtype(labels.dtype, np.integer)`` in check_labels)"""
    path = tmp_path / "data.npz"
    np.savez(path, x=rng(0).standard_normal((3, 4)).astype(np.float32), labels=np.array([0.0, 1.0, 2.0]))
    with pytest.raises(DataError, match="'labels' must be 1-D integers"):
        open_reader(path, make_model(_MODEL))
