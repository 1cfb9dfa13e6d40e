"""Checks of a model's externally stored tensors before anything reads them: every location stays
inside the model's folder (or, for an in-memory model, its base folder) and names a file that
holds the tensor's bytes, so a truncated or misplaced file is one error naming the tensor, not a
failure when a pass or ONNX Runtime first reads it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import onnx
import onnx_ir as ir

from onnxslim.errors import ExternalDataError
from onnxslim.proto import external_tensors
from onnxslim.proto_compat import proto_graphs, proto_nodes


def check_external_locations(proto: onnx.ModelProto, path: Path) -> None:
    """Every tensor stored externally (initializers, Constant values, anywhere) names a file inside
    the model's folder that holds its bytes: a truncated or short file fails here, naming the tensor,
    not when a pass or ONNX Runtime first reads it."""
    folder = path.parent.resolve()
    for tensor in model_tensor_protos(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        where = f"tensor {tensor.name!r}"
        location = entries.get("location", "")
        target = _inside(folder, location, path=path, where=where, base="the model's folder")
        if target == path.resolve():
            raise ExternalDataError(f"external data location {location!r} is the model file itself", path=path, where=where)
        try:
            offset, length = (int(entries[key]) if key in entries else None for key in ("offset", "length"))
        except ValueError:
            raise ExternalDataError(f"external data offset or length is not an integer: {entries}", path=path,
                                    where=where) from None
        _check_extent(target, location, offset or 0, length, _proto_nbytes(tensor), path=path, where=where)


def check_in_memory_external(model: ir.Model, label: str) -> None:
    """``check_external_locations`` for an in-memory model's tensors still stored externally (read
    relative to their base folder, the working folder when none was set): the same refusals as for
    a path, absolute and ``..`` locations included."""
    for tensor, where in external_tensors(model):
        base = Path(tensor.base_dir or ".").resolve()
        target = _inside(base, tensor.location, path=label, where=where,
                         base=f"its base folder {str(tensor.base_dir)!r}" if tensor.base_dir else "the working folder",
                         missing=f"not found (looked in {base}); load the model with its weights (onnx.load "
                                 "without load_external_data=False) or pass its path")
        _check_extent(target, tensor.location, tensor.offset or 0, tensor.length, _ir_nbytes(tensor),
                      path=label, where=where)


def _inside(folder: Path, location: str, *, path: object, where: str, base: str, missing: str = "is missing") -> Path:
    """The file ``location`` names, refused unless it is a file inside ``folder``."""
    leaves = ExternalDataError(f"external data location {location!r} leaves {base}", path=path, where=where)
    if not location or Path(location).is_absolute() or ".." in Path(location).parts:
        raise leaves
    target = (folder / location).resolve()
    if folder not in target.parents:
        raise leaves
    if not target.exists():
        raise ExternalDataError(f"external data file {location!r} {missing}", path=path, where=where)
    if not target.is_file():
        raise ExternalDataError(f"external data location {location!r} is not a file", path=path, where=where)
    return target


def _check_extent(target: Path, location: str, offset: int, length: int | None, nbytes: int | None, *,
                  path: object, where: str) -> None:
    """The bytes the tensor reads (``length`` from ``offset``, or its own size when no length is
    given) lie inside the file, and ``length`` covers the tensor."""
    size = target.stat().st_size
    if offset < 0 or (length is not None and length < 0):
        raise ExternalDataError(f"external data offset {offset} or length {length} is negative", path=path, where=where)
    if length is not None and nbytes is not None and length < nbytes:
        raise ExternalDataError(f"external data length {length} is smaller than the tensor ({nbytes} bytes)",
                                path=path, where=where)
    needed = length if length is not None else nbytes
    if needed is not None and offset + needed > size:
        raise ExternalDataError(f"external data file {location!r} is too short ({size} bytes) for bytes {offset} to "
                                f"{offset + needed} (truncated, or a wrong offset or length)", path=path, where=where)


def _proto_nbytes(tensor: onnx.TensorProto) -> int | None:
    """The tensor's size in bytes from its dims and type; None for strings and unknown types."""
    try:
        dtype = ir.DataType(tensor.data_type)
        return math.ceil(dtype.itemsize * math.prod(tensor.dims))
    except (ValueError, TypeError):
        return None


def _ir_nbytes(tensor: ir.ExternalTensor) -> int | None:
    try:
        return tensor.nbytes
    except (ValueError, TypeError):
        return None


def model_tensor_protos(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes of every graph, subgraph and function body."""
    for graph in proto_graphs(proto):
        yield from graph.initializer
    for node in proto_nodes(proto):
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
