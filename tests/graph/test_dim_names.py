"""Input dim names TensorRT would tie together, and renaming them apart (graph/dim_names.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from enginekit.errors import InvalidArgumentError, UnknownNameError
from enginekit.graph.dim_names import apply_renames, check_shapes, plan_renames, shared_dim_names


def dims(vi: onnx.ValueInfoProto) -> list[object]:
    return [d.dim_param if d.WhichOneof("value") == "dim_param" else d.dim_value for d in
            vi.type.tensor_type.shape.dim]


def two_inputs(x_shape: list[object], y_shape: list[object], out: list[object]) -> onnx.ModelProto:
    """z = x + y (broadcast), with the given dim names."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "add",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, out)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_paddleocr_classifier_question_marks_are_renamed(ocr_cls_model: Path) -> None:
    model = onnx.load(str(ocr_cls_model))
    assert dims(model.graph.input[0]) == [-1, 3, "?", "?"]  # the exporter's placeholders
    (shared,) = shared_dim_names(model, {"x": [(1, 3, 48, 192), (8, 3, 48, 192)]})
    assert shared.placeholder and shared.differ and shared.one_tensor
    assert shared.describe() == "x dim 2 (48) and x dim 3 (192) share the dim name '?'"
    renames = plan_renames(model)  # placeholders: renamed even without shapes
    assert [(r.tensor, r.axis, r.old, r.new, r.why) for r in renames] == [
        ("x", 2, "?", "x_dim2", "placeholder"), ("x", 3, "?", "x_dim3", "placeholder")]
    apply_renames(model, renames)
    assert dims(model.graph.input[0]) == [-1, 3, "x_dim2", "x_dim3"]  # the -1 (unnamed, never tied) untouched
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 48, 192)).astype(np.float32)
    before = ort.InferenceSession(str(ocr_cls_model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)


def test_author_names_kept_unless_the_shapes_differ() -> None:
    model = two_inputs(["batch", 4], ["batch", 4], ["batch", 4])
    assert plan_renames(model) == []
    assert plan_renames(model, {"x": [(1, 4), (8, 4)], "y": [(1, 4), (8, 4)]}) == []
    (shared,) = shared_dim_names(model, {"x": [(1, 4), (8, 4)], "y": [(1, 4), (4, 4)]})
    assert shared.differ and not shared.placeholder and not shared.one_tensor
    renames = plan_renames(model, {"x": [(1, 4), (8, 4)], "y": [(1, 4), (4, 4)]})
    assert [(r.tensor, r.new, r.why) for r in renames] == [("x", "x_dim0", "sizes differ"),
                                                           ("y", "y_dim0", "sizes differ")]
    assert apply_renames(model, renames) == 1  # the output's 'batch' is no longer tied to either
    assert dims(model.graph.input[0])[0] == "x_dim0" and dims(model.graph.input[1])[0] == "y_dim0"
    assert dims(model.graph.output[0]) == ["z_dim0", 4]


def test_single_placeholder_and_unnamed_dims_are_left_alone() -> None:
    model = two_inputs(["?", 4], [None, 4], [None, 4])
    assert shared_dim_names(model) == [] and plan_renames(model) == []


def test_new_names_never_collide_with_existing_ones() -> None:
    model = two_inputs(["?", "?"], ["x_dim0", 1], ["x_dim0", "?"])
    renames = plan_renames(model)
    assert [r.new for r in renames] == ["x_dim0_2", "x_dim1"]
    apply_renames(model, renames)
    assert dims(model.graph.output[0]) == ["x_dim0", "z_dim1"]


def test_check_shapes_names_and_ranks() -> None:
    model = two_inputs(["?", 4], ["?", 4], ["?", 4])
    check_shapes(model, {"x": [(1, 4)]})
    with pytest.raises(UnknownNameError, match=r"'xx'.*did you mean 'x'"):
        check_shapes(model, {"xx": [(1, 4)]})
    with pytest.raises(InvalidArgumentError, match=r"rank 3.*rank 2"):
        check_shapes(model, {"y": [(1, 4, 1)]})
