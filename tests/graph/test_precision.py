"""FP16 / BF16 conversion with FP32 islands, on the digits CNN, PaddleOCR's classifier and small graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from enginekit.errors import InvalidArgumentError, UnknownNameError
from enginekit.examples import digits
from enginekit.graph.precision import (
    PlanEntry,
    PrecisionPlan,
    check_plan_nodes,
    convert_precision,
    load_plan,
    round_to_bf16_bits,
    save_plan,
)

FIRST_CONV = "/features/features.0/Conv"
MIDDLE_CONV = "/features/features.2/Conv"
FLOAT, FLOAT16, BFLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16


def network_layer_types(onnx_bytes: bytes) -> dict[str, list[str]]:
    """Parse with TensorRT-RTX (strongly typed) and return each layer's output DataType names."""
    trt = pytest.importorskip("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(onnx_bytes)
    errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
    assert ok and not errors, errors
    types: dict[str, list[str]] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        types[layer.name] = [layer.get_output(j).dtype.name for j in range(layer.num_outputs)]
    return types


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, feed)]


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.value_info, *g.input, *g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    found: onnx.NodeProto = next(n for n in model.graph.node if n.name == name)
    return found


def producer(model: onnx.ModelProto, value: str) -> onnx.NodeProto:
    found: onnx.NodeProto = next(n for n in model.graph.node if value in n.output)
    return found


def consumers(model: onnx.ModelProto, value: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if value in n.input]


def plan(precision: str, *nodes: str) -> PrecisionPlan:
    return PrecisionPlan(precision, tuple(PlanEntry(n, reason="test") for n in nodes))


@pytest.fixture(scope="module")
def digits_model() -> onnx.ModelProto:
    return onnx.load(str(digits.onnx_path()))


@pytest.fixture(scope="module")
def digits_data() -> tuple[np.ndarray, np.ndarray]:
    return digits.load_test_split()


# --- plan.json ---------------------------------------------------------------------------------


def test_plan_round_trip(tmp_path: Path) -> None:
    original = PrecisionPlan("fp16", (PlanEntry(FIRST_CONV, "overflow", {"max_abs": 7.1e4, "nan": float("nan")}),
                                      PlanEntry(MIDDLE_CONV)), source="enginekit debug precision")
    path = save_plan(original, tmp_path / "plans" / "plan.json")
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["precision"] == "fp16" and data["source"] == "enginekit debug precision"
    assert data["keep_fp32"][0] == {"node": FIRST_CONV, "reason": "overflow",
                                    "evidence": {"max_abs": 7.1e4, "nan": "nan"}}
    loaded = load_plan(path)
    assert loaded.node_names() == [FIRST_CONV, MIDDLE_CONV]
    assert loaded.keep_fp32[0].evidence["max_abs"] == 7.1e4 and loaded.keep_fp32[1].reason == ""
    assert not list(tmp_path.glob("plans/.*.tmp"))  # atomic write left no temp file


@pytest.mark.parametrize(("text", "message"), [
    ('{"precision": "fp16", "keep_fp32": [', "not valid JSON"),
    ('["fp16"]', "expected a JSON object"),
    ('{"precision": "fp8"}', "'fp8' is not one of fp16, bf16"),
    ('{"precision": "fp16", "keep_fp32": [{"reason": "x"}]}', "keep_fp32[0].node must be a non-empty string"),
    ('{"precision": "fp16", "keep_fp32": {"a": 1}}', "'keep_fp32' must be a list"),
    ('{"precision": "fp16", "version": 2}', "version 2 is not supported"),
    ('{"precision": "fp16", "keep": []}', "unknown field(s) 'keep'"),
])
def test_malformed_plan_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(InvalidArgumentError) as info:
        load_plan(path)
    assert message in str(info.value)


def test_missing_plan_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        load_plan(tmp_path / "nope.json")


def test_unknown_plan_node_suggests_the_closest(digits_model: onnx.ModelProto) -> None:
    with pytest.raises(UnknownNameError) as info:
        check_plan_nodes(plan("fp16", "/features/features.0/Cnv"), digits_model)
    assert "did you mean '/features/features.0/Conv'" in str(info.value)
    with pytest.raises(UnknownNameError):
        convert_precision(digits_model, "fp16", plan("fp16", "nope"))


def test_plan_for_another_precision_and_unknown_precision(digits_model: onnx.ModelProto) -> None:
    with pytest.raises(InvalidArgumentError, match="plan is for bf16"):
        convert_precision(digits_model, "fp16", plan("bf16"))
    with pytest.raises(InvalidArgumentError, match="did you mean 'fp16'"):
        convert_precision(digits_model, "fp61")


# --- FP16 --------------------------------------------------------------------------------------


def test_fp16_digits_matches_fp32(digits_model: onnx.ModelProto, digits_data: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = digits_data
    result = convert_precision(digits_model, "fp16")
    model = result.model
    onnx.checker.check_model(model, full_check=True)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [FLOAT]
    assert {t.data_type for t in model.graph.initializer} == {FLOAT16}
    assert result.nodes_converted == 10 and result.casts_inserted == 2 and not result.auto_kept
    assert digits_model.graph.initializer[0].data_type == FLOAT  # the input model is untouched
    (ref,), (out,) = run(digits_model, {"x": x}), run(model, {"x": x})
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() < 1e-2  # observed 0.0066
    assert np.array_equal(out.argmax(1), ref.argmax(1))
    assert (out.argmax(1) == labels).mean() == (ref.argmax(1) == labels).mean()  # 355 / 360


def test_fp16_first_conv_island(digits_model: onnx.ModelProto, digits_data: tuple[np.ndarray, np.ndarray]) -> None:
    result = convert_precision(digits_model, "fp16", plan("fp16", FIRST_CONV))
    model = result.model
    onnx.checker.check_model(model, full_check=True)
    assert result.kept_fp32 == [FIRST_CONV]
    types = value_types(model)
    conv = node(model, FIRST_CONV)
    assert [types[i] for i in conv.input] == [FLOAT, FLOAT, FLOAT]  # x and its own weights stay float32
    assert types[conv.output[0]] == FLOAT
    (after,) = consumers(model, conv.output[0])
    assert after.op_type == "Cast" and after.attribute[0].i == FLOAT16
    assert types["features.2.weight"] == FLOAT16
    (out,), (ref,) = run(model, {"x": digits_data[0]}), run(digits_model, {"x": digits_data[0]})
    assert np.abs(out - ref).max() < 1e-2


def test_fp16_middle_island_is_surrounded_by_casts(digits_model: onnx.ModelProto) -> None:
    result = convert_precision(digits_model, "fp16", plan("fp16", MIDDLE_CONV))
    model = result.model
    conv = node(model, MIDDLE_CONV)
    before = producer(model, conv.input[0])
    (after,) = consumers(model, conv.output[0])
    assert before.op_type == "Cast" and before.attribute[0].i == FLOAT
    assert after.op_type == "Cast" and after.attribute[0].i == FLOAT16
    assert producer(model, before.input[0]).name == "/features/features.1/Relu"
    assert result.casts_inserted == 4  # input, both island edges, output
    onnx.checker.check_model(model, full_check=True)


def test_fp16_ocr_classifier(ocr_cls_model: Path) -> None:
    original = onnx.load(str(ocr_cls_model))
    result = convert_precision(original, "fp16")
    assert result.nodes_converted > 200 and result.casts_inserted == 2 and not result.auto_kept
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 48, 192)).astype(np.float32)
    (ref,), (out,) = run(original, {"x": x}), run(result.model, {"x": x})
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() < 5e-3  # softmax probabilities; observed 0.0015
    assert np.array_equal(out.argmax(1), ref.argmax(1))


def test_fp16_keeps_readers_of_values_beyond_65504_in_fp32_and_names_them() -> None:
    big = numpy_helper.from_array(np.array([7e4, -1e6, 1.0, 1e-9], np.float32), "big")
    small = numpy_helper.from_array(np.array([0.5, 2.0, 1.0, 1e-9], np.float32), "small")
    nodes = [helper.make_node("Mul", ["x", "big"], ["m"], name="mul"), helper.make_node("Add", ["m", "small"], ["y"])]
    model = _model(nodes, [big, small])
    result = convert_precision(model, "fp16")
    assert result.clipped_initializers == []  # nothing clipped: the Mul reading 'big' stays FP32 instead
    assert [(k.node, k.tensor, k.max_abs, k.kind) for k in result.range_kept] == [("mul", "big", 1e6, "overflow")]
    assert ("mul", result.range_kept[0].reason) in result.auto_kept and "1e+06" in result.range_kept[0].reason
    inits = {t.name: t for t in result.model.graph.initializer}
    assert inits["big"].data_type == FLOAT and numpy_helper.to_array(inits["big"])[1] == -1e6
    assert result.tiny_initializers == ["small"]  # 1e-9 would round to 0 in fp16: kept at the smallest subnormal
    values = numpy_helper.to_array(inits["small"])
    assert values.dtype == np.float16 and values[3] > 0
    assert result.to_dict()["range_kept"][0]["tensor"] == "big"
    assert any("'mul'" in line and "'big'" in line for line in result.warnings())
    onnx.checker.check_model(result.model, full_check=True)


# --- graphs that break onnxconverter-common ----------------------------------------------------


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], outputs: tuple[str, ...] = ("y",),
           shape: list[int] | None = None) -> onnx.ModelProto:
    shape = shape or [2, 4]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", FLOAT, shape)],
                              [helper.make_tensor_value_info(o, FLOAT, shape) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _check_runs(model: onnx.ModelProto, result_model: onnx.ModelProto, atol: float = 1e-2) -> None:
    onnx.checker.check_model(result_model, full_check=True)
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    for ref, out in zip(run(model, {"x": x}), run(result_model, {"x": x}), strict=True):
        assert out.dtype == ref.dtype
        np.testing.assert_allclose(out, ref, atol=atol)


def test_initializer_shared_by_island_and_converted_node() -> None:
    w = numpy_helper.from_array(np.full((4, 4), 0.5, np.float32), "w")
    model = _model([helper.make_node("MatMul", ["x", "w"], ["a"], name="mm1"),
                    helper.make_node("MatMul", ["a", "w"], ["y"], name="mm2")], [w])
    result = convert_precision(model, "fp16", plan("fp16", "mm1"))
    inits = {t.name: t.data_type for t in result.model.graph.initializer}
    assert inits == {"w": FLOAT, "w_fp16": FLOAT16}  # the island keeps float32, mm2 reads a converted copy
    _check_runs(model, result.model)


def test_unnamed_nodes_and_consumed_graph_output() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["b"]),
             helper.make_node("Add", ["y", "b"], ["z"])]
    model = _model(nodes, [], outputs=("y", "z"))
    result = convert_precision(model, "fp16")
    assert result.nodes_converted == 3
    _check_runs(model, result.model)


def test_ops_without_low_precision_stay_fp32_automatically() -> None:
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("s", 0), ("l", 4), ("d", 1))]
    nodes = [helper.make_node("Range", ["s", "l", "d"], ["r"], name="range"),
             helper.make_node("Celu", ["x"], ["c"], name="celu"),
             helper.make_node("Add", ["c", "r"], ["y"], name="add")]
    model = _model(nodes, inits)
    result = convert_precision(model, "fp16")
    kept = dict(result.auto_kept)
    assert set(kept) == {"range", "celu"}
    assert "does not allow tensor(float16) at opset 17" in kept["range"]
    assert {t.name for t in result.model.graph.initializer if t.data_type == FLOAT} == {"s", "l", "d"}
    _check_runs(model, result.model)


def test_integer_derived_shape_arithmetic_stays_exact() -> None:
    """Shape -> Cast(float) -> Add -> Cast(int64): 3001 is not representable in fp16 and must survive."""
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Cast", ["s"], ["sf"], name="to_float", to=FLOAT),
             helper.make_node("Add", ["sf", "one"], ["sf1"], name="plus_one"),
             helper.make_node("Cast", ["sf1"], ["n"], name="to_int", to=TensorProto.INT64),
             helper.make_node("Relu", ["x"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", FLOAT, [1, 3000])],
                              [helper.make_tensor_value_info("y", FLOAT, [1, 3000]),
                               helper.make_tensor_value_info("n", TensorProto.INT64, [2])], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    result = convert_precision(model, "fp16")
    assert {n for n, _ in result.auto_kept} == {"to_float", "plus_one"}
    x = np.ones((1, 3000), np.float32)
    assert run(result.model, {"x": x})[1].tolist() == [2, 3001]


def test_subgraph_node_and_outer_values_stay_fp32() -> None:
    out = helper.make_tensor_value_info("o", FLOAT, [2, 4])
    then_graph = helper.make_graph([helper.make_node("Neg", ["a"], ["o"])], "then", [], [out])
    else_graph = helper.make_graph([helper.make_node("Identity", ["a"], ["o"])], "else", [], [out])
    zero = numpy_helper.from_array(np.array(0, np.float32), "zero")
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("ReduceSum", ["a"], ["sum"], name="sum", keepdims=0),
             helper.make_node("Greater", ["sum", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_graph, else_branch=else_graph)]
    model = _model(nodes, [zero])
    result = convert_precision(model, "fp16")
    assert [n for n, _ in result.auto_kept] == ["if"]
    assert value_types(result.model)["a"] == FLOAT  # read inside the branches: kept float32 under its name
    _check_runs(model, result.model)


def test_keep_io_types_false_uses_fp16_at_the_interface() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [])
    result = convert_precision(model, "fp16", keep_io_types=False)
    assert result.casts_inserted == 0
    assert result.model.graph.input[0].type.tensor_type.elem_type == FLOAT16
    assert result.model.graph.output[0].type.tensor_type.elem_type == FLOAT16
    x = np.array([[-1, 2, -3, 4]] * 2, np.float16)
    assert run(result.model, {"x": x})[0].tolist() == [[0, 2, 0, 4]] * 2


# --- BF16 --------------------------------------------------------------------------------------


def test_bf16_rounds_to_nearest_even() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(10000).astype(np.float32) * 100,
                             np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3.4e38, np.inf, -np.inf, 0.0, -0.0],
                                      np.float32)])
    expected = values.astype(ml_dtypes.bfloat16).view(np.uint16)
    assert np.array_equal(round_to_bf16_bits(values), expected)
    assert round_to_bf16_bits(np.array([np.nan], np.float32))[0] & 0x7FC0 == 0x7FC0  # a quiet NaN


def test_bf16_at_opset_17_keeps_ops_without_bf16(digits_model: onnx.ModelProto) -> None:
    result = convert_precision(digits_model, "bf16")
    kept = dict(result.auto_kept)
    assert set(kept) == {FIRST_CONV, MIDDLE_CONV, "/features/features.5/Conv", "/features/features.4/MaxPool",
                         "/features/features.7/GlobalAveragePool"}
    assert "from opset 22" in kept[FIRST_CONV]
    onnx.checker.check_model(result.model, full_check=True)
    types = network_layer_types(result.model.SerializeToString())
    assert types[FIRST_CONV] == ["FLOAT"] and types["/features/features.1/Relu"] == ["BF16"]


def test_bf16_digits_opset22_islands_in_tensorrt(digits_model: onnx.ModelProto,
                                                 digits_data: tuple[np.ndarray, np.ndarray]) -> None:
    model22 = onnx.version_converter.convert_version(digits_model, 22)
    result = convert_precision(model22, "bf16", plan("bf16", FIRST_CONV))
    model = result.model
    onnx.checker.check_model(model, full_check=True)
    assert not result.auto_kept and result.kept_fp32 == [FIRST_CONV]
    inits = {t.name: t.data_type for t in model.graph.initializer}
    assert inits.pop("features.0.weight") == FLOAT and inits.pop("features.0.bias") == FLOAT
    assert set(inits.values()) == {BFLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == FLOAT

    types = network_layer_types(model.SerializeToString())
    assert types[FIRST_CONV] == ["FLOAT"]
    for name in (MIDDLE_CONV, "/features/features.1/Relu", "/features/features.4/MaxPool",
                 "/features/features.5/Conv", "/features/features.7/GlobalAveragePool", "/classifier/Gemm"):
        assert types[name] == ["BF16"], name
    assert types["Cast_fp32:logits"] == ["FLOAT"]

    # ORT's CPU provider has no bf16 kernels; onnx's reference evaluator runs the model with real bf16 tensors.
    from onnx.reference import ReferenceEvaluator

    x, labels = digits_data
    out = np.asarray(list(ReferenceEvaluator(model).run(None, {"x": x}))[0])
    (ref,) = run(digits_model, {"x": x})
    assert np.abs(out - ref).max() < 0.5  # bf16 keeps ~3 significant digits; observed 0.17 on logits up to ~20
    assert abs((out.argmax(1) == labels).mean() - (ref.argmax(1) == labels).mean()) <= 1 / 360
