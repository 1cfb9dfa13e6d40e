"""What every pass result must satisfy: a valid model, loadable by ONNX Runtime, same I/O contract."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxslim.errors import OnnxSlimError, first_line
from onnxslim.io import PROTOBUF_LIMIT, model_nbytes
from onnxslim.proto import PLACEHOLDER_LOCATION
from onnxslim.runtime.session import SessionModel, make_session, session_model


class ModelCheckError(OnnxSlimError):
    """The model failed the onnx checker, ONNX Runtime's loader or the I/O contract."""

    exit_code = 1


def io_contract(model: ir.Model) -> list[tuple[str, str, str | None, tuple | None]]:
    """(kind, name, dtype, dims) of each graph input and output, in order."""
    rows = []
    for kind, values in (("input", model.graph.inputs), ("output", model.graph.outputs)):
        for value in values:
            dtype = value.dtype.name if value.dtype is not None else None
            dims = None if value.shape is None else tuple(_dim_key(d) for d in value.shape)
            rows.append((kind, value.name, dtype, dims))
    return rows


def _dim_key(dim) -> int | str | None:
    if isinstance(dim, int):
        return dim
    return dim.value  # symbolic name or None


def contract_violations(before: list, after: list) -> list[str]:
    """Differences in names, dtypes or shapes; refining an unknown dim or shape is allowed."""
    if [(k, n) for k, n, _, _ in before] != [(k, n) for k, n, _, _ in after]:
        names = {kind: ([n for k, n, _, _ in before if k == kind], [n for k, n, _, _ in after if k == kind])
                 for kind in ("input", "output")}
        return [f"graph {kind}s changed: {old} -> {new}" for kind, (old, new) in names.items() if old != new]
    problems = []
    for (kind, name, dtype0, dims0), (_, _, dtype1, dims1) in zip(before, after):
        if dtype0 is not None and dtype0 != dtype1:
            problems.append(f"{kind} {name!r} dtype changed {dtype0} -> {dtype1}")
        if dims0 is None:
            continue
        if dims1 is None or len(dims0) != len(dims1):
            problems.append(f"{kind} {name!r} shape changed {list(dims0)} -> {list(dims1) if dims1 else None}")
            continue
        for d0, d1 in zip(dims0, dims1):
            if d0 is not None and d0 != d1:
                problems.append(f"{kind} {name!r} shape changed {list(dims0)} -> {list(dims1)}")
                break
    return problems


def check_model(model: ir.Model, *, runtime: bool = True) -> None:
    """Raises ModelCheckError unless onnx's checker and ONNX Runtime's loader accept the model.

    The weights' bytes are not re-encoded (on all-MiniLM-L6-v2 that was 0.7 s per check, more than
    the passes themselves): the checker reads a copy whose large initializers are external-data
    placeholders, an empty file of that name beside it; ORT receives them as arrays, and checks
    each against its placeholder's name, type and shape."""
    if model_nbytes(model) > PROTOBUF_LIMIT:
        with tempfile.TemporaryDirectory(prefix="onnxslim-check-") as folder:
            path = Path(folder) / "model.onnx"
            ir.save(model, path, external_data="model.onnx.data")
            _check_onnx(str(path))
            if runtime:
                _check_runtime(str(path))
        return
    packed = session_model(model)  # one serialization serves both checks
    with tempfile.TemporaryDirectory(prefix="onnxslim-check-") as folder:
        (Path(folder) / PLACEHOLDER_LOCATION).touch()
        path = Path(folder) / "model.onnx"
        path.write_bytes(packed.data)
        _check_onnx(str(path))
    if runtime:
        _check_runtime(packed)


def _check_onnx(path: str) -> None:
    try:
        onnx.checker.check_model(path)
    except Exception as exc:
        raise ModelCheckError(f"onnx checker: {first_line(exc)}") from None


def _check_runtime(model: SessionModel | str) -> None:
    try:
        make_session(model, optimize=False)
    except Exception as exc:
        raise ModelCheckError(f"onnxruntime cannot load it: {first_line(exc)}") from None
