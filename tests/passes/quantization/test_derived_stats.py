"""Sigmoid/SiLU output statistics derived from the input's histogram match the fetched ones."""

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxslim.passes.quantization.calibrate import collect_statistics, tensor_statistics
from onnxslim.passes.quantization.derived import HardSigmoid, derivable, derive, hard_swish, sigmoid, silu, union
from onnxslim.passes.quantization.ranges import tensor_range
from onnxslim.passes.quantization.statistics import TensorStats
from tests.helpers import make_model, rng


@pytest.mark.parametrize("function", [sigmoid, silu, hard_swish, HardSigmoid(1 / 6, 0.5)])
@pytest.mark.parametrize("method", ["minmax", "percentile", "mse", "entropy"])
def test_derived_ranges_match_ranges_of_the_real_outputs(function, method):
    # a YOLO-like pre-activation: body around 0, a long negative tail, a few large positives
    r = rng(1)
    values = np.concatenate([r.normal(0, 2, 60000), -r.exponential(20, 3000), r.exponential(4, 2000)]).astype(np.float32)
    source, direct = TensorStats(), TensorStats()
    for chunk in np.array_split(values, 4):
        source.update(chunk)
        direct.update(function(chunk.astype(np.float64)).astype(np.float32))
    derived = derive(source, function)
    assert derived.minimum == pytest.approx(direct.minimum, abs=1e-5)
    assert derived.maximum == pytest.approx(direct.maximum, rel=1e-5)
    assert derived.counts.sum() % direct.counts.sum() == 0  # each sample spread over a few points
    got, want = tensor_range(derived, method), tensor_range(direct, method)
    span = direct.maximum - direct.minimum
    assert got[0] == pytest.approx(want[0], abs=0.02 * span) and got[1] == pytest.approx(want[1], abs=0.02 * span)


def test_only_sigmoid_and_silu_of_a_ranged_tensor_are_derived():
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y, float[N, 4] z) {
        s = Sigmoid (x)
        y = Mul (x, s)
        t = Sigmoid (y)
        z = Mul (t, x)
    }
    """)
    found = derivable(model.graph, {"x", "s", "y", "t", "z"})
    assert {k: (v.sources, v.function.__name__) for k, v in found.items()} == {
        "s": (("x",), "sigmoid"), "y": (("x",), "silu"), "t": (("y",), "sigmoid")}
    assert derivable(model.graph, {"s", "y"}) == {}  # x itself not ranged: nothing to derive from


def test_hard_swish_and_hard_sigmoid_gates_are_derived():
    model = make_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y, float[N, 4] z, float[N, 4] w) {
        y = HardSwish (x)
        z = HardSigmoid <alpha = 0.2, beta = 0.5> (x)
        w = HardSigmoid <alpha = -0.2, beta = 0.5> (x)
    }
    """)
    found = derivable(model.graph, {"x", "y", "z", "w"})
    assert found["y"][:2] == (("x",), hard_swish) and found["z"].function.alpha == pytest.approx(0.2)
    # a decreasing gate: not the image of the input's ends, so a traced chain, sampled between them
    assert found["w"].function.ops == ("HardSigmoid",)
    source = TensorStats()
    source.update(np.array([-3.0, -1.0, 2.0], np.float32))
    derived = derive(source, hard_swish, histogram=False)
    assert derived.minimum == pytest.approx(-0.375) and derived.maximum == pytest.approx(2 * (2 / 6 + 0.5))


def test_min_max_only_source_gives_min_max_only_derived_statistics():
    source = TensorStats()
    source.update(np.array([-3.0, 0.5, 2.0], np.float32), histogram=False)
    derived = derive(source, HardSigmoid(0.2, 0.5), histogram=False)
    assert (derived.minimum, derived.maximum) == pytest.approx((0.0, 0.9)) and not derived.empty


NECK = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4, 8, 8] x) => (float[N, 8, 4, 4] y) {
    scales = Constant <value = float[4] {1, 1, 2, 2}> ()
    halves = Constant <value = int64[2] {2, 2}> ()
    a, b = Split <axis = 1> (x, halves)
    p = MaxPool <kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [2, 2]> (a)
    e = Exp (b)
    q = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (e)
    up = Resize <mode = "nearest"> (q, , scales)
    small = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (up)
    y = Concat <axis = 1> (p, small, q, p)
}
"""


def test_shape_only_outputs_and_concats_are_derived_in_graph_order():
    model = ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(ir.serde.serialize_model(make_model(NECK))))
    names = {"x", "a", "b", "p", "e", "q", "up", "small", "y"}
    found = derivable(model.graph, names)
    assert list(found) == ["a", "b", "up", "y"]  # Exp and MaxPool (its minimum rises) are fetched
    assert found["a"].sources == ("x",) and found["a"].size == pytest.approx(0.5)
    assert found["y"].sources == ("p", "small", "q", "p") and found["y"].function is None
    assert derivable(make_model(NECK).graph, names)["up"].size is None  # no shapes: calibration counts it
    assert "y" not in derivable(model.graph, names - {"q"})  # one input unranged: fetch it


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse", "entropy"])
def test_concat_union_matches_the_fetched_concat(method):
    # parts of very different sizes and tails: the union must weigh each by the elements it stands for
    # (the big part's histogram holds a quarter of its elements, the small ones all of theirs)
    r = rng(3)
    parts = [lambda: r.normal(0, 1, (4, 64, 32, 32)), lambda: r.standard_t(3, (2, 16, 8, 8)) * 8,
             lambda: r.exponential(2, (2, 32, 8, 8))]
    stats, direct, everything = [TensorStats() for _ in parts], TensorStats(), []
    for _ in range(4):
        values = [f().astype(np.float32) for f in parts]
        for s, v in zip(stats, values):
            s.update(v)
        everything.append(np.concatenate([v.reshape(-1) for v in values]))
        direct.update(everything[-1])
    merged = union(stats)
    unweighted = union([TensorStats(s.minimum, s.maximum, s.radius, s.counts) for s in stats])  # elements unknown
    assert (merged.minimum, merged.maximum) == (direct.minimum, direct.maximum)
    assert merged.elements == direct.elements
    got, span = tensor_range(merged, method), direct.maximum - direct.minimum
    if method == "percentile":  # the exact percentiles: the direct histogram's sample has 5x fewer tail values
        want = np.percentile(np.concatenate(everything), [0.01, 99.99])
        tolerance = 0.01 * span
    else:  # mse / entropy read the whole shape: the direct histogram's sample is close enough
        want, tolerance = tensor_range(direct, method), 0.05 * span
    assert got == pytest.approx(want, abs=tolerance)
    if method in ("percentile", "mse"):  # weights matter: equal ones overweight the heavy-tailed small part
        assert abs(tensor_range(unweighted, method)[1] - want[1]) > tolerance


@pytest.mark.parametrize("method", ["minmax", "mse"])
def test_derived_statistics_give_the_ranges_of_fetched_ones_in_a_model(method):
    model = make_model(NECK)
    names = ["x", "a", "b", "p", "e", "q", "up", "small"]
    batches = [{"x": rng(i).normal(0, 1, (2, 4, 8, 8)).astype(np.float32)} for i in range(3)]
    derived = tensor_statistics(model, batches, names + ["y"], minmax_only=method == "minmax")
    fetched, _ = collect_statistics(model, batches, names + ["y"])
    for name in names:
        assert derived[name].minimum <= fetched[name].minimum + 1e-6 and derived[name].maximum >= fetched[name].maximum - 1e-6
    # the nearest upsampling keeps every value, and the Concat's parts are all exact: so is the union
    for name in ("up", "y"):
        assert (derived[name].minimum, derived[name].maximum) == (fetched[name].minimum, fetched[name].maximum)
    assert derived["up"].elements == 4 * derived["q"].elements == fetched["up"].elements
    want, got = tensor_range(fetched["y"], method), tensor_range(derived["y"], method)
    assert got == pytest.approx(want, abs=0.02 * (fetched["y"].maximum - fetched["y"].minimum))
