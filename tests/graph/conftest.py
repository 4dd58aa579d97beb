"""Small ONNX models built with onnx.helper, and the path of a real trained model from PyPI."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

BIG_INT64 = 2**33  # outside the int32 range

SaveModel = Callable[[onnx.ModelProto, str], Path]


def make_mlp_model() -> onnx.ModelProto:
    """x[batch,4] -> MatMul -> Add -> Relu -> y[batch,3]; Reshape(y, [-1, 3]) -> y2; Shape(y) + big -> s2.

    Initializers: W (4x3 float), B (3 float), shape (INT64 [-1, 3]), big (INT64 [1, 2**33]).
    """
    inits = [
        numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "W"),
        numpy_helper.from_array(np.array([0.5, -0.5, 0.0], np.float32), "B"),
        numpy_helper.from_array(np.array([-1, 3], np.int64), "shape"),
        numpy_helper.from_array(np.array([1, BIG_INT64], np.int64), "big"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
        helper.make_node("Add", ["h", "B"], ["h2"], name="add"),
        helper.make_node("Relu", ["h2"], ["y"], name="relu"),
        helper.make_node("Reshape", ["y", "shape"], ["y2"], name="reshape"),
        helper.make_node("Shape", ["y"], ["s"], name="shape_of_y"),
        helper.make_node("Add", ["s", "big"], ["s2"], name="add_big"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("s2", TensorProto.INT64, [2]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="enginekit-tests")
    model.producer_version = "1.0"
    return model


def make_custom_domain_model() -> onnx.ModelProto:
    """Relu followed by a com.example::Normalize node (two opset imports)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Normalize", ["r"], ["y"], name="normalize", domain="com.example"),
    ]
    graph = helper.make_graph(
        nodes,
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def make_if_model() -> onnx.ModelProto:
    """If(cond) with a two-node then branch and a one-node else branch."""
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])
    then_graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(2, np.float32))),
            helper.make_node("Add", ["x", "c"], ["out"]),
        ],
        "then",
        [],
        [out],
    )
    else_graph = helper.make_graph([helper.make_node("Neg", ["x"], ["out"])], "else", [], [out])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)],
        "with_if",
        [
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def save_model(tmp_path: Path) -> SaveModel:
    """Save a model (inline weights) as tmp_path/<name> and return its path."""

    def save(model: onnx.ModelProto, name: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(model, str(path))
        return path

    return save


@pytest.fixture
def mlp_path(save_model: SaveModel) -> Path:
    return save_model(make_mlp_model(), "mlp.onnx")


@pytest.fixture
def external_mlp_path(tmp_path: Path) -> Path:
    """The MLP saved as model/mlp.onnx with every initializer in model/weights.bin."""
    path = tmp_path / "model" / "mlp.onnx"
    path.parent.mkdir()
    onnx.save_model(
        make_mlp_model(), str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    return path


@pytest.fixture
def rapidocr_cls_path() -> Path:
    """ch_ppocr_mobile_v2.0_cls_infer.onnx shipped by the rapidocr_onnxruntime wheel (not imported)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("rapidocr_onnxruntime is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture
def mlp_model() -> onnx.ModelProto:
    return make_mlp_model()


@pytest.fixture
def custom_domain_model() -> onnx.ModelProto:
    return make_custom_domain_model()


@pytest.fixture
def if_model() -> onnx.ModelProto:
    return make_if_model()
