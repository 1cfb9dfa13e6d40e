"""What every pass result must satisfy: a valid model, loadable by ONNX Runtime, same I/O contract."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxslim.errors import OnnxSlimError, first_line
from onnxslim.io import PROTOBUF_LIMIT, model_nbytes


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
        return [f"graph {kind}s changed: {[n for k, n, _, _ in before if k == kind]} -> {[n for k, n, _, _ in after if k == kind]}" for kind in ("input", "output")]
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
    """Raises ModelCheckError unless onnx's checker and ONNX Runtime's loader accept the model."""
    if model_nbytes(model) > PROTOBUF_LIMIT:
        with tempfile.TemporaryDirectory(prefix="onnxslim-check-") as folder:
            path = Path(folder) / "model.onnx"
            ir.save(model, path, external_data="model.onnx.data")
            _check(str(path), runtime=runtime)
        return
    _check(ir.serde.serialize_model(model), runtime=runtime)


def _check(model: onnx.ModelProto | str, *, runtime: bool) -> None:
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelCheckError(f"onnx checker: {first_line(exc)}") from None
    if not runtime:
        return
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelCheckError(f"onnxruntime cannot load it: {first_line(exc)}") from None
