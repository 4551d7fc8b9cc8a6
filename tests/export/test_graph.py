"""Generic ONNX helpers: loading, tensor and I/O info, node walks, manifest order, surgery, checks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import trt_test_models as tm  # noqa: E402

from edgehal.errors import EdgehalError  # noqa: E402
from edgehal.export.graph import (  # noqa: E402
    check_model,
    iter_nodes,
    load_onnx,
    manifest_order,
    prune_outputs,
    read_onnx_info,
    run_onnx,
    tensor_spec,
    to_fp16,
    topological_sort,
)
from edgehal.tensors import TensorSpec  # noqa: E402


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _two_branches():
    """x -> Relu -> a (through weight w1) and x -> Neg -> b (through weight w2)."""
    w1 = numpy_helper.from_array(np.ones((2,), np.float32), "w1")
    w2 = numpy_helper.from_array(np.full((2,), 2, np.float32), "w2")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Mul", ["r", "w1"], ["a"]),
             helper.make_node("Neg", ["x"], ["n"], name="neg"), helper.make_node("Mul", ["n", "w2"], ["b"])]
    return _model(nodes, [_vi("x", TensorProto.FLOAT, ["N", 2])],
                  [_vi("a", TensorProto.FLOAT, ["N", 2]), _vi("b", TensorProto.FLOAT, ["N", 2])], [w1, w2])


# -- loading and I/O --------------------------------------------------------------


def test_missing_or_corrupt_file_is_one_line(tmp_path):
    with pytest.raises(EdgehalError, match=r"nope.onnx \| file not found"):
        load_onnx(tmp_path / "nope.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(EdgehalError, match=r"bad.onnx \| is corrupt or not an ONNX file"):
        load_onnx(tmp_path / "bad.onnx")


def test_tensor_spec_keeps_dimension_names_and_types_numpy_lacks():
    t = tensor_spec(_vi("x", TensorProto.FLOAT, ["batch", 1, "rows", 28]))
    assert (t.name, t.dtype, t.shape) == ("x", "float32", (-1, 1, -1, 28))
    assert t.dim_names == ("batch", None, "rows", None)
    assert t.dynamic_axes == (0, 2) and t.dim_label(2) == "2 ('rows')" and t.dim_label(1) == "1"
    assert tensor_spec(_vi("s", TensorProto.STRING, [2])).dtype == "object"
    assert TensorSpec.from_dict(t.to_dict()) == TensorSpec("x", "float32", (-1, 1, -1, 28))
    fp8 = tensor_spec(_vi("q", TensorProto.FLOAT8E4M3FN, ["batch", 4]))
    assert (fp8.dtype, fp8.type.tensorrt, fp8.dynamic_axes) == ("FLOAT8E4M3FN", "FP8", (0,))


def test_a_value_that_is_no_tensor_is_one_clear_error():
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])
    with pytest.raises(EdgehalError, match=r"^m.onnx: tensor 's': ONNX element type 0 \| is not a tensor type"):
        tensor_spec(seq, what="m.onnx")


def test_io_info_of_an_edgehal_export(tmp_path):
    path = tm.export_cnn(tmp_path / "kept.onnx")
    info = read_onnx_info(path)
    assert [t.name for t in info.inputs] == ["input"]  # initializers are no inputs
    assert [(t.name, t.shape) for t in info.outputs] == [("digit", (-1, 10)), ("parity", (-1, 2))]
    assert info.manifest.head_names == ("digit", "parity") and info.metadata.aux == "keep"
    assert not info.has_qdq and len(info.sha256) == 64
    assert read_onnx_info(tm.quantize_qdq(path, tmp_path / "int8.onnx")).qdq_nodes > 0


def test_node_walk_enters_subgraphs():
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"], name="inner")], "then", [],
                             [_vi("t", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"], name="inner_else")], "else", [],
                              [_vi("e", TensorProto.FLOAT, [2])])
    model = _model([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="if")],
                   [_vi("c", TensorProto.BOOL, []), _vi("x", TensorProto.FLOAT, [2])], [_vi("y", TensorProto.FLOAT, [2])])
    names = [n.name for n in iter_nodes(model.graph)]
    assert names[0] == "if" and sorted(names[1:]) == ["inner", "inner_else"]


# -- manifest order -----------------------------------------------------------------


def test_outputs_are_put_in_manifest_order_with_the_rest_after():
    manifest = tm.manifest()  # heads digit, parity
    outs = [TensorSpec("extra", "float32", (1,)), TensorSpec("parity", "float32", (-1, 2)),
            TensorSpec("digit", "float32", (-1, 10))]
    assert [t.name for t in manifest_order(outs, manifest, what="m")] == ["digit", "parity", "extra"]
    assert manifest_order(outs, None, what="m") == tuple(outs)
    with pytest.raises(EdgehalError, match=r"^m \| head 'digit' of its manifest is not an output"):
        manifest_order(outs[:2], manifest, what="m")


# -- surgery ----------------------------------------------------------------------


def test_pruning_drops_what_only_the_other_outputs_needed():
    model = _two_branches()
    pruned = prune_outputs(model, ["a"])
    assert [o.name for o in pruned.graph.output] == ["a"]
    assert [n.name for n in pruned.graph.node if n.name] == ["relu"]
    assert [t.name for t in pruned.graph.initializer] == ["w1"]
    assert len(model.graph.node) == 4  # a copy: the original is untouched
    x = np.array([[1, -1], [2, -3]], np.float32)
    np.testing.assert_array_equal(run_onnx(pruned.SerializeToString(), {"x": x})["a"], np.maximum(x, 0))
    with pytest.raises(EdgehalError, match=r"output 'nothing' \| is not an output of the graph"):
        prune_outputs(model, ["nothing"])


def test_pruning_keeps_what_a_subgraph_reads_from_outside():
    w = numpy_helper.from_array(np.ones((2,), np.float32), "w")
    then = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["t"])], "then", [],
                             [_vi("t", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vi("e", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other),
             helper.make_node("Relu", ["x"], ["z"])]
    model = _model(nodes, [_vi("c", TensorProto.BOOL, []), _vi("x", TensorProto.FLOAT, [2])],
                   [_vi("y", TensorProto.FLOAT, [2]), _vi("z", TensorProto.FLOAT, [2])], [w])
    pruned = prune_outputs(model, ["y"])
    assert [n.op_type for n in pruned.graph.node] == ["If"] and [t.name for t in pruned.graph.initializer] == ["w"]


def test_topological_sort_puts_producers_first_and_refuses_a_cycle():
    model = _two_branches()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend([nodes[3], nodes[1], nodes[2], nodes[0]])  # consumers before producers
    order = [n.output[0] for n in topological_sort(model).graph.node]
    assert order.index("r") < order.index("a") and order.index("n") < order.index("b")
    check_model(model, what="sorted")
    loop = _model([helper.make_node("Relu", ["q"], ["p"]), helper.make_node("Relu", ["p"], ["q"])],
                  [], [_vi("p", TensorProto.FLOAT, [1])])
    with pytest.raises(EdgehalError, match="has a cycle"):
        topological_sort(loop)


def test_fp16_conversion_keeps_fp32_inputs_and_outputs():
    half = to_fp16(_two_branches())
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert all(t.data_type == TensorProto.FLOAT16 for t in half.graph.initializer)
    x = np.array([[1.5, -2.25]], np.float32)
    got = run_onnx(check_model(half, what="fp16").SerializeToString(), {"x": x})
    np.testing.assert_array_equal(got["a"], [[1.5, 0]])
    np.testing.assert_array_equal(got["b"], [[-3, 4.5]])


# -- checks -----------------------------------------------------------------------


def test_the_checker_failure_is_one_line():
    bad = _model([helper.make_node("Relu", ["missing"], ["y"])], [], [_vi("y", TensorProto.FLOAT, [1])])
    with pytest.raises(EdgehalError, match=r"^broken \| fails the ONNX checker \(") as err:
        check_model(bad, what="broken")
    assert "\n" not in str(err.value)


def test_run_onnx_returns_the_requested_outputs():
    x = np.array([[1, -1]], np.float32)
    got = run_onnx(_two_branches().SerializeToString(), {"x": x}, outputs=["b"])
    assert list(got) == ["b"]
    np.testing.assert_array_equal(got["b"], [[-2, 2]])
