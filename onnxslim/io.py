"""Loading and saving models: path safety, external data, atomic writes."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

import onnx
import onnx_ir as ir

from onnxslim.errors import first_line, ModelLoadError, OutputPathError
from onnxslim.external_data import check_external_locations, check_in_memory_external, model_tensor_protos
from onnxslim.proto import (arrays_from_proto, external_data_loaded, load_external_attributes, own_tensors,
                            PLACEHOLDER_LOCATION)
from onnxslim.proto_compat import densify_sparse, has_sparse, map_typed_value, proto_nodes, type_text

logger = logging.getLogger(__name__)

ModelSource = Union[str, os.PathLike, onnx.ModelProto, ir.Model]

# Protobuf cannot serialize a message over 2 GiB; keep a margin for the graph itself.
PROTOBUF_LIMIT = 2**31 - 2**26


def load(src: ModelSource) -> ir.Model:
    """Returns an onnx-ir model; a path is read lazily (external weights stay memory-mapped).

    A ModelProto or onnx-ir model is the caller's: the result shares nothing with it that a pass
    could change (the input is never modified), only the weights' values."""
    if isinstance(src, ir.Model):
        check_in_memory_external(src, "<onnx_ir.Model>")
        model = src.clone()
        own_tensors(model)
        load_external_attributes(model)  # else the sessions' copies point them into a temporary folder
    elif isinstance(src, onnx.ModelProto):
        _require_graph(src, "<ModelProto>")
        if has_sparse(src):  # densified in a copy: the caller's proto is never modified
            src = _copy(src)
        _prepare(src, "<ModelProto>")
        model = _deserialize(src, "<ModelProto>")
        check_in_memory_external(model, "<ModelProto>")
        own_tensors(model)
    elif isinstance(src, (str, os.PathLike)):
        model = _load_path(Path(src))
    else:  # bytes, None...: a bare TypeError from deep inside otherwise
        raise ModelLoadError(f"expected a path, an onnx.ModelProto or an onnx_ir.Model, got {type(src).__name__}")
    return canonical_domains(model)


def canonical_domains(model: ir.Model) -> ir.Model:
    """The default opset's other spelling, ``ai.onnx``, written as ``""``: the spec allows both, but
    passes, onnxscript's rewriter and ORT's tools look the opset up under ``""`` (an opset-17 model
    that spelled it ``ai.onnx`` was read as opset 1 and had its fusions rolled back)."""
    for imports in [model.opset_imports, *(f.opset_imports for f in model.functions.values())]:
        if "ai.onnx" in imports:
            version = imports.pop("ai.onnx")
            imports[""] = max(version, imports.get("", version))
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.domain == "ai.onnx":
            node.domain = ""
    for function in model.functions.values():
        for node in ir.traversal.RecursiveGraphIterator(function):
            if node.domain == "ai.onnx":
                node.domain = ""
    return model


def _load_path(path: Path) -> ir.Model:
    if not path.exists():
        raise ModelLoadError("file not found", path=path)
    if not path.is_file():
        raise ModelLoadError("not a file", path=path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelLoadError(f"not a valid ONNX model (truncated or not ONNX): {first_line(exc)}", path=path) from None
    _require_graph(proto, path)
    check_external_locations(proto, path)
    _prepare(proto, path)
    try:
        onnx.checker.check_model(_skeleton(proto))
    except Exception as exc:
        raise ModelLoadError(f"model is malformed: {first_line(exc)}", path=path) from None
    model = _deserialize(proto, path)
    ir.external_data.set_base_dir(model.graph, str(path.parent))
    load_external_attributes(model)
    arrays_from_proto(model)
    return model


def _prepare(proto: onnx.ModelProto, path: object) -> None:
    """Refuses what onnx-ir would drop or cannot read, naming it; makes sparse tensors dense (in
    place: ``proto`` is ours)."""
    if proto.training_info:
        raise ModelLoadError("training_info is not supported: onnxslim optimizes the inference graph, and the "
                             f"model's {len(proto.training_info)} training algorithm(s) would be dropped from the "
                             "output; remove training_info first", path=path)
    info = map_typed_value(proto)
    if info is not None:
        raise ModelLoadError(f"value {info.name!r} has type {type_text(info.type)}: map types are not supported "
                             "(onnx-ir cannot represent them; export a scikit-learn classifier without ZipMap: "
                             "skl2onnx's zipmap=False option)", path=path)
    try:
        densify_sparse(proto)
    except ValueError as exc:
        raise ModelLoadError(str(exc), path=path) from None


def _deserialize(proto: onnx.ModelProto, path: object) -> ir.Model:
    """onnx-ir's model, or a ModelLoadError saying what it could not read (its own error wraps the
    reason in one "Error calling ..." per level: the innermost is the one worth a line)."""
    try:
        return ir.serde.deserialize_model(proto)
    except Exception as exc:  # SerdeError, NotImplementedError, ValueError: onnx-ir's refusals of the model
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        reason = first_line(cause).split(" Please contribute")[0]
        raise ModelLoadError(f"onnx-ir cannot read the model: {reason}", path=path) from None


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(proto)
    return copied


def _skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every initializer emptied: what the structural checker needs, without
    copying or re-reading the weights (they were checked for location above; ONNX Runtime
    checks their sizes when it loads the model)."""
    skeleton = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(skeleton, field, getattr(proto, field))
    skeleton.opset_import.extend(proto.opset_import)
    skeleton.functions.extend(proto.functions)
    graph, source = skeleton.graph, proto.graph
    graph.name = source.name
    for field in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(graph, field).extend(getattr(source, field))
    for tensor in source.initializer:
        graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=[0])
    for tensor in model_tensor_protos(skeleton):  # Constant values, subgraph and function tensors stored externally
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            tensor.ClearField("external_data")
            tensor.ClearField("data_location")
            tensor.ClearField("dims")
            tensor.dims.append(0)
    _canonical_proto_domains(skeleton)
    return skeleton


def _canonical_proto_domains(proto: onnx.ModelProto) -> None:
    """``canonical_domains`` on a proto (the checker's copy): the checker looks ``ai.onnx`` nodes up as
    a domain of its own and finds no MatMul there, though the spec (and ONNX Runtime) allows it."""
    for opsets in [proto.opset_import, *(function.opset_import for function in proto.functions)]:
        versions = {opset.domain: opset.version for opset in opsets}
        if "ai.onnx" in versions:
            merged = max(versions.pop("ai.onnx"), versions.get("", 0))
            versions[""] = merged
            del opsets[:]
            opsets.extend(onnx.helper.make_opsetid(domain, version) for domain, version in versions.items())
    for node in proto_nodes(proto):
        if node.domain == "ai.onnx":
            node.domain = ""


def _require_graph(proto: onnx.ModelProto, path: object) -> None:
    if not proto.HasField("graph") or proto.ir_version == 0 or not proto.graph.output:
        raise ModelLoadError("not an ONNX model (no graph, IR version or outputs)", path=path)


def model_nbytes(model: ir.Model) -> int:
    """Bytes of the weights in every graph (If/Loop bodies too: they count toward protobuf's 2 GB)."""
    return sum(v.const_value.nbytes for graph in model.graphs() for v in graph.initializers.values()
               if v.const_value is not None)


def referenced_files(model: ir.Model) -> set[Path]:
    """Files that the model's external initializers (main graph and subgraphs) read from."""
    files = set()
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor) and tensor.location != PLACEHOLDER_LOCATION:
                files.add(Path(tensor.path).resolve())
    return files


def check_output_path(dst: Path, *, src: Path | None, overwrite_input: bool = False) -> None:
    """Refuses to write over the input model (unless asked), or into a folder that is missing, is a
    file or takes no new files (else the save fails after all the work, exit 3)."""
    from onnxslim.preflight import check_writable_folder  # preflight imports this module

    if src is not None and not overwrite_input and dst.resolve() == src.resolve():
        raise OutputPathError("output path is the input path; pass a different output (or --overwrite-input)", path=dst)
    check_writable_folder(dst, what="output")
    if dst.exists() and dst.is_dir():
        raise OutputPathError("output path is a folder", path=dst)


def save(model: ir.Model, dst: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Writes a self-contained model atomically: a temporary file in the destination folder, then
    a rename (onnx-ir writes the data file the same way, before the model file is renamed).

    External data (``<name>.data`` beside the model) is used when asked, or automatically
    when the weights exceed what one protobuf can hold. Weights the model still reads lazily from
    its source's data file are copied, inline or into the output's own data file: the output never
    refers to another model's files.
    """
    dst = Path(dst)
    if dst.is_dir():
        raise OutputPathError("output path is a folder", path=dst)
    if not dst.parent.is_dir():
        raise OutputPathError("output folder does not exist", path=dst)
    if external_data is None:
        external_data = model_nbytes(model) > PROTOBUF_LIMIT
    data_name = dst.name + ".data"
    if external_data and (dst.parent / data_name).resolve() in referenced_files(model):
        raise OutputPathError(f"external data file {data_name!r} is read by the model being saved", path=dst)
    try:
        if external_data:
            _save_pair(model, dst, data_name)
        else:
            _save_inline(model, dst)
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:  # the folder changed meanwhile
        raise OutputPathError(f"cannot write the model: {exc.strerror or first_line(exc)}", path=dst) from None
    logger.info("wrote %s", dst)
    return dst


def _save_inline(model: ir.Model, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp.onnx", dir=dst.parent)
    os.close(fd)
    try:
        with external_data_loaded(model):
            Path(tmp).write_bytes(_compact_proto(model).SerializeToString())
        os.chmod(tmp, _file_mode(dst))  # mkstemp creates 0600; a model file is as readable as any other
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_pair(model: ir.Model, dst: Path, data_name: str) -> None:
    """The model and its data file, written in a temporary folder beside ``dst`` and then moved in:
    first the old model is removed, then the data replaced, then the model renamed. No rename
    swaps two files at once, and an old model left beside the new data would read it at the old
    offsets (weights that load but are wrong, or a model that does not load): a process killed in
    between leaves no model at ``dst`` instead, never a wrong pair."""
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        # ir.save re-writes every initializer (external ones included) into data_name, or inline
        # when small; tensor attributes (Constant nodes) it leaves as they are, so those are loaded.
        with external_data_loaded(model, initializers=False):
            ir.save(model, staging / dst.name, external_data=data_name)
        os.chmod(staging / dst.name, _file_mode(dst))
        dst.unlink(missing_ok=True)
        if (staging / data_name).exists():  # none when every weight was small enough to stay inline
            os.chmod(staging / data_name, _file_mode(dst.parent / data_name))
            os.replace(staging / data_name, dst.parent / data_name)
        os.replace(staging / dst.name, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str, *, what: str = "report") -> Path:
    """Writes ``text`` atomically (a temporary file in the same folder, then a rename), with the
    permissions a new file gets there; an error naming the file when its folder does not exist."""
    return write_bytes(path, text.encode("utf-8"), what=what)


def write_bytes(path: str | os.PathLike, data: bytes, *, what: str = "report") -> Path:
    """``write_text`` for bytes (a calibration cache's archive)."""
    target = Path(path)
    if not target.parent.exists():
        raise OutputPathError(f"{what} folder does not exist", path=target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _file_mode(target))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _compact_proto(model: ir.Model) -> onnx.ModelProto:
    """The model as a proto without what onnx-ir adds on top of the source: value_info
    repeating each initializer's type, and an explicit empty opset domain."""
    proto = ir.serde.serialize_model(model)
    initializers = {t.name for t in proto.graph.initializer}
    kept = [v for v in proto.graph.value_info if v.name not in initializers]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    for opset in proto.opset_import:
        if not opset.domain:
            opset.ClearField("domain")
    return proto


def _file_mode(dst: Path) -> int:
    if dst.exists():
        return dst.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def to_proto(model: ir.Model) -> onnx.ModelProto:
    return ir.serde.serialize_model(model)
