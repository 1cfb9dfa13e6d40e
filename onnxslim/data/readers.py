"""One reader interface for validation and calibration data.

A reader is a re-iterable source of ``DataBatch`` (``inputs``: {input name: array with samples
along axis 0}, ``labels``: 1-D ints or None). Iterating streams batches: nothing is held
beyond the current batch, so calibration can walk large data sets. ``open_reader`` picks the
reader for a path; ``load_samples`` keeps the older list-returning call working.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple

import numpy as np
import onnx_ir as ir

from onnxslim.data import npz
from onnxslim.data.checks import (check_arrays, check_finite, check_input_shapes, check_keys, check_labels,
                                  data_inputs, fitted_batch, input_layout, labels_key, overridable_inputs)
from onnxslim.data.identity import digest, files_digest
from onnxslim.errors import DataError, first_line
from onnxslim.input_shapes import resolve_shape

Batch = dict[str, np.ndarray]


class DataBatch(NamedTuple):
    inputs: Batch
    labels: np.ndarray | None = None
    source: str | None = None
    """Where the batch comes from ("eval.npz (samples 32-63)"): an error about the batch names it."""
    whole: frozenset[str] = frozenset()
    """Inputs passed whole with every batch (scalars, inputs without the batch axis): never cut or counted."""

    @property
    def samples(self) -> int:
        """Samples along the batch axis; 1 when no input has one (the batch is one evaluation)."""
        cut = [value for name, value in self.inputs.items() if name not in self.whole]
        return len(cut[0]) if cut else 1

    def head(self, count: int) -> DataBatch:
        """The first ``count`` samples (inputs passed whole stay whole)."""
        inputs = {name: value if name in self.whole else value[:count] for name, value in self.inputs.items()}
        return self._replace(inputs=inputs, labels=None if self.labels is None else self.labels[:count])


def sample_count(batch) -> int:
    """Samples in a batch: a DataBatch counts its own (inputs passed whole, such as scalars, are not
    samples); a plain dict its first array's length; no inputs, or a scalar, is one evaluation."""
    if hasattr(batch, "samples"):
        return batch.samples
    first = next(iter(batch.values()), None)
    return len(first) if np.ndim(first) else 1


class Reader:
    """Base: subclasses implement ``__iter__``; ``describe()`` says where the data comes from,
    ``identity()`` whether it would yield the same batches as before."""

    source = "data"
    path: Path | None = None
    """The file or folder read, named by errors about the data as a whole."""
    fixed_batch: int | None = None
    """The only batch size the model takes (``checks.input_layout``): the batches all have it."""

    def __iter__(self) -> Iterator[DataBatch]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.source

    def identity(self) -> str | None:
        """A digest that changes whenever the batches could: the data's contents (``identity.py``:
        each file's size, modification time and sampled bytes), preprocessing, batch size, subset.
        None: no stable identity (the calibration cache is then not used)."""
        return None


class RandomReader(Reader):
    """Seeded random inputs that respect each input's dtype and shape; the same batches each pass."""

    def __init__(self, model: ir.Model, count: int, *, seed: int = 0, input_shapes: Mapping[str, tuple] | None = None,
                 batch: int = 1, vary_defaults: bool = False):
        """``vary_defaults``: float inputs with an initializer default are fed that default scaled by
        1 + 5% noise per element, whole with every batch (validation: an optimized model that folded
        the default away, and so ignores what a caller feeds, agreed on the default itself)."""
        check_input_shapes(model, input_shapes or {})
        self.defaults = {v.name: v.const_value.numpy() for v in overridable_inputs(model)
                         if vary_defaults and v.const_value.dtype.is_floating_point()}
        self.shapes = {v.name: resolve_shape(v, input_shapes or {}, default_batch=batch) for v in data_inputs(model)}
        # scalars (an If's condition) and inputs without the batch axis are no samples
        self.unbatched = frozenset(self.shapes) - input_layout(model, input_shapes).batched
        self.dtypes = {v.name: v.dtype.numpy() if v.dtype is not None else np.float32 for v in data_inputs(model)}
        self.count, self.seed, self.batch = count, seed, batch
        self.source = f"{count} random batch(es) of {batch}, seed {seed}" if batch > 1 else f"{count} random batch(es), seed {seed}"

    def identity(self) -> str:
        return digest("random-v2", self.count, self.seed, sorted(self.shapes.items()),
                      sorted((k, np.dtype(v).str) for k, v in self.dtypes.items()),
                      *([sorted(self.defaults)] if self.defaults else []))

    def __iter__(self) -> Iterator[DataBatch]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.count):
            inputs = {name: random_array(rng, self.shapes[name], self.dtypes[name], name) for name in self.shapes}
            varied = {name: np.asarray(value * (1 + 0.05 * rng.standard_normal(value.shape))).astype(value.dtype)
                      for name, value in self.defaults.items()}
            yield DataBatch({**inputs, **varied}, whole=frozenset(varied) | self.unbatched)


MASK_WORDS = ("mask",)
"""Integer inputs named like these get ones: an attention mask of random 0..7 is no mask, and a
row of zeros masks every token (all-MiniLM-L6-v2 outputs NaN throughout on either)."""
SEGMENT_WORDS = ("token_type", "segment")
"""Integer inputs named like these get zeros: BERT's segment table has two rows, often one."""


def random_array(rng: np.random.Generator, shape: tuple, dtype: np.dtype, name: str = "") -> np.ndarray:
    """Random values for an input: standard normal floats; ones for an integer/bool mask (by its
    name), zeros for token-type ids, small integers 0..7 (valid token ids, indices) otherwise."""
    lowered = name.lower()
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        if any(word in lowered for word in MASK_WORDS):
            return np.ones(shape, dtype)
        if any(word in lowered for word in SEGMENT_WORDS):
            return np.zeros(shape, dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 8, shape).astype(dtype)
    if dtype == np.object_:  # a string input: short random words
        return np.array(["".join(rng.choice(list("abcdefgh"), 4)) for _ in range(int(np.prod(shape)))],
                        dtype=object).reshape(shape)
    raise DataError(f"cannot make random inputs of dtype {dtype}")


class NpzReader(Reader):
    """A .npz whose keys are input names (samples along axis 0), plus optional ``labels``. Only the
    headers and labels are held: each walk reads the rows its batches need (``npz.py``)."""

    def __init__(self, path: Path, model: ir.Model, *, batch_size: int = 32,
                 input_shapes: Mapping[str, tuple] | None = None, samples: int | None = None):
        """``samples``: only the first this many will be read (``--calibration-samples``): only they
        are scanned for NaN/Inf and must fill a fixed batch size (a 10 GB file calibrated on 64
        samples was read whole, and a NaN past them refused it)."""
        self.path = path
        self.members = npz.read_members(path)
        check_keys(list(self.members), model, path)
        labels = self.members.pop(labels_key(model), None)
        placeholders = {key: member.placeholder() for key, member in self.members.items()}
        self.total = check_arrays(placeholders, model, path, input_shapes, values=False)
        layout = input_layout(model, input_shapes)
        self.whole, self.fixed_batch = frozenset(self.members) - layout.batched, layout.fixed_batch
        used = self.total if samples is None else max(0, min(samples, self.total))
        for key, member in self.members.items():  # the values, a few MB at a time, before any work
            rows = None if key in self.whole else used
            check_finite(key, placeholders[key], path, npz.count_nonfinite(path, member, rows=rows))
        self.labels = check_labels(None if labels is None else npz.load(path, labels), self.total, path)
        self.batch_size = fitted_batch(layout, batch_size, used, path)
        self.source = str(path)
        self.file_digest = files_digest([path], path.parent)  # now: the headers above are what it describes

    def identity(self) -> str:
        return digest("npz", self.file_digest, self.batch_size)

    def __iter__(self) -> Iterator[DataBatch]:
        whole = {key: npz.load(self.path, self.members[key]) for key in self.whole}
        cut = [member for key, member in self.members.items() if key not in self.whole]
        with npz.row_readers(self.path, cut) as readers:
            for start in range(0, self.total, self.batch_size):
                stop = min(start + self.batch_size, self.total)
                labels = None if self.labels is None else self.labels[start:stop]
                inputs = {key: whole[key] if key in whole else readers[key].read(stop - start) for key in self.members}
                yield DataBatch(inputs, labels, f"{self.path} (samples {start}-{stop - 1})", self.whole)


def read_npz(path: Path, model: ir.Model) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    # np.load takes any file that is not a zip (or .npy) for a pickle, and then says that it "contains
    # pickled (object) data": true of object arrays inside a real .npz, misleading for a text file
    if not zipfile.is_zipfile(path):
        raise DataError("not a valid .npz (zip) file", path=path)
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                arrays[key] = _array(archive, key, path)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read as .npz: {first_line(exc)}", path=path) from None
    check_keys(list(arrays), model, path)
    labels = arrays.pop(labels_key(model), None)
    return arrays, labels


def _array(archive, key: str, path: Path) -> np.ndarray:
    try:
        value = archive[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # an object array: loading it would unpickle, i.e. run code from the file
            raise DataError(f"array {key!r} contains pickled (object) data, which is not loaded; "
                            "save numeric arrays", path=path) from None
        raise
    if not isinstance(value, np.ndarray):  # a member without the .npy header comes back as its raw bytes
        raise DataError(f"member {key!r} is not a .npy array", path=path)
    return npz.native_order(value)


def open_reader(path: str | Path, model: ir.Model, *, batch_size: int = 32, preprocess: str | None = None,
                input_shapes: Mapping[str, tuple] | None = None, preprocess_flag: str = "--preprocess",
                samples: int | None = None) -> Reader:
    """The reader for ``path``: a .npz file, a folder of .npz/.npy, or a folder of images.

    ``input_shapes``: the ``--input-shape`` pins, which the data must fit too (a pinned first dim
    fixes the batch size); ``preprocess_flag``: the flag the spec came from, for error messages."""
    from onnxslim.data.folder import ArrayFolderReader, folder_kind
    from onnxslim.data.images import ImageFolderReader

    path = Path(path)
    if not path.exists():
        raise DataError("data file not found", path=path)
    check_input_shapes(model, input_shapes or {})
    if path.is_dir():
        if preprocess is not None or folder_kind(path) == "images":
            return ImageFolderReader(path, model, spec=preprocess, batch_size=batch_size, input_shapes=input_shapes,
                                     flag=preprocess_flag)
        return ArrayFolderReader(path, model, input_shapes=input_shapes)
    if preprocess is not None:
        raise DataError(f"{preprocess_flag} applies to a folder of images, not a file", path=path)
    if path.suffix.lower() == ".npy" and not zipfile.is_zipfile(path):  # one array, named by no input
        raise DataError("a .npy file is read from a folder (one file per sample or batch, single-input models); "
                        "give its folder, or save a .npz with one key per input", path=path)
    return NpzReader(path, model, batch_size=batch_size, input_shapes=input_shapes, samples=samples)


def load_samples(path: str | Path, model: ir.Model, *, batch_size: int = 32,
                 preprocess: str | None = None) -> tuple[list[Batch], np.ndarray | None]:
    """All batches of ``path`` in memory, plus the labels if the data has them."""
    batches, labels = [], []
    for batch in open_reader(path, model, batch_size=batch_size, preprocess=preprocess):
        batches.append(batch.inputs)
        labels.append(batch.labels)
    has_labels = bool(labels) and all(item is not None for item in labels)
    return batches, np.concatenate(labels) if has_labels else None


def random_samples(model: ir.Model, count: int, *, seed: int = 0, input_shapes: Mapping[str, tuple] | None = None,
                   batch: int = 1) -> list[Batch]:
    """Seeded random inputs that respect each input's dtype and shape."""
    return [b.inputs for b in RandomReader(model, count, seed=seed, input_shapes=input_shapes, batch=batch)]
