"""split-lowrank on directly chained layers: one split layer reads another's output with no op between.

Each layer is rewritten in graph order, so the producer is replaced before its consumer is: the
consumer must then read the producer's NEW output (a stale reference to the old one left the graph
unsorted, the checker failed and the manager rolled the whole pass back). Weights of an exact rank
split losslessly (outputs within 1e-4); full-rank ones are checked against the truncated SVD
computed here with numpy (Eckart-Young: the plain split's U V is that product).
"""

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxslim.api import run
from tests.helpers import (
    assert_same_outputs,
    check_full,
    make_model,
    op_types,
    rng,
    run_ort,
)
from tests.passes.lowrank.test_split_structure import EXACT, low_rank, split

MATMUL_CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 48] x) => (float[N, 24] y) {
    h1 = MatMul (x, w1)
    h2 = MatMul (h1, w2)
    y = MatMul (h2, w3)
}
"""

MATMUL_LEFT_CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[48, M] x) => (float[32, M] y) {
    h = MatMul (w1, x)
    y = MatMul (w2, h)
}
"""

GEMM_CHAIN = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[M, 48] x) => (float[M, 32] y) {
    h = Gemm <transB = 1> (x, w1, c1)
    y = Gemm <alpha = 0.5, beta = 2.0> (h, w2, c2)
}
"""

CONV_CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[B, 48, 6, 6] x) => (float[B, 32, 3, 3] y) {
    h = Conv <kernel_shape = [1, 1], strides = [2, 2]> (x, w1, b1)
    y = Conv <kernel_shape = [1, 1]> (h, w2, b2)
}
"""

SHARED_CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 48] x) => (float[N, 48] y) {
    h = MatMul (x, w)
    y = MatMul (h, w)
}
"""


def _conv(shape, rank, seed):
    """An (N, K, 1, 1) kernel of exact rank ``rank``."""
    return low_rank((shape[0], shape[1]), rank, seed).reshape(*shape, 1, 1)


CASES = {
    "matmul": (MATMUL_CHAIN, lambda: {"w1": low_rank((48, 40), 5, 1), "w2": low_rank((40, 32), 5, 2),
                                      "w3": low_rank((32, 24), 5, 3)},
               {"x": rng(9).standard_normal((4, 48)).astype(np.float32)}, ["MatMul"] * 6),
    "matmul_left": (MATMUL_LEFT_CHAIN, lambda: {"w1": low_rank((40, 48), 5, 1), "w2": low_rank((32, 40), 5, 2)},
                    {"x": rng(9).standard_normal((48, 3)).astype(np.float32)}, ["MatMul"] * 4),
    "gemm": (GEMM_CHAIN, lambda: {"w1": low_rank((40, 48), 5, 1), "w2": low_rank((40, 32), 5, 2),
                                  "c1": rng(3).standard_normal(40).astype(np.float32),
                                  "c2": rng(4).standard_normal(32).astype(np.float32)},
             {"x": rng(9).standard_normal((4, 48)).astype(np.float32)}, ["Gemm"] * 4),
    "conv1x1": (CONV_CHAIN, lambda: {"w1": _conv((40, 48), 5, 1), "w2": _conv((32, 40), 5, 2),
                                     "b1": rng(3).standard_normal(40).astype(np.float32),
                                     "b2": rng(4).standard_normal(32).astype(np.float32)},
                {"x": rng(9).standard_normal((2, 48, 6, 6)).astype(np.float32)}, ["Conv"] * 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_chained_layers_are_all_split_losslessly(case):
    text, weights, feeds, ops = CASES[case]
    model = make_model(text, initializers=weights())
    original = model.clone()
    result = split(model, rank=5)
    assert result.modified and result.stats["weights_split"] == result.stats["candidates"] == len(ops) // 2
    assert op_types(model) == ops
    _assert_wired_to_live_values(model)
    check_full(model)
    assert_same_outputs(original, model, feeds, **EXACT)


def test_weight_shared_along_a_chain_is_split_once():
    model = make_model(SHARED_CHAIN, initializers={"w": low_rank((48, 48), 6)})
    original = model.clone()
    result = split(model, rank=6)
    assert result.stats["weights_split"] == 1 and result.details[0]["uses"] == 2
    assert op_types(model) == ["MatMul"] * 4 and len(model.graph.initializers) == 2
    _assert_wired_to_live_values(model)
    check_full(model)
    assert_same_outputs(original, model, {"x": rng(1).standard_normal((3, 48)).astype(np.float32)}, **EXACT)


def _truncated(w: np.ndarray, rank: int) -> np.ndarray:
    p, s, qt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    return (p[:, :rank] * s[:rank]) @ qt[:rank]


def _decaying(shape, seed, decay=0.7):
    """A full-rank weight whose singular values fall geometrically (energy picks a small rank)."""
    r = rng(seed)
    p, _ = np.linalg.qr(r.standard_normal((shape[0], shape[0])))
    q, _ = np.linalg.qr(r.standard_normal((shape[1], shape[1])))
    k = min(shape)
    return ((p[:, :k] * decay ** np.arange(k)) @ q[:, :k].T).astype(np.float32)


@pytest.mark.parametrize("settings", [{"rank": 8}, {"energy": 0.9}])
def test_lossy_chain_matches_the_truncated_weights(settings):
    w1, w2, w3 = _decaying((48, 40), 1), _decaying((40, 32), 2), _decaying((32, 24), 3)
    model = make_model(MATMUL_CHAIN, initializers={"w1": w1, "w2": w2, "w3": w3})
    result = split(model, **settings)
    assert result.stats["weights_split"] == 3
    check_full(model)
    rows = {row["weight"]: row for row in result.details}
    x = rng(9).standard_normal((16, 48)).astype(np.float64)
    expected = x
    for name, w in (("w1", w1), ("w2", w2), ("w3", w3)):
        rank, error = rows[name]["rank"], rows[name]["weight_error"]
        exact_error = np.linalg.norm(w - _truncated(w, rank)) / np.linalg.norm(w)
        assert error == pytest.approx(exact_error, abs=1e-5)
        if "energy" in settings:  # the documented contract: each layer keeps that fraction of its energy
            assert error <= np.sqrt(1 - settings["energy"]) + 1e-6
        expected = expected @ _truncated(w, rank)
    (actual,) = run_ort(model, {"x": x.astype(np.float32)})
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def _assert_wired_to_live_values(model: ir.Model) -> None:
    """Every node input is a graph input, an initializer or the output of a node still in the graph."""
    nodes = set(model.graph)
    for node in model.graph:
        for value in node.inputs:
            if value is None or value.is_graph_input() or value.is_initializer():
                continue
            assert value.producer() in nodes, f"{node.name} reads {value.name!r}, which no node in the graph produces"


def _constant_fed_chain(op: str, rank: int | None = None) -> onnx.ModelProto:
    """``x -> op(W1) -> op(W2) -> y`` (opset 11, weights in Constant nodes), as a converter writes it;
    with ``rank``, each weight replaced by its truncated SVD (the reference a plain split must match)."""
    from onnx import TensorProto, helper, numpy_helper

    w1, w2 = _decaying((64, 64), 1), _decaying((64, 64), 2)
    if rank is not None:
        w1, w2 = (_truncated(w, rank).astype(np.float32) for w in (w1, w2))
    shape = ["N", 64]
    if op == "Conv":  # (N, K, 1, 1) kernels: the canonical matrix is the transpose, truncated alike
        w1, w2, shape = w1.reshape(64, 64, 1, 1), w2.reshape(64, 64, 1, 1), ["N", 64, 4, 4]
    nodes = [helper.make_node("Constant", [], ["W1"], value=numpy_helper.from_array(w1, "W1")),
             helper.make_node("Constant", [], ["W2"], value=numpy_helper.from_array(w2, "W2")),
             helper.make_node(op, ["x", "W1"], ["h"], name="layer1"),
             helper.make_node(op, ["h", "W2"], ["y"], name="layer2")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    proto.ir_version = 6
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _feeds(op: str, count: int = 8) -> dict[str, np.ndarray]:
    shape = (count, 64) if op == "MatMul" else (count, 64, 4, 4)
    return {"x": rng(7).standard_normal(shape).astype(np.float32)}


def _record(result, name="split-lowrank"):
    return next(r for r in result.pipeline.records if r.name == name)


@pytest.mark.parametrize("op", ["MatMul", "Conv"])
def test_chain_through_the_pipeline_is_not_rolled_back(op):
    # The manager checks the model (full checker, ORT session) after the pass and rolls it back on failure.
    proto = _constant_fed_chain(op)
    result = run(proto, lowrank_rank=16, validate=False)
    record = _record(result)
    assert record.status == "applied", record.reason
    assert record.stats["weights_split"] == 2 and record.stats["params_after"] == 2 * 16 * 128
    onnx.checker.check_model(ir.serde.serialize_model(result.model), full_check=True)
    feeds = _feeds(op)
    (actual,) = run_ort(result.model, feeds)
    (truncated,) = run_ort(_constant_fed_chain(op, rank=16), feeds)
    np.testing.assert_allclose(actual, truncated, rtol=1e-4, atol=1e-4 * np.abs(truncated).max())
    # Against the float model: each weight keeps all but weight_error (0.0033 at rank 16 of 0.7^i) of its
    # norm; through two layers the output's relative error measured 0.0041 (MatMul) / 0.0060 (Conv).
    (expected,) = run_ort(proto, feeds)
    errors = [row["weight_error"] for row in record.details if row["split"]]
    assert np.linalg.norm(actual - expected) / np.linalg.norm(expected) <= 1.5 * sum(errors)


def test_chain_with_calibration_data_is_split_and_refit(tmp_path):
    # Whitened factors, sequential refit: the second layer has a split layer upstream and is refit.
    data = tmp_path / "calib.npz"
    np.savez(data, **_feeds("MatMul", 64))
    result = run(_constant_fed_chain("MatMul"), lowrank_params=0.5, calibration_data=data, validate=False)
    record = _record(result)
    assert record.status == "applied", record.reason
    assert record.stats["weights_split"] == 2 and record.stats["layers_refit"] == 1
    assert record.stats["check_cosine"] > 0.99
    onnx.checker.check_model(ir.serde.serialize_model(result.model), full_check=True)



def test_ppocr_det_neck_chains_are_split(real_models):
    # PP-OCRv4 det: its neck's 1x1 Conv -> 1x1 Conv chains had the whole pass rolled back. About 3 s.
    cleaned = run(real_models["ppocr_det"], validate=False).model  # fold-constants, fuse-batchnorm, ...
    result = run(cleaned.clone(), simplify=False, lowrank=0.9, validate=False)
    record = _record(result)
    assert record.status == "applied", record.reason
    assert record.stats["weights_split"] == 13 and record.stats["params_saved"] == 311040
    check_full(result.model)
    _assert_wired_to_live_values(result.model)
    split_outputs = {node.outputs[0] for node in result.model.graph if node.name.endswith("_lowrank_b")}
    assert any(node.name.endswith("_lowrank_a") and node.inputs[0] in split_outputs for node in result.model.graph)
    # The split model computes the cleaned one with each weight replaced by its truncated SVD.
    truncated, factors = cleaned.clone(), result.model.graph.initializers
    for row in (row for row in record.details if row["split"]):
        weight = truncated.graph.initializers[row["weight"]]
        u, v = (factors[row["weight"] + suffix].const_value.numpy()[:, :, 0, 0] for suffix in (".lowrank_u", ".lowrank_v"))
        kernel = weight.const_value.numpy()
        best = _truncated(kernel[:, :, 0, 0], row["rank"])
        np.testing.assert_allclose(v @ u, best, atol=1e-4 * np.abs(best).max())
        weight.const_value = ir.tensor(best.astype(np.float32).reshape(kernel.shape), name=weight.name)
    x = {"x": np.random.default_rng(0).uniform(0, 1, (1, 3, 160, 160)).astype(np.float32)}
    (expected,), (actual,) = run_ort(truncated, x), run_ort(result.model, x)
    np.testing.assert_allclose(actual, expected, atol=1e-4)
