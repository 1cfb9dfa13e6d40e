"""What onnx-ir cannot represent, found (and where sound, rewritten) on a ModelProto before it reads
it: map-typed values (refused), sparse tensors (made dense); and the walks over a proto's graphs
and nodes those checks need."""

from __future__ import annotations

from typing import Iterator

import onnx
import onnx_ir as ir


def proto_graphs(proto: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    """The main graph and every subgraph, of the graph and of the model's functions."""
    pending = [proto.graph]
    for function in proto.functions:
        pending.extend(_node_subgraphs(function.node))
    while pending:
        graph = pending.pop()
        yield graph
        pending.extend(_node_subgraphs(graph.node))


def proto_nodes(proto: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node: of every graph and subgraph, and of the functions' bodies."""
    for function in proto.functions:
        yield from function.node
    for graph in proto_graphs(proto):
        yield from graph.node


def _node_subgraphs(nodes) -> Iterator[onnx.GraphProto]:
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield attr.g
            yield from attr.graphs


def type_text(proto: onnx.TypeProto) -> str:
    """A type as the ONNX spec writes it: ``seq(map(int64, tensor(float)))``."""
    kind = proto.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({_elem_text(proto.tensor_type.elem_type)})"
    if kind == "sparse_tensor_type":
        return f"sparse_tensor({_elem_text(proto.sparse_tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({type_text(proto.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({type_text(proto.optional_type.elem_type)})"
    if kind == "map_type":
        return f"map({_elem_text(proto.map_type.key_type)}, {type_text(proto.map_type.value_type)})"
    return "?"


def _elem_text(elem_type: int) -> str:
    try:
        return ir.DataType(elem_type).name.lower()
    except ValueError:
        return str(elem_type)


def _has_map(proto: onnx.TypeProto) -> bool:
    kind = proto.WhichOneof("value")
    if kind == "map_type":
        return True
    if kind == "sequence_type":
        return _has_map(proto.sequence_type.elem_type)
    if kind == "optional_type":
        return _has_map(proto.optional_type.elem_type)
    return False


def map_typed_value(proto: onnx.ModelProto) -> onnx.ValueInfoProto | None:
    """The first value (input, output or value_info, anywhere) whose type holds a map: onnx-ir cannot
    represent maps (scikit-learn converters' ZipMap and DictVectorizer)."""
    infos = [info for function in proto.functions for info in function.value_info]
    for graph in proto_graphs(proto):
        infos.extend([*graph.input, *graph.output, *graph.value_info])
    return next((info for info in infos if _has_map(info.type)), None)


def has_sparse(proto: onnx.ModelProto) -> bool:
    """Whether a graph has sparse initializers or a node a sparse tensor attribute."""
    return any(graph.sparse_initializer for graph in proto_graphs(proto)) or any(
        attr.type == onnx.AttributeProto.SPARSE_TENSOR for node in proto_nodes(proto) for attr in node.attribute)


def densify_sparse(proto: onnx.ModelProto) -> None:
    """Sparse initializers become initializers, and Constant ``sparse_value`` becomes ``value``, in
    place (onnx-ir reads neither). Both mean the dense tensor (values at their indices, zeros
    elsewhere), which is what ONNX Runtime makes of them too. Raises ValueError (naming the tensor)
    for a sparse tensor that is malformed or keeps its values in an external data file."""
    for graph in proto_graphs(proto):
        dense = [dense_tensor(sparse) for sparse in graph.sparse_initializer]
        graph.initializer.extend(dense)
        del graph.sparse_initializer[:]
    for node in proto_nodes(proto):
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        for attr in node.attribute:
            if attr.name == "sparse_value" and attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                tensor = dense_tensor(attr.sparse_tensor)
                attr.Clear()
                attr.name, attr.type = "value", onnx.AttributeProto.TENSOR
                attr.t.CopyFrom(tensor)


def dense_tensor(sparse: onnx.SparseTensorProto) -> onnx.TensorProto:
    """A SparseTensorProto (values, indices flat or one row per value, dims) as the dense tensor."""
    import numpy as np  # noqa: PLC0415 (numpy is only needed for the rare sparse model)
    from onnx import numpy_helper  # noqa: PLC0415

    name = sparse.values.name
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in (sparse.values, sparse.indices)):
        raise ValueError(f"sparse tensor {name!r} keeps its values in an external data file (not supported)")
    try:
        values = numpy_helper.to_array(sparse.values).reshape(-1)
        indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
        dims = tuple(int(d) for d in sparse.dims)
        count = int(np.prod(dims, dtype=np.int64))
        flat = indices.reshape(-1) if indices.ndim <= 1 else np.ravel_multi_index(tuple(indices.T), dims)
        if len(flat) != len(values) or (len(flat) and (flat.min() < 0 or flat.max() >= count)):
            raise ValueError(f"{len(values)} values, {len(flat)} indices, for a tensor of {count} elements")
        dense = np.full(count, b"", dtype=object) if values.dtype == object else np.zeros(count, dtype=values.dtype)
        dense[flat] = values
        tensor = numpy_helper.from_array(dense.reshape(dims), name)
    except ValueError as exc:
        raise ValueError(f"sparse tensor {name!r} is malformed: {exc}") from None
    if tensor.data_type != sparse.values.data_type:  # a dtype numpy spells like another (bfloat16, float8)
        raise ValueError(f"sparse tensor {name!r} of type {_elem_text(sparse.values.data_type)} cannot be made dense")
    return tensor
