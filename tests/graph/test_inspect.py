from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from enginekit.errors import ModelLoadError
from enginekit.graph.inspect import ModelInfo, inspect_model
from enginekit.tensors import TensorSpec

SaveModel = Callable[[onnx.ModelProto, str], Path]  # the save_model fixture
BIG_INT64 = 2**33  # the MLP's 'big' initializer holds this value

MLP_PARAMETERS = 4 * 3 + 3 + 2 + 2
MLP_BYTES = 4 * (4 * 3 + 3) + 8 * (2 + 2)


def test_mlp_model_facts(mlp_path: Path) -> None:
    info = inspect_model(mlp_path)
    assert info.path == str(mlp_path)
    assert info.file_size_bytes == mlp_path.stat().st_size
    assert info.ir_version == onnx.IR_VERSION
    assert (info.producer_name, info.producer_version) == ("enginekit-tests", "1.0")
    assert info.opset_imports == (("ai.onnx", 17),)
    assert info.max_opset == 17
    assert info.inputs == (TensorSpec("x", ("batch", 4), "float32"),)
    assert info.outputs == (
        TensorSpec("y", ("batch", 3), "float32"),
        TensorSpec("y2", ("batch", 3), "float32"),
        TensorSpec("s2", (2,), "int64"),
    )
    assert (info.node_count, info.subgraph_node_count) == (6, 0)
    assert info.op_counts == (("Add", 2), ("MatMul", 1), ("Relu", 1), ("Reshape", 1), ("Shape", 1))
    assert (info.initializer_count, info.constant_tensor_count) == (4, 0)
    assert info.parameter_count == MLP_PARAMETERS
    assert info.parameter_bytes == MLP_BYTES
    assert info.int64_initializers == 2
    assert info.int64_out_of_int32 == 1
    assert info.int64_out_of_int32_names == ("big",)
    assert info.custom_domains == ()
    assert info.external_data_files == ()
    assert info.external_data_bytes == 0


def test_to_dict_is_json_safe(mlp_path: Path) -> None:
    info = inspect_model(mlp_path)
    data = json.loads(json.dumps(info.to_dict()))
    assert data["opset_imports"] == {"ai.onnx": 17}
    assert list(data["op_counts"]) == ["Add", "MatMul", "Relu", "Reshape", "Shape"]
    assert data["inputs"] == [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}]
    assert data["int64_out_of_int32_names"] == ["big"]
    assert data["parameter_count"] == MLP_PARAMETERS
    assert {f for f in ModelInfo.__dataclass_fields__} == set(data)


def test_model_info_is_frozen(mlp_path: Path) -> None:
    info = inspect_model(mlp_path)
    with pytest.raises(AttributeError):
        info.node_count = 0  # type: ignore[misc]


def test_external_data_model(external_mlp_path: Path, mlp_path: Path) -> None:
    info = inspect_model(external_mlp_path)
    inline = inspect_model(mlp_path)
    assert info.external_data_files == ("weights.bin",)
    assert info.external_data_bytes == (external_mlp_path.parent / "weights.bin").stat().st_size
    assert info.parameter_count == inline.parameter_count == MLP_PARAMETERS
    assert info.parameter_bytes == inline.parameter_bytes
    # INT64 values are read from the external file to check their range.
    assert (info.int64_initializers, info.int64_out_of_int32) == (2, 1)
    assert info.int64_out_of_int32_names == ("big",)


def test_external_data_model_with_escaping_location(external_mlp_path: Path) -> None:
    model = onnx.load(str(external_mlp_path), load_external_data=False)
    for entry in model.graph.initializer[3].external_data:
        if entry.key == "location":
            entry.value = "../escape.bin"
    onnx.save_model(model, str(external_mlp_path))
    with pytest.raises(ModelLoadError, match=r"initializer 'big'.*\.\./escape\.bin"):
        inspect_model(external_mlp_path)


def test_custom_domain(save_model: SaveModel, custom_domain_model: onnx.ModelProto) -> None:
    info = inspect_model(save_model(custom_domain_model, "custom.onnx"))
    assert info.custom_domains == ("com.example",)
    assert info.op_counts == (("Relu", 1), ("com.example::Normalize", 1))
    assert dict(info.opset_imports) == {"ai.onnx": 17, "com.example": 1}
    assert info.max_opset == 17


def test_ml_domain_is_not_custom(save_model: SaveModel) -> None:
    graph = helper.make_graph(
        [helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", norm="L2")],
        "ml",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    info = inspect_model(save_model(helper.make_model(graph, opset_imports=opsets), "ml.onnx"))
    assert info.custom_domains == ()
    assert info.op_counts == (("ai.onnx.ml::Normalizer", 1),)


def test_subgraph_nodes_are_counted(save_model: SaveModel, if_model: onnx.ModelProto) -> None:
    info = inspect_model(save_model(if_model, "if.onnx"))
    assert (info.node_count, info.subgraph_node_count) == (1, 3)
    assert dict(info.op_counts) == {"If": 1, "Constant": 1, "Add": 1, "Neg": 1}
    assert (info.constant_tensor_count, info.parameter_count, info.parameter_bytes) == (1, 2, 8)


def test_int64_constant_nodes_are_checked(save_model: SaveModel) -> None:
    big = numpy_helper.from_array(np.array([0, -(2**40)], np.int64))  # unnamed, as exporters do
    small = numpy_helper.from_array(np.array([2**31 - 1, -(2**31)], np.int64))  # int32 limits
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["big_const"], value=big),
            helper.make_node("Constant", [], ["edge_const"], value=small),
            helper.make_node("Add", ["big_const", "edge_const"], ["y"]),
        ],
        "consts",
        [],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2])],
    )
    info = inspect_model(save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "c.onnx"))
    assert (info.int64_initializers, info.int64_out_of_int32) == (2, 1)
    assert info.int64_out_of_int32_names == ("big_const",)
    assert (info.initializer_count, info.constant_tensor_count) == (0, 2)


def test_out_of_range_names_are_capped_at_20(save_model: SaveModel) -> None:
    inits = [numpy_helper.from_array(np.array([BIG_INT64], np.int64), f"big{i:02d}") for i in range(25)]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "many",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        inits,
    )
    info = inspect_model(save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "m.onnx"))
    assert info.int64_out_of_int32 == 25
    assert info.int64_out_of_int32_names == tuple(f"big{i:02d}" for i in range(20))


def test_real_paddle_model(rapidocr_cls_path: Path) -> None:
    """Facts read from ch_ppocr_mobile_v2.0_cls_infer.onnx (rapidocr_onnxruntime wheel)."""
    info = inspect_model(rapidocr_cls_path)
    assert info.producer_name == "PaddlePaddle"
    assert info.ir_version == 7
    assert info.opset_imports == (("ai.onnx", 11),) and info.max_opset == 11
    # The file says [-1, 3, ?, ?] (Paddle writes dim_value -1 for the batch) and [-1, 2].
    (x,) = info.inputs
    assert (x.name, x.dtype, x.shape is not None and len(x.shape)) == ("x", "float32", 4)
    assert x.shape is not None and x.shape[1] == 3
    assert [axis for axis, _ in x.symbolic_dims()] in ([2, 3], [0, 2, 3])
    (y,) = info.outputs
    assert (y.name, y.dtype) == ("save_infer_model/scale_0.tmp_1", "float32")
    assert y.shape is not None and len(y.shape) == 2 and y.shape[1] == 2
    assert (info.node_count, info.subgraph_node_count) == (566, 0)
    ops = dict(info.op_counts)
    assert (ops["Constant"], ops["Conv"], ops["BatchNormalization"], ops["HardSigmoid"]) == (308, 53, 35, 9)
    assert info.op_counts[0] == ("Constant", 308)
    assert sum(ops.values()) == 566
    # Paddle stores every weight in Constant nodes: no initializers at all.
    assert (info.initializer_count, info.constant_tensor_count) == (0, 308)
    assert info.parameter_count == 133777
    assert (info.int64_initializers, info.int64_out_of_int32) == (22, 0)
    assert info.custom_domains == () and info.external_data_files == ()
    json.dumps(info.to_dict())


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        inspect_model(tmp_path / "missing.onnx")
