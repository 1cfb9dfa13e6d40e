"""A node a fusion makes keeps the name of the node it replaced: node names are how users point at
layers (``--quantize-exclude conv1``), and PP-OCRv4 det lost 30 of its 62 Conv names to the fusions."""

import numpy as np
import onnx
import onnx_ir as ir

import onnxslim
from onnxslim.passes.cleanup.fuse_batchnorm import FuseBatchNorm
from onnxslim.passes.cleanup.fuse_conv_affine import FuseConvAffine
from onnxslim.passes.cleanup.fuse_matmul_add import FuseMatMulAdd
from tests.helpers import assert_same_outputs, make_model, rng

CHAIN = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 6, 6] x) => (float[N, 4, 6, 6] y) {
    a = Conv <pads = [1, 1, 1, 1]> (x, w1)
    b = Mul (a, k1)
    c = Add (b, k2)
    d = Conv <pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (c, w2)
    e = BatchNormalization (d, s, bias, mean, var)
    y = Sigmoid (e)
}"""


def _chain():
    r = rng(0)
    return make_model(CHAIN, initializers={
        "w1": r.standard_normal((4, 3, 3, 3)).astype(np.float32), "k1": r.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32),
        "k2": r.standard_normal((1, 4, 1, 1)).astype(np.float32), "w2": r.standard_normal((4, 4, 3, 3)).astype(np.float32),
        "s": r.uniform(0.5, 2, 4).astype(np.float32), "bias": r.standard_normal(4).astype(np.float32),
        "mean": r.standard_normal(4).astype(np.float32), "var": r.uniform(0.5, 2, 4).astype(np.float32)})


def _named(model):
    for index, node in enumerate(model.graph):
        node.name = f"{node.op_type.lower()}{index}"
    return model


def test_fused_convs_keep_the_conv_names_through_chained_rewrites():
    model, feeds = _named(_chain()), {"x": rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)}
    fused = FuseBatchNorm()(FuseConvAffine()(model.clone()).model).model  # Conv -> Mul -> Add: two rewrites
    assert [(n.op_type, n.name) for n in fused.graph] == [("Conv", "conv0"), ("Conv", "conv3"), ("Sigmoid", "sigmoid5")]
    assert_same_outputs(model, fused, feeds, atol=1e-4)


def test_gemm_from_matmul_and_add_keeps_the_matmul_name():
    r = rng(0)
    model = _named(make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x) => (float[N, 4] y) { m = MatMul (x, w)  y = Add (m, b) }""",
        initializers={"w": r.standard_normal((8, 4)).astype(np.float32), "b": r.standard_normal(4).astype(np.float32)}))
    fused = FuseMatMulAdd()(model.clone()).model
    assert [(n.op_type, n.name) for n in fused.graph] == [("Gemm", "matmul0")]


def test_a_quantize_exclusion_by_name_survives_the_cleanup(tmp_path):
    path, data = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(ir.serde.serialize_model(_named(_chain())), str(path))
    np.savez(data, x=rng(2).standard_normal((8, 3, 6, 6)).astype(np.float32))
    result = onnxslim.run(path, tmp_path / "q.onnx", quantize="static", calibration_data=str(data),
                          quantize_exclude=["conv0"], validate=False)
    assert not any("matches no node" in w for w in result.warnings), result.warnings
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    producers = {out: n.op_type for n in quantized.graph.node for out in n.output}
    weight_from = {n.name: producers.get(n.input[1], "initializer") for n in quantized.graph.node if n.op_type == "Conv"}
    assert weight_from == {"conv0": "initializer", "conv3": "DequantizeLinear"}


def test_two_fused_pairs_reading_one_input_keep_their_own_names():
    # a ResNet downsample / Inception split: two Conv+BN read x; both fused Convs came out unnamed
    r = rng(1)
    bn = {f"{k}{i}": r.uniform(0.5, 2, 4).astype(np.float32) for i in (1, 2) for k in ("s", "b", "m", "v")}
    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 6, 6] x) => (float[N, 4, 6, 6] y) {
            c1 = Conv <pads = [1, 1, 1, 1]> (x, w1)
            n1 = BatchNormalization (c1, s1, b1, m1, v1)
            c2 = Conv <pads = [1, 1, 1, 1]> (x, w2)
            n2 = BatchNormalization (c2, s2, b2, m2, v2)
            y = Add (n1, n2)
        }""", initializers={"w1": r.standard_normal((4, 3, 3, 3)).astype(np.float32),
                            "w2": r.standard_normal((4, 3, 3, 3)).astype(np.float32), **bn})
    for node, name in zip(model.graph, ("conv1", "bn1", "conv2", "bn2", "add")):
        node.name = name
    fused = FuseBatchNorm()(model.clone()).model
    assert sorted((n.op_type, n.name) for n in fused.graph) == [("Add", "add"), ("Conv", "conv1"), ("Conv", "conv2")]
    feeds = {"x": rng(2).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    assert_same_outputs(model, fused, feeds, atol=1e-4)
    conv1 = next(n for n in fused.graph if n.name == "conv1")
    np.testing.assert_allclose(conv1.inputs[1].const_value.numpy(),  # conv1 holds w1's fold
                               model.graph.initializers["w1"].const_value.numpy()
                               * (bn["s1"] / np.sqrt(bn["v1"] + 1e-5))[:, None, None, None], rtol=1e-5)


def test_a_rewritten_node_keeps_the_name_of_the_node_whose_output_it_makes():
    from onnxslim.passes.cleanup.remove_noops import RemoveNoops

    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (bool[4] c, float[4] a, float[4] b) => (float[4] y) { n = Not (c)  y = Where (n, a, b) }""")
    for node, name in zip(model.graph, ("not_1", "where_1")):
        node.name = name
    assert [(n.op_type, n.name) for n in RemoveNoops()(model).model.graph] == [("Where", "where_1")]
