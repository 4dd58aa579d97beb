"""Each `prepare` pass on its own: small models built here and PaddleOCR's trained classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from enginekit.data import InputShape
from enginekit.errors import InvalidArgumentError, UnknownNameError
from enginekit.graph.passes import (
    PASSES,
    PassContext,
    PassError,
    check_fixed_shapes,
    convert_opset,
    fix_input_shapes,
    int64_to_int32,
    shape_inference,
    simplify,
    unique_dim_names,
)
from enginekit.settings import PrepareSettings

BIG = 2**40  # a Slice "to the end" bound that exporters write; outside int32


def ctx(**kwargs: object) -> PassContext:
    return PassContext(PrepareSettings(output=Path("unused.onnx"), **kwargs), Path("model.onnx"))  # type: ignore[arg-type]


def finish(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 by default
    return model


def i64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def make_int64_model(*, slice_end: int = 2) -> onnx.ModelProto:
    """x[2,6] -> Gather(axis 1, Constant idx) -> Reshape(shape) -> Slice(starts, ends, axes, steps) -> y.

    idx (a Constant node) feeds Gather's int32-or-int64 ``indices``; ``shape`` feeds Reshape's
    int64-only ``shape``; the four Slice tensors share Slice's ``Tind`` type.
    """
    nodes = [
        helper.make_node("Constant", [], ["idx"], value=numpy_helper.from_array(np.array([0, 2, 4], np.int64))),
        helper.make_node("Gather", ["x", "idx"], ["g"], axis=1, name="gather"),
        helper.make_node("Reshape", ["g", "shape"], ["r"], name="reshape"),
        helper.make_node("Slice", ["r", "starts", "ends", "axes", "steps"], ["y"], name="slice"),
    ]
    inits = [i64("shape", [3, 2]), i64("starts", [0]), i64("ends", [slice_end]), i64("axes", [0]), i64("steps", [1])]
    graph = helper.make_graph(
        nodes, "int64", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])], inits,
    )
    return finish(graph)


def make_batch_mlp(opset: int = 17) -> onnx.ModelProto:
    """x[batch,4] -> MatMul -> Add -> Relu -> y[batch,3], with value_info carrying the symbolic batch."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["y"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits,
        value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 3])],
    )
    return finish(graph, opset)


def run_ort(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feed)]


def dtype_of(model: onnx.ModelProto, name: str) -> int:
    for init in model.graph.initializer:
        if init.name == name:
            return int(init.data_type)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return int(node.attribute[0].t.data_type)
    raise KeyError(name)


def test_registry_names() -> None:
    assert set(PASSES) == {"fix-input-shapes", "opset", "unique-dim-names", "shape-inference", "simplify",
                           "int64-to-int32"}


# --- shape inference --------------------------------------------------------------------------


def test_shape_inference_fills_value_info() -> None:
    model = make_int64_model()
    out = shape_inference(model, ctx())
    assert out.details["strict"] is True
    assert out.details["value_info_before"] == 0 and out.details["value_info_after"] >= 3
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in out.model.graph.value_info}
    assert shapes["g"] == [2, 3] and shapes["r"] == [3, 2]
    # data propagation through the constant Slice bounds gives the output a static shape
    assert out.details["output_shapes_changed"] == {"y": "[n, 2] -> [2, 2]"}


def test_shape_inference_falls_back_to_lenient_and_says_so() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])], "stale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        value_info=[helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 4])],  # contradicts Relu's [2, 3]
    )
    out = shape_inference(finish(graph), ctx())
    assert out.details["strict"] is False
    assert "differ in dimension 1" in out.details["strict_error"]
    assert "lenient" in out.summary


def test_shape_inference_on_ocr_classifier(ocr_cls_model: Path) -> None:
    out = shape_inference(onnx.load(ocr_cls_model), ctx())
    assert out.details["strict"] is True
    assert out.details["value_info_after"] > 500


# --- simplify ---------------------------------------------------------------------------------


def test_simplify_folds_constant_subgraph() -> None:
    nodes = [
        helper.make_node("Constant", [], ["c1"], value=numpy_helper.from_array(np.full(3, 2.0, np.float32))),
        helper.make_node("Constant", [], ["c2"], value=numpy_helper.from_array(np.full(3, 0.5, np.float32))),
        helper.make_node("Mul", ["c1", "c2"], ["c3"]),
        helper.make_node("Add", ["x", "c3"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = finish(graph)
    out = simplify(onnx.ModelProto.FromString(model.SerializeToString()), ctx())
    assert [n.op_type for n in out.model.graph.node] == ["Add"]
    assert out.details["removed_ops"] == {"Constant": 2, "Mul": 1}
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(run_ort(out.model, {"x": x})[0], run_ort(model, {"x": x})[0])


def test_simplify_on_ocr_classifier(ocr_cls_model: Path) -> None:
    model = onnx.load(ocr_cls_model)
    out = simplify(onnx.ModelProto.FromString(model.SerializeToString()), ctx())
    assert len(out.model.graph.node) < len(model.graph.node) // 2
    assert out.details["removed_ops"]["BatchNormalization"] == 35  # folded into the Convs


# --- INT64 -> INT32 ---------------------------------------------------------------------------


def test_int64_converts_where_every_consumer_accepts_int32() -> None:
    model = make_int64_model()
    out = int64_to_int32(onnx.ModelProto.FromString(model.SerializeToString()), ctx())
    d = out.details
    assert d["int64_tensors"] == 6 and d["converted"] == 5
    for name in ("idx", "starts", "ends", "axes", "steps"):
        assert dtype_of(out.model, name) == TensorProto.INT32, name
    assert dtype_of(out.model, "shape") == TensorProto.INT64  # Reshape's shape is int64 by the spec
    assert d["kept_op_requires_int64"] == 1
    assert d["op_requires_int64_examples"] == ["shape: Reshape input 'shape' accepts only int64"]
    assert d["kept_out_of_range"] == []
    onnx.checker.check_model(out.model, full_check=True)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(run_ort(out.model, {"x": x})[0], run_ort(model, {"x": x})[0])


def test_int64_out_of_range_is_named_never_clamped() -> None:
    model = make_int64_model(slice_end=BIG)
    out = int64_to_int32(model, ctx())
    d = out.details
    assert d["kept_out_of_range"] == ["ends"]
    assert "ends" in out.summary
    ends = next(i for i in out.model.graph.initializer if i.name == "ends")
    assert ends.data_type == TensorProto.INT64 and numpy_helper.to_array(ends).tolist() == [BIG]
    # Slice's starts/axes/steps share the type of ends, which stays int64, so they stay too.
    for name in ("starts", "axes", "steps"):
        assert dtype_of(out.model, name) == TensorProto.INT64, name
    assert any("must have the type of input 'ends'" in e for e in d["op_requires_int64_examples"])
    assert dtype_of(out.model, "idx") == TensorProto.INT32 and d["converted"] == 1
    onnx.checker.check_model(out.model, full_check=True)


def test_int64_keeps_add_whose_output_type_would_change() -> None:
    # Add(ids, offset) with int64 ids: int32 offset would make the Add invalid (T is shared).
    graph = helper.make_graph(
        [helper.make_node("Add", ["ids", "offset"], ["y"])], "add",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [3])], [i64("offset", [5])],
    )
    out = int64_to_int32(finish(graph), ctx())
    assert out.details["converted"] == 0
    assert "stays int64" in out.details["op_requires_int64_examples"][0]


def test_int64_updates_value_info_of_converted_tensors() -> None:
    model = shape_inference(make_int64_model(), ctx()).model
    model.graph.value_info.append(helper.make_tensor_value_info("idx", TensorProto.INT64, [3]))
    out = int64_to_int32(model, ctx())
    vi = next(v for v in out.model.graph.value_info if v.name == "idx")
    assert vi.type.tensor_type.elem_type == TensorProto.INT32
    x = np.ones((2, 6), np.float32)
    assert run_ort(out.model, {"x": x})[0].shape == (2, 2)


def test_int64_on_ocr_classifier(ocr_cls_model: Path) -> None:
    out = int64_to_int32(onnx.load(ocr_cls_model), ctx())
    d = out.details
    # 22 INT64 Constants: 4 Slice bounds convert, 18 Reshape shapes must stay int64.
    assert (d["int64_tensors"], d["converted"], d["kept_op_requires_int64"]) == (22, 4, 18)
    onnx.checker.check_model(out.model)


# --- opset ------------------------------------------------------------------------------------


def test_opset_13_to_17() -> None:
    model = make_batch_mlp(opset=13)
    out = convert_opset(model, ctx(target_opset=17))
    assert [(o.domain, o.version) for o in out.model.opset_import] == [("", 17)]
    assert out.details["from_opset"] == 13 and out.details["to_opset"] == 17
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(run_ort(out.model, {"x": x})[0], run_ort(model, {"x": x})[0])


def test_opset_same_version_is_no_change() -> None:
    out = convert_opset(make_batch_mlp(), ctx(target_opset=17))
    assert out.summary == "already opset 17"


def test_opset_converter_refusal_is_a_pass_error() -> None:
    with pytest.raises(PassError, match="cannot convert opset 17 to 13: No Adapter From Version"):
        convert_opset(make_batch_mlp(), ctx(target_opset=13))


# --- fix input shapes -------------------------------------------------------------------------


def test_fix_input_shapes_makes_outputs_static() -> None:
    out = fix_input_shapes(make_batch_mlp(), ctx(fix_input_shapes=(InputShape("x", (2, 4)),)))
    dims = [d.dim_value for d in out.model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [2, 3]
    assert out.details["outputs"] == {"y": "[batch, 3] -> [2, 3]"}
    assert out.details["outputs_still_dynamic"] == []
    for vi in out.model.graph.value_info:  # no stale symbolic "batch" left anywhere
        assert all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim), vi
    assert run_ort(out.model, {"x": np.ones((2, 4), np.float32)})[0].shape == (2, 3)


def test_fix_input_shapes_on_ocr_detector(ocr_det_model: Path) -> None:
    out = fix_input_shapes(onnx.load(ocr_det_model), ctx(fix_input_shapes=(InputShape("x", (1, 3, 64, 64)),)))
    dims = [d.dim_value for d in out.model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 64, 64]  # through 6 Resize and 2 ConvTranspose nodes


@pytest.mark.parametrize(
    ("shape", "error", "needle"),
    [
        (InputShape("x", (2, 4, 1)), InvalidArgumentError, "rank 3 does not match"),
        (InputShape("x", (2, 5)), InvalidArgumentError, "axis 1 of input 'x' is fixed at 4"),
        (InputShape("xx", (2, 4)), UnknownNameError, "did you mean 'x'"),
        (InputShape("x", (2, 4), "int64"), InvalidArgumentError, "dtype int64 differs"),
    ],
)
def test_fix_input_shapes_user_errors(shape: InputShape, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        check_fixed_shapes(make_batch_mlp(), [shape])


# --- unique dim names -------------------------------------------------------------------------


def test_unique_dim_names_on_ocr_classifier(ocr_cls_model: Path) -> None:
    model = onnx.load(str(ocr_cls_model))
    out = unique_dim_names(model, ctx())
    assert out.summary == "renamed x dim 2 '?' -> 'x_dim2', x dim 3 '?' -> 'x_dim3'"
    assert [r["new"] for r in out.details["renamed"]] == ["x_dim2", "x_dim3"]
    shape = out.model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in shape][2:] == ["x_dim2", "x_dim3"]


def test_unique_dim_names_splits_author_names_only_when_the_feed_differs() -> None:
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"])]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", "n"]),
                                            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])])
    model = finish(graph)
    same = PassContext(ctx().settings, Path("model.onnx"), {"a": (3, 3), "b": (3, 2)})
    assert unique_dim_names(onnx.ModelProto.FromString(model.SerializeToString()), same).details["renamed"] == []
    differ = PassContext(ctx().settings, Path("model.onnx"), {"a": (4, 3), "b": (3, 2)})
    out = unique_dim_names(model, differ)
    assert [(r["input"], r["axis"], r["new"]) for r in out.details["renamed"]] == [
        ("a", 0, "a_dim0"), ("a", 1, "a_dim1"), ("b", 0, "b_dim0")]
    a = np.ones((4, 3), np.float32)
    b = np.ones((3, 2), np.float32)
    np.testing.assert_array_equal(run_ort(out.model, {"a": a, "b": b})[0], a @ b)
