"""Downstream output metrics: consumers found in a tiny attention + FFN block, and the weighted
factorization lowering the error where it matters (the block's output) at the same rank."""

import numpy as np
import onnx_ir as ir
import pytest
from onnxslim.passes.lowrank import factorize, metrics
from onnxslim.passes.lowrank.downstream import find_links
from onnxslim.passes.lowrank.sites import find_groups
from onnxslim.passes.lowrank.split_lowrank import Config, SplitLowRank

from onnxslim.core.pass_base import PassContext
from tests.helpers import check_full, make_model, rng, run_ort
from tests.passes.lowrank.test_refit import CHAIN, chain

# One BERT-like layer as exported by torch: heads split by Reshape + Transpose, SiLU FFN.
BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[B, S, 32] x) => (float[B, S, 32] y) {
    q = MatMul (x, wq)
    k = MatMul (x, wk)
    v = MatMul (x, wv)
    qb = Add (q, bq)
    qh = Reshape (qb, split)
    kh = Reshape (k, split)
    vh = Reshape (v, split)
    qt = Transpose <perm = [0, 2, 1, 3]> (qh)
    kt = Transpose <perm = [0, 2, 3, 1]> (kh)
    vt = Transpose <perm = [0, 2, 1, 3]> (vh)
    logits = MatMul (qt, kt)
    scaled = Mul (logits, scale)
    p = Softmax <axis = -1> (scaled)
    ctx = MatMul (p, vt)
    ct = Transpose <perm = [0, 2, 1, 3]> (ctx)
    merged = Reshape (ct, merge)
    o = MatMul (merged, wo)
    r = Add (o, x)
    u = MatMul (r, w1)
    ub = Add (u, b1)
    s = Sigmoid (ub)
    act = Mul (ub, s)
    dn = MatMul (act, w2)
    y = Add (dn, r)
}
"""
NAMES = ("wq", "wk", "wv", "wo", "w1", "w2")


def skewed(shape, seed, decay=4.0):
    """A weight with a quickly decaying spectrum (what makes the output metric matter)."""
    r = rng(seed)
    left, _ = np.linalg.qr(r.standard_normal((shape[0], shape[0])))
    right, _ = np.linalg.qr(r.standard_normal((shape[1], shape[1])))
    count = min(shape)
    s = np.exp(-np.arange(count) / decay)
    return (left[:, :count] * s) @ right[:count] * 2.0


def block(weights=None):
    w = weights or {"wq": skewed((32, 32), 1, 8), "wk": skewed((32, 32), 2, 8), "wv": rng(3).standard_normal((32, 32)) / 4,
                    "wo": skewed((32, 32), 4), "w1": rng(5).standard_normal((32, 64)) / 4, "w2": skewed((64, 32), 6)}
    return make_model(BLOCK, initializers={
        **{k: np.asarray(v, np.float32) for k, v in w.items()}, "bq": np.full(32, 0.5, np.float32),
        "b1": np.linspace(-1, 1, 64).astype(np.float32), "scale": np.array(0.35, np.float32),
        "split": np.array([0, 0, 4, 8], np.int64), "merge": np.array([0, 0, 32], np.int64)})


def tokens(samples, seed):
    scales = np.exp(-np.arange(32) / 8.0)
    return (rng(seed).standard_normal((samples, 6, 32)) * scales).astype(np.float32)


def test_consumers_are_found_in_an_attention_block():
    model = block()
    groups, _ = find_groups(model.graph, ops=("MatMul",), opset=17, min_params=0)
    names = [g.name for g in groups]
    links = {names[i]: link for i, link in find_links(model.graph, groups).items()}
    assert {n: link.role for n, link in links.items()} == {"wq": "query", "wk": "key", "wv": "value", "w1": "ffn"}
    assert links["wq"].tap == "kt" and links["wk"].tap == "qt" and links["wq"].head_axis == 1
    assert names[links["wv"].partner] == "wo" and names[links["w1"].partner] == "w2"
    assert [n.op_type for n in links["w1"].nodes] == ["Sigmoid", "Mul"] and links["w1"].output == "act"


def test_no_consumer_metric_where_the_activation_feeds_a_residual():
    model = chain(rng(1).standard_normal((48, 48)).astype(np.float32), rng(2).standard_normal((48, 48)).astype(np.float32))
    assert "Tanh" in CHAIN
    groups, _ = find_groups(model.graph, ops=("MatMul",), opset=17, min_params=0)
    assert find_links(model.graph, groups) == {}  # h feeds Tanh and the residual Add: not a function of h -> W_2 only


def _block_error(name: str, rank: int, weighted: bool) -> float:
    """Relative error of the block's output on unseen tokens with only ``name`` split at ``rank``."""
    model = block()
    groups, _ = find_groups(model.graph, ops=("MatMul",), opset=17, min_params=0)
    index = next(i for i, g in enumerate(groups) if g.name == name)
    calib = [{"x": tokens(64, seed)} for seed in range(4)]
    xs = np.concatenate([b["x"] for b in calib]).reshape(-1, 32).astype(np.float64)
    activation = {"wq": xs, "wk": xs, "wv": xs}.get(name)
    if activation is None:  # w1 reads r: take it from the model
        model_r = block()
        model_r.graph.outputs.append(next(v for n in model_r.graph for v in n.outputs if v.name == "r"))
        activation = np.concatenate([run_ort(model_r, b)[1] for b in calib]).reshape(-1, 32).astype(np.float64)
    links = find_links(model.graph, groups)
    metric = metrics.build(groups, links, metrics.collect(model, links, calib)).get(name) if weighted else None
    fact = factorize.whitened(groups[index].matrix, activation.T @ activation, damping=0.01, metric=metric,
                              metric_damping=0.01)
    u, v = fact.factors(rank, np.float64)
    x = {"x": tokens(128, 99)}
    expected = run_ort(model, x)[0]
    groups[index].weight.const_value = ir.tensor(groups[index].to_stored(u @ v))
    actual = run_ort(model, x)[0]
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize("name, rank", [("wv", 6), ("wq", 6), ("wk", 6), ("w1", 8)])
def test_downstream_weighting_lowers_the_block_output_error(name, rank):
    isotropic, weighted = _block_error(name, rank, False), _block_error(name, rank, True)
    assert weighted < 0.8 * isotropic, (isotropic, weighted)


def test_the_pass_with_downstream_weighting_keeps_exact_ranks_exact():
    # every weight of exact rank 4, split at 4: the weighted factors reproduce it (metric or not)
    r = rng(7)
    weights = {n: (r.standard_normal((s[0], 4)) @ r.standard_normal((4, s[1]))) / 8 for n, s in
               zip(NAMES, [(32, 32)] * 4 + [(32, 64), (64, 32)])}
    model, calib = block(weights), [{"x": tokens(64, seed)} for seed in range(4)]
    original = model.clone()
    result = SplitLowRank(Config(rank=4, min_params=0, downstream=True, refit="sequential"),
                          context=PassContext(calibration=calib))(model)
    check_full(model)
    assert result.stats["weights_split"] == 6 and result.stats["layers_refit"] >= 1
    assert result.stats["layers_weighted"] == 4  # wq, wk, wv, w1
    x = {"x": tokens(16, 50)}
    np.testing.assert_allclose(run_ort(model, x)[0], run_ort(original, x)[0], atol=1e-4, rtol=1e-4)


def test_factorization_with_a_metric_is_exact_at_full_rank_and_config_is_checked():
    w, c = rng(8).standard_normal((24, 16)), np.diag(np.exp(-np.arange(24) / 5.0))
    m = skewed((16, 16), 9)
    fact = factorize.whitened(w, c, damping=0.1, metric=m @ m.T, metric_damping=0.01)
    np.testing.assert_allclose(np.matmul(*fact.factors(16, np.float64)), w, atol=1e-8)
    with pytest.raises(ValueError, match="downstream_damping"):
        Config(downstream_damping=-0.1)
