"""Serializing without the weights' bytes: placeholders in, the model restored exactly after."""

import numpy as np
import onnx
import pytest

from onnxslim.proto import DETACHED_BYTES, graph_proto, weights_detached
from onnxslim.runtime.session import model_bytes
from tests.helpers import make_model

MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 64] x) => (float[N, 8, 16] y) {
    h = MatMul (x, w)
    y = Reshape (h, shape)
}
"""


def _model():
    w = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    return make_model(MODEL, initializers={"w": w, "shape": np.array([-1, 8, 16], np.int64)})


def test_graph_proto_keeps_types_and_small_values_but_not_the_weight_bytes():
    model = _model()
    before = model_bytes(model)
    proto = graph_proto(model)
    weight, shape = sorted(proto.graph.initializer, key=lambda t: t.name)[::-1]
    assert weight.name == "w" and weight.data_location == onnx.TensorProto.EXTERNAL and not weight.raw_data
    assert list(weight.dims) == [64, 128] and weight.data_type == onnx.TensorProto.FLOAT
    assert shape.name == "shape" and onnx.numpy_helper.to_array(shape).tolist() == [-1, 8, 16]  # < DETACHED_BYTES
    assert proto.ByteSize() < 2 * DETACHED_BYTES  # the weight alone is 32 KB
    inferred = onnx.shape_inference.infer_shapes(proto)  # reads the inline shape, not the weights
    dims = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    assert dims["h"] == ["N", 128]
    assert model_bytes(model) == before


def test_weights_are_restored_when_the_block_raises():
    model = _model()
    tensor = model.graph.initializers["w"].const_value
    with pytest.raises(RuntimeError):
        with weights_detached(model) as detached:
            assert set(detached) == {"w"} and model.graph.initializers["w"].const_value is not tensor
            raise RuntimeError
    assert model.graph.initializers["w"].const_value is tensor


def test_a_loaded_model_holds_its_tensors_as_arrays_not_as_protobuf(tmp_path):
    """io.load: every plain-typed initializer and Constant value is numpy-backed (numpy() then costs
    nothing), equal to what onnx reads, and the model saves back to the same values."""
    from onnx import TensorProto, helper, numpy_helper

    import onnx_ir as ir
    from onnxslim import io

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float16)
    c = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.arange(3, dtype=np.int64), "c"))
    graph = helper.make_graph(
        [c, helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT16), helper.make_node("MatMul", ["x", "w"], ["h"]),
         helper.make_node("Add", ["h", "cf"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 3])],
        [numpy_helper.from_array(w, "w"), helper.make_tensor("names", TensorProto.STRING, [1], [b"kept"])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    model = io.load(path)
    tensors = {name: v.const_value for name, v in model.graph.initializers.items()}
    constant = next(n for n in model.graph if n.op_type == "Constant").attributes["value"].value
    assert type(tensors["w"]) is ir.Tensor and type(constant) is ir.Tensor
    assert tensors["names"].numpy().tolist() == [b"kept"]  # strings: onnx-ir's own StringTensor, untouched
    np.testing.assert_array_equal(tensors["w"].numpy(), w)
    np.testing.assert_array_equal(constant.numpy(), np.arange(3))
    io.save(model, tmp_path / "out.onnx")
    saved = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "out.onnx")).graph.initializer}
    np.testing.assert_array_equal(saved["w"], w)
