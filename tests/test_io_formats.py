"""Loading what onnx-ir reads differently or not at all: map types, sparse tensors, training_info,
the ``ai.onnx`` domain spelling; external data that is short or unsafe; weight counts in every graph."""

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper as h
from onnx import numpy_helper as nh
from onnx import TensorProto as T

import onnxslim
from onnxslim import io
from onnxslim.cli import main
from onnxslim.core.stats import graph_stats
from onnxslim.errors import ExternalDataError, ModelLoadError, OutputPathError
from tests.helpers import run_ort

vi = h.make_tensor_value_info


def _model(nodes, inits=(), ins=None, outs=None, *, opsets=(("", 17),), **graph):
    ins = ins if ins is not None else [vi("x", T.FLOAT, [6])]
    outs = outs if outs is not None else [vi("y", T.FLOAT, [6])]
    model = h.make_model(h.make_graph(nodes, "g", ins, outs, list(inits), **graph),
                         opset_imports=[h.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    return model


def _save(model, path):
    path.write_bytes(model.SerializeToString())
    return path


# 1. map types (scikit-learn's ZipMap) and what else onnx-ir cannot read


def _zipmap_classifier():
    nodes = [h.make_node("LinearClassifier", ["x"], ["label", "prob"], domain="ai.onnx.ml", classlabels_ints=[0, 1, 2],
                         coefficients=[0.5] * 12, intercepts=[0.1, 0.2, 0.3], post_transform="SOFTMAX"),
             h.make_node("ZipMap", ["prob"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    seq_map = h.make_sequence_type_proto(h.make_map_type_proto(T.INT64, h.make_tensor_type_proto(T.FLOAT, [])))
    outs = [vi("label", T.INT64, [None]), h.make_value_info("probabilities", seq_map)]
    return _model(nodes, ins=[vi("x", T.FLOAT, [None, 4])], outs=outs, opsets=(("", 17), ("ai.onnx.ml", 1)))


def test_a_map_typed_output_is_a_load_error_naming_the_value_and_its_type(tmp_path, capsys):
    path = _save(_zipmap_classifier(), tmp_path / "clf.onnx")
    pattern = r"value 'probabilities' has type seq\(map\(int64, tensor\(float\)\)\): map types are not supported"
    for src in (path, _zipmap_classifier()):
        with pytest.raises(ModelLoadError, match=pattern):
            onnxslim.load(src)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(path) in err and "map types are not supported" in err and len(err.splitlines()) == 1


def test_anything_else_onnx_ir_cannot_read_is_a_load_error_with_its_reason():
    sparse = h.make_sparse_tensor(nh.from_array(np.ones(1, np.float32), "v"), nh.from_array(np.zeros(1, np.int64), "i"), [4])
    node = h.make_node("Custom", ["x"], ["y"], domain="my.ops", table=sparse)  # a sparse attribute not on a Constant
    model = _model([node], opsets=(("", 17), ("my.ops", 1)))
    with pytest.raises(ModelLoadError, match=r"^<ModelProto>: onnx-ir cannot read the model: Sparse tensors are not supported"):
        onnxslim.load(model)


# 2. external data that is short, out of range or the model itself


_W = np.random.RandomState(0).randn(16, 16).astype(np.float32)


def _external_model(folder, location, *, data=None, offset=None, length=None):
    """x[1,16] @ W -> y, W stored in ``folder/location`` (``data``: the file's bytes; None writes none)."""
    folder.mkdir(exist_ok=True)
    tensor = T(name="W", data_type=T.FLOAT, dims=[16, 16], data_location=T.EXTERNAL)
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    if data is not None:
        (folder / location).write_bytes(data)
    model = _model([h.make_node("MatMul", ["x", "W"], ["y"])], [tensor], [vi("x", T.FLOAT, [1, 16])],
                   [vi("y", T.FLOAT, [1, 16])])
    return _save(model, folder / "m.onnx")


_SHORT = {
    "truncated": (dict(data=_W.tobytes()[:100]), r"file 'w.bin' is too short \(100 bytes\) for bytes 0 to 1024"),
    "offset past the end": (dict(data=_W.tobytes(), offset=2048, length=1024), r"too short \(1024 bytes\) for bytes 2048"),
    "length over the file": (dict(data=_W.tobytes(), length=1424), r"too short \(1024 bytes\) for bytes 0 to 1424"),
    "length under the tensor": (dict(data=_W.tobytes(), length=100), r"length 100 is smaller than the tensor \(1024 bytes\)"),
}


@pytest.mark.parametrize("case", list(_SHORT))
def test_external_data_that_does_not_hold_the_tensor_is_refused_at_load(tmp_path, capsys, case):
    options, pattern = _SHORT[case]
    path = _external_model(tmp_path / "m", "w.bin", **options)
    with pytest.raises(ExternalDataError, match=rf"^{path}: tensor 'W': external data .*{pattern}"):
        onnxslim.optimize(path, validate=False)
    assert main(["inspect", str(path)]) == 2  # inspect reads no weight: it must not call the model fine
    assert main([str(path), str(tmp_path / "o.onnx"), "-q"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_an_external_location_naming_the_model_file_is_refused(tmp_path):
    path = _external_model(tmp_path / "m", "m.onnx")
    with pytest.raises(ExternalDataError, match=r"tensor 'W': external data location 'm.onnx' is the model file itself"):
        onnxslim.load(path)


@pytest.mark.parametrize("options", [dict(data=b"\1" * 512 + _W.tobytes(), offset=512, length=1024),
                                     dict(data=_W.tobytes() + b"\0" * 64)], ids=["offset", "longer file"])
def test_external_data_inside_a_larger_file_loads(tmp_path, options):
    path = _external_model(tmp_path / "m", "w.bin", **options)
    out = onnxslim.optimize(path, validate=False)
    x = np.ones((1, 16), np.float32)
    np.testing.assert_allclose(run_ort(out, {"x": x})[0], x @ _W, rtol=1e-6)


# 8. in-memory models get the same location checks


@pytest.mark.parametrize("location", ["ABS", "../secret.bin"])
def test_an_in_memory_model_with_an_unsafe_location_is_refused(tmp_path, monkeypatch, location):
    (tmp_path / "secret.bin").write_bytes(_W.tobytes())
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    location = str(tmp_path / "secret.bin") if location == "ABS" else location
    proto = onnx.load(str(_external_model(tmp_path / "m", location)), load_external_data=False)
    for src, label in ((proto, "<ModelProto>"), (ir.serde.deserialize_model(proto), "<onnx_ir.Model>")):
        with pytest.raises(ExternalDataError, match=rf"^{label}: tensor 'W': external data location '{location}' leaves"):
            onnxslim.optimize(src, validate=False)


def test_an_in_memory_model_reading_a_short_file_is_refused(tmp_path, monkeypatch):
    proto = onnx.load(str(_external_model(tmp_path / "m", "w.bin", data=_W.tobytes()[:10])), load_external_data=False)
    monkeypatch.chdir(tmp_path / "m")
    with pytest.raises(ExternalDataError, match=r"^<ModelProto>: tensor 'W': external data file 'w.bin' is too short"):
        onnxslim.load(proto)
    model = ir.load(str(tmp_path / "m" / "m.onnx"))  # its base folder set: the working folder does not matter
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExternalDataError, match=r"^<onnx_ir.Model>: tensor 'W': external data file 'w.bin' is too short"):
        onnxslim.load(model)


# 3. sparse tensors are made dense


def _sparse(name="S"):
    return h.make_sparse_tensor(nh.from_array(np.array([5.0, 7.0], np.float32), name),
                                nh.from_array(np.array([1, 4], np.int64), name + "_i"), [6])


@pytest.mark.parametrize("kind", ["constant", "initializer", "2-d indices"])
def test_sparse_tensors_are_made_dense_and_compute_the_same(tmp_path, kind):
    if kind == "constant":
        model = _model([h.make_node("Constant", [], ["S"], sparse_value=_sparse()), h.make_node("Add", ["x", "S"], ["y"])])
    else:
        sparse = _sparse()
        if kind == "2-d indices":
            sparse.indices.CopyFrom(nh.from_array(np.array([[1], [4]], np.int64), "S_i"))
        model = _model([h.make_node("Add", ["x", "S"], ["y"])], sparse_initializer=[sparse])
    path = _save(model, tmp_path / "m.onnx")
    before = model.SerializeToString()
    x = np.linspace(-1, 1, 6).astype(np.float32)
    for src in (path, model):
        out = onnxslim.optimize(src, validate=False)
        np.testing.assert_array_equal(run_ort(out, {"x": x})[0], x + np.array([0, 5, 0, 0, 7, 0], np.float32))
        assert onnxslim.inspect(src)["params"] == 6
    assert model.SerializeToString() == before  # the caller's proto is not densified in place


def test_a_malformed_sparse_tensor_is_a_load_error():
    sparse = _sparse()
    sparse.indices.CopyFrom(nh.from_array(np.array([1, 9], np.int64), "S_i"))  # 9 is past the 6 elements
    model = _model([h.make_node("Add", ["x", "S"], ["y"])], sparse_initializer=[sparse])
    with pytest.raises(ModelLoadError, match=r"sparse tensor 'S' is malformed"):
        onnxslim.load(model)


# 4. training_info would be dropped: refused


def test_training_info_is_refused_not_dropped(tmp_path, capsys):
    model = _model([h.make_node("Mul", ["x", "W"], ["y"])], [nh.from_array(np.ones(6, np.float32), "W")])
    info = model.training_info.add()
    info.algorithm.CopyFrom(h.make_graph([h.make_node("Identity", ["W"], ["W_new"])], "upd", [], [vi("W_new", T.FLOAT, [6])]))
    binding = info.update_binding.add()
    binding.key, binding.value = "W", "W_new"
    path = _save(model, tmp_path / "m.onnx")
    for src in (path, model):
        with pytest.raises(ModelLoadError, match=r"training_info is not supported"):
            onnxslim.load(src)
    assert main([str(path), str(tmp_path / "o.onnx"), "-q"]) == 2
    assert not (tmp_path / "o.onnx").exists()
    assert "training_info is not supported" in capsys.readouterr().err


# 6. the default domain spelled ai.onnx on the nodes


def test_nodes_in_the_ai_onnx_domain_load_from_a_path_as_from_a_proto(tmp_path):
    w = np.random.RandomState(1).randn(6, 6).astype(np.float32)
    nodes = [h.make_node("MatMul", ["x", "W"], ["m"], domain="ai.onnx"), h.make_node("Identity", ["m"], ["y"], domain="ai.onnx")]
    model = _model(nodes, [nh.from_array(w, "W")], [vi("x", T.FLOAT, [2, 6])], [vi("y", T.FLOAT, [2, 6])],
                   opsets=(("ai.onnx", 17),))
    path = _save(model, tmp_path / "m.onnx")
    x = np.ones((2, 6), np.float32)
    for src in (path, model):
        out = onnxslim.optimize(src, validate=False)
        np.testing.assert_allclose(run_ort(out, {"x": x})[0], x @ w, rtol=1e-6)


# 5. weights of every graph and every Constant form count


def _if_model():
    then_g = h.make_graph([h.make_node("Add", ["x", "Wt"], ["t"])], "then", [], [vi("t", T.FLOAT, [4])],
                          [nh.from_array(np.ones(4, np.float32), "Wt")])
    else_g = h.make_graph([h.make_node("Constant", [], ["c"], value=nh.from_array(np.full(4, 2, np.float32))),
                           h.make_node("Mul", ["x", "c"], ["e"])], "else", [], [vi("e", T.FLOAT, [4])])
    nodes = [h.make_node("ReduceSum", ["x"], ["s"], keepdims=0), h.make_node("Greater", ["s", "zero"], ["cond"]),
             h.make_node("If", ["cond"], ["r"], then_branch=then_g, else_branch=else_g), h.make_node("Add", ["r", "Wm"], ["y"])]
    return _model(nodes, [nh.from_array(np.ones(4, np.float32), "Wm"), nh.from_array(np.array(0, np.float32), "zero")],
                  [vi("x", T.FLOAT, [4])], [vi("y", T.FLOAT, [4])])


def test_subgraph_weights_count_in_inspect_and_in_the_report(tmp_path, capsys):
    assert onnxslim.inspect(_if_model())["params"] == 13  # 4 + 1 main, 4 then initializer, 4 else Constant
    path = _save(_if_model(), tmp_path / "if.onnx")
    assert main([str(path), str(tmp_path / "o.onnx"), "--json", "-q", "--no-validate"]) == 0
    pipeline = json.loads(capsys.readouterr().out)["pipeline"]
    assert pipeline["before"]["params"] == pipeline["after"]["params"] == 13  # lifting a Constant removes no weight


@pytest.mark.parametrize("attr, value, params, nbytes", [
    ("value_floats", [1.0, 2.0, 3.0], 3, 12), ("value_float", 1.5, 1, 4), ("value_ints", [1, 2], 2, 16),
    ("value_int", 3, 1, 8), ("value_strings", ["a", "bb"], 2, 3), ("value_string", "abc", 1, 3)])
def test_every_constant_form_counts(attr, value, params, nbytes):
    model = io.load(_model([h.make_node("Constant", [], ["y"], **{attr: value})], ins=[], outs=[vi("y", T.FLOAT, None)]))
    stats = graph_stats(model)
    assert (stats.params, stats.param_bytes) == (params, nbytes)


def test_constants_of_a_function_body_count():
    body = [h.make_node("Constant", [], ["two"], value=nh.from_array(np.full(3, 2, np.float32))),
            h.make_node("Mul", ["a", "two"], ["b"])]
    function = h.make_function("custom", "Scale", ["a"], ["b"], body, [h.make_opsetid("", 17)])
    model = _model([h.make_node("Scale", ["x"], ["y"], domain="custom")], opsets=(("", 17), ("custom", 1)))
    model.functions.append(function)
    assert graph_stats(io.load(model)).params == 3


# 7. save's own path errors


def test_save_names_a_missing_folder_or_a_folder_path(tmp_path):
    model = io.load(_model([h.make_node("Relu", ["x"], ["y"])]))
    with pytest.raises(OutputPathError, match=r"output folder does not exist"):
        onnxslim.save(model, tmp_path / "nope" / "o.onnx")
    with pytest.raises(OutputPathError, match=rf"^{tmp_path}: output path is a folder"):
        onnxslim.save(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_source_that_is_no_model_is_a_typed_error():
    import onnxslim
    from onnxslim.errors import ModelLoadError

    for source in (b"\x08\x07", None, 3):
        with pytest.raises(ModelLoadError, match="expected a path, an onnx.ModelProto or an onnx_ir.Model"):
            onnxslim.optimize(source)


def test_the_size_that_decides_external_data_counts_subgraph_weights():
    from onnxslim import io
    from tests.helpers import make_model

    model = make_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (bool c, float[4] x) => (float[4] y) {
            y = If (c) <then_branch = t () => (float[4] a) { a = Identity (x) },
                        else_branch = e () => (float[4] b) <float[4] w = {1.0, 2.0, 3.0, 4.0}> { b = Mul (x, w) }>
        }""")
    assert io.model_nbytes(model) == 16


def test_an_in_memory_model_with_an_external_constant_in_a_branch_runs(tmp_path):
    # ir.load leaves a branch's Constant in the data file; the validation's copies pointed it into
    # their temporary folder: ORT refused the model ("should be stored in /tmp/onnxslim-validate-...")
    import onnx_ir as ir

    import onnxslim

    branch = onnx.helper.make_graph(
        [onnx.helper.make_node("Constant", [], ["k"], value=onnx.numpy_helper.from_array(np.arange(64, dtype=np.float32), "kc")),
         onnx.helper.make_node("Add", ["x", "k"], ["b"])], "then", [], [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [64])])
    other = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["c"])], "else", [],
                                   [onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [64])])
    graph = onnx.helper.make_graph([onnx.helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)], "g",
                                   [onnx.helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []),
                                    onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [64])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0, convert_attribute=True)
    result = onnxslim.run(ir.load(str(tmp_path / "m.onnx")))
    assert result.passed and result.validation is not None and not result.validation.skipped
