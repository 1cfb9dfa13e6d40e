"""onnx-ir models to protobuf without re-encoding their weights.

ONNX Runtime sessions and onnx shape inference need the graph, not the weight bytes: encoding
90 MB of all-MiniLM-L6-v2 weights into a protobuf only for the reader to decode (or ignore) them
again took longer than the model's forward passes. Within ``weights_detached`` the large
initializers are external-data placeholders (name, type and shape kept), so a serialized copy
carries none of their bytes.

``external_data_loaded`` is the opposite, for tensors read lazily from a model's external data
file: within it they are in memory, so a serialized copy is self-contained (saving inline, handing
a ModelProto to onnxruntime's converters, which resolve locations against the working folder).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from typing import Callable, Iterator

import onnx
import onnx_ir as ir

DETACHED_BYTES = 1024
"""Initializers smaller than this stay inline: shape inference reads their values (Reshape shapes,
Clip bounds, axes)."""

PLACEHOLDER_LOCATION = "__onnxslim_detached__"


@contextlib.contextmanager
def weights_detached(model: ir.Model, select: Callable[[ir.Value], bool] | None = None
                     ) -> Iterator[dict[str, ir.TensorProtocol]]:
    """Main-graph initializers of ``DETACHED_BYTES`` or more (and, if given, ``select``-ed) become
    placeholders for the duration of the block; yields ``{name: tensor}`` of those detached. Tensors
    still read from the source model's external data file that are not detached (small, or not
    selected) are in memory meanwhile (``external_data_loaded``): a serialized copy refers to no file
    but the placeholder. The model is restored exactly on exit, whatever happens inside."""
    detached = {value: value.const_value for value in model.graph.initializers.values()
                if value.const_value is not None and value.const_value.nbytes >= DETACHED_BYTES
                and (select is None or select(value))}
    for value, tensor in detached.items():
        value.const_value = ir.ExternalTensor(PLACEHOLDER_LOCATION, 0, tensor.nbytes, tensor.dtype, shape=tensor.shape,
                                              name=value.name)
    try:
        with external_data_loaded(model):
            yield {value.name: tensor for value, tensor in detached.items()}
    finally:
        for value, tensor in detached.items():
            value.const_value = tensor


def graph_proto(model: ir.Model):
    """The model as an onnx ModelProto whose large initializers hold no data (for shape inference)."""
    with weights_detached(model):
        return ir.serde.serialize_model(model)


@contextlib.contextmanager
def external_data_loaded(model: ir.Model, *, initializers: bool = True) -> Iterator[None]:
    """Every tensor that reads lazily from an external data file (initializers of the main graph and
    subgraphs unless ``initializers=False``; tensor attributes anywhere) is an in-memory tensor for
    the duration of the block, so a proto serialized inside carries its bytes instead of a location
    relative to the source model's folder. The model is restored exactly on exit. The arrays are
    the files' memory maps, not copies."""
    values, attributes = _external_tensors(model.graph)
    restore: list[Callable[[], None]] = []
    try:
        for value in values if initializers else ():
            tensor = value.const_value
            value.const_value = _in_memory(tensor)
            restore.append(functools.partial(setattr, value, "const_value", tensor))
        for node, attr in attributes:
            node.attributes[attr.name] = _attribute_in_memory(attr)
            restore.append(functools.partial(node.attributes.__setitem__, attr.name, attr))
        yield
    finally:
        for undo in reversed(restore):
            undo()


def load_external_attributes(model: ir.Model) -> None:
    """Tensor attributes (Constant values, anywhere) read from an external data file become
    in-memory tensors for good: onnx-ir's saver, which the checks and the validation harness use,
    re-writes initializers only, and would leave them pointing into the source model's folder."""
    for node, attr in _external_tensors(model.graph)[1]:
        node.attributes[attr.name] = _attribute_in_memory(attr)


def arrays_from_proto(model: ir.Model) -> None:
    """Tensors still read from the loaded ModelProto (onnx-ir's ``TensorProtoTensor``: initializers
    and tensor attributes, anywhere) become numpy-backed tensors, once, for good. Each ``numpy()``
    of a proto-backed tensor copies its bytes out of protobuf (upb hands out a new bytes object per
    access), and every session, check and weight rewrite asks again: on all-MiniLM-L6-v2 (90 MB)
    that made a static quantization 1.53 s instead of 1.03 s and its peak RSS 429 MB instead of
    370 MB. Once nothing points into the proto, it is freed: memory does not grow."""
    values, attributes = _tensors_where(model.graph, _is_proto_backed)
    for value in values:
        value.const_value = _in_memory(value.const_value)
    for node, attr in attributes:
        node.attributes[attr.name] = _attribute_in_memory(attr, _is_proto_backed)


def own_tensors(model: ir.Model) -> None:
    """Every tensor of ``model`` (initializers and tensor attributes, in every graph, subgraph and
    function) gets a wrapper of its own, for good. A model deserialized from a caller's ModelProto
    reads its tensors from the caller's TensorProtos, and a clone of a caller's onnx-ir model shares
    its tensor objects: a pass that names a tensor (fold-constants lifting a Constant) would write
    into the caller's model, which the API promises never to modify. Plain dtypes are copied out of
    protobuf (``arrays_from_proto``'s reason holds here too); other tensors keep their values (an
    array is never written in place: snapshots share them too) in a new wrapper."""
    graphs = [model.graph, *(function.graph for function in model.functions.values())]
    for graph in graphs:
        values, attributes = _tensors_where(graph, lambda tensor: tensor is not None)
        for value in values:
            value.const_value = _own(value.const_value)
        for node, attr in attributes:
            if attr.type is ir.AttributeType.TENSOR:
                node.attributes[attr.name] = ir.AttrTensor(attr.name, _own(attr.value), doc_string=attr.doc_string)
            else:
                node.attributes[attr.name] = ir.AttrTensors(attr.name, [_own(t) for t in attr.value],
                                                            doc_string=attr.doc_string)


def _own(tensor: ir.TensorProtocol) -> ir.TensorProtocol:
    props = dict(tensor.metadata_props) or None
    if isinstance(tensor, ir.serde.TensorProtoTensor):
        if tensor.dtype in _PLAIN_NUMPY:
            return _in_memory(tensor)
        proto = onnx.TensorProto()
        proto.CopyFrom(tensor.raw)
        return ir.serde.TensorProtoTensor(proto)
    if isinstance(tensor, ir.ExternalTensor):
        return ir.ExternalTensor(tensor.location, tensor.offset, tensor.length, tensor.dtype, shape=tensor.shape,
                                 name=tensor.name, doc_string=tensor.doc_string, metadata_props=props,
                                 base_dir=tensor.base_dir)
    if isinstance(tensor, ir.StringTensor):
        return ir.StringTensor(tensor.raw, shape=tensor.shape, name=tensor.name, doc_string=tensor.doc_string,
                               metadata_props=props)
    if type(tensor) is ir.Tensor:
        return ir.Tensor(tensor.raw, dtype=tensor.dtype, shape=tensor.shape, name=tensor.name,
                         doc_string=tensor.doc_string, metadata_props=props)
    return copy.copy(tensor)  # PackedTensor, LazyTensor, a caller's own TensorProtocol: a new wrapper at least


def external_tensors(model: ir.Model) -> Iterator[tuple[ir.ExternalTensor, str]]:
    """Tensors read from an external data file (initializers and tensor attributes of every graph,
    subgraph and function), each with a phrase naming it for an error."""
    for graph in [model.graph, *(function.graph for function in model.functions.values())]:
        values, attributes = _external_tensors(graph)
        for value in values:
            yield value.const_value, f"tensor {value.name!r}"
        for node, attr in attributes:
            tensors = [attr.value] if attr.type is ir.AttributeType.TENSOR else attr.value
            for tensor in tensors:
                if _is_external(tensor):
                    yield tensor, f"node {node.name!r} attribute {attr.name!r}"


def _external_tensors(graph: ir.Graph) -> tuple[list[ir.Value], list[tuple[ir.Node, ir.Attr]]]:
    """Initializers and (node, attribute) tensor attributes, of ``graph`` and its subgraphs, read
    from an external data file. One walk, no onnx-ir traversal helpers: this runs before every
    check and session (about 1 ms on PP-OCRv4 rec's 860 nodes, 5 ms with ``model.graphs()`` and
    ``RecursiveGraphIterator``)."""
    return _tensors_where(graph, _is_external)


def _tensors_where(graph: ir.Graph, wanted: Callable[[object], bool]
                   ) -> tuple[list[ir.Value], list[tuple[ir.Node, ir.Attr]]]:
    """Initializers and (node, attribute) tensor attributes of ``graph`` and its subgraphs whose
    tensor is ``wanted``."""
    values, attributes, graphs = [], [], [graph]
    while graphs:
        current = graphs.pop()
        values.extend(v for v in current.initializers.values() if wanted(v.const_value))
        for node in current:
            for attr in node.attributes.values():
                kind = attr.type
                if kind not in _NESTED or attr.is_ref():
                    continue
                if (kind is ir.AttributeType.TENSOR and wanted(attr.value)) or (
                        kind is ir.AttributeType.TENSORS and any(wanted(t) for t in attr.value)):
                    attributes.append((node, attr))
                elif kind is ir.AttributeType.GRAPH:
                    graphs.append(attr.value)
                elif kind is ir.AttributeType.GRAPHS:
                    graphs.extend(attr.value)
    return values, attributes


_NESTED = frozenset({ir.AttributeType.TENSOR, ir.AttributeType.TENSORS, ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS})


def _attribute_in_memory(attr: ir.Attr, wanted: Callable[[object], bool] | None = None) -> ir.Attr:
    if attr.type is ir.AttributeType.TENSOR:
        return ir.AttrTensor(attr.name, _in_memory(attr.value), doc_string=attr.doc_string)
    tensors = [_in_memory(t) if (wanted or _is_external)(t) else t for t in attr.value]
    return ir.AttrTensors(attr.name, tensors, doc_string=attr.doc_string)


def _is_external(tensor: object) -> bool:
    return isinstance(tensor, ir.ExternalTensor) and tensor.location != PLACEHOLDER_LOCATION


_PLAIN_NUMPY = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.INT8,
                          ir.DataType.INT16, ir.DataType.INT32, ir.DataType.INT64, ir.DataType.UINT8,
                          ir.DataType.UINT16, ir.DataType.UINT32, ir.DataType.UINT64, ir.DataType.BOOL})
"""Element types whose numpy() is the stored values as they are (not packed int4, bfloat16, strings)."""


def _is_proto_backed(tensor: object) -> bool:
    return isinstance(tensor, ir.serde.TensorProtoTensor) and tensor.dtype in _PLAIN_NUMPY


def _in_memory(tensor: ir.TensorProtocol) -> ir.Tensor:
    return ir.Tensor(tensor.numpy(), dtype=tensor.dtype, name=tensor.name, doc_string=tensor.doc_string)
