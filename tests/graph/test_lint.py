"""`lint_model`: static checks against the TensorRT support table, and the real tensorrt_rtx parser."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from enginekit.errors import InvalidArgumentError, ModelLoadError, UnknownNameError
from enginekit.graph.lint import Finding, LintResult, lint_model
from enginekit.graph.support import (
    load_table,
    parse_target,
    table_key,
    version_support,
)
from enginekit.settings import LintSettings

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt_rtx is not installed")
vi = helper.make_tensor_value_info

Save = Callable[..., Path]


@pytest.fixture
def save(tmp_path: Path) -> Save:
    """``save(name, nodes, inputs, outputs, opset=17, inits=(), extra_opsets=())`` -> path of the saved model."""

    def write(name: str, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
              outputs: list[onnx.ValueInfoProto], *, opset: int = 17, inits: tuple[onnx.TensorProto, ...] = (),
              extra_opsets: tuple[tuple[str, int], ...] = (), functions: tuple[onnx.FunctionProto, ...] = ()) -> Path:
        graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
        opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
        model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
        model.ir_version = 8 if opset <= 17 else 10
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
        return path

    return write


def run(path: Path, target: str = "tensorrt", version: str | None = None, parse: bool = True) -> LintResult:
    return lint_model(path, LintSettings(target=target, target_version=version, parse=parse))


def codes(result: LintResult, severity: str | None = None) -> list[str]:
    return [f.code for f in result.findings if severity is None or f.severity == severity]


def find(result: LintResult, code: str) -> list[Finding]:
    return [f for f in result.findings if f.code == code]


@pytest.fixture
def layernorm(save: Save) -> Path:
    scale = numpy_helper.from_array(np.ones(8, np.float32), "scale")
    bias = numpy_helper.from_array(np.zeros(8, np.float32), "bias")
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], name="ln", axis=-1)
    return save("layernorm", [node], [vi("x", TensorProto.FLOAT, ["batch", 8])],
                [vi("y", TensorProto.FLOAT, ["batch", 8])], inits=(scale, bias))


def test_layernorm_opset17_is_an_error_for_trt85_with_fix(layernorm: Path) -> None:
    res = run(layernorm, version="8.5", parse=False)
    (f,) = find(res, "EK-TRT-UNSUPPORTED-OP")
    assert f.severity == "error" and f.nodes == ("ln",)
    assert "LayerNormalization" in f.message and "8.5" in f.message
    assert "opset <= 16" in f.fix and "tensorrt==8.5" in f.fix
    assert not res.ok and res.findings[0].severity == "error"


def test_layernorm_is_fine_for_trt86_and_10(layernorm: Path) -> None:
    for version in ("8.6", "10", "10.3", "11"):
        res = run(layernorm, version=version, parse=False)
        assert codes(res, "error") == [], (version, res.findings)


@needs_rtx
def test_layernorm_parses_with_tensorrt_rtx(layernorm: Path) -> None:
    res = run(layernorm, target="tensorrt-rtx")
    assert res.parse is not None and res.parse.ok and res.parse.library == "tensorrt_rtx"
    assert res.parse.num_layers > 0
    assert res.ok and "EK-TRT-PARSER" not in codes(res)


@needs_rtx
def test_parser_of_another_version_reports_warnings_not_errors(layernorm: Path) -> None:
    res = run(layernorm, version="8.5")
    assert res.parse is not None and res.parse.ok
    assert "not the targeted tensorrt==8.5" in res.parse_note


@needs_rtx
def test_string_normalizer_is_unsupported_and_the_real_parser_names_the_node(save: Save) -> None:
    node = helper.make_node("StringNormalizer", ["x"], ["y"], name="strnorm", case_change_action="LOWER")
    path = save("strnorm", [node], [vi("x", TensorProto.STRING, [4])], [vi("y", TensorProto.STRING, [4])])
    res = run(path)
    (static,) = find(res, "EK-TRT-UNSUPPORTED-OP")
    assert static.severity == "error" and static.nodes == ("strnorm",)
    (dtype,) = find(res, "EK-TRT-DTYPE")
    assert dtype.severity == "error" and "string" in dtype.message
    parser = find(res, "EK-TRT-PARSER")
    assert any(f.nodes == ("strnorm",) and "StringNormalizer" in f.message and f.severity == "error" for f in parser)
    assert res.parse is not None and not res.parse.ok
    assert any(e.node_name == "strnorm" and e.node_operator == "StringNormalizer" for e in res.parse.errors)


@needs_rtx
def test_custom_domain_op_needs_a_plugin(save: Save) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Normalize", ["r"], ["y"], name="normalize", domain="com.example")]
    path = save("custom", nodes, [vi("x", TensorProto.FLOAT, [1, 8])], [vi("y", TensorProto.FLOAT, [1, 8])],
                extra_opsets=(("com.example", 1),))
    res = run(path)
    (f,) = find(res, "EK-TRT-CUSTOM-OP")
    assert f.severity == "error" and f.nodes == ("normalize",) and "plugin" in f.fix
    (p,) = find(res, "EK-TRT-PARSER")
    assert p.nodes == ("normalize",) and "Plugin not found" in p.message


def test_custom_domain_is_a_warning_for_ort_except_contrib_ops(save: Save) -> None:
    nodes = [helper.make_node("Normalize", ["x"], ["r"], name="normalize", domain="com.example"),
             helper.make_node("Gelu", ["r"], ["y"], name="gelu", domain="com.microsoft")]
    path = save("custom2", nodes, [vi("x", TensorProto.FLOAT, [1, 8])], [vi("y", TensorProto.FLOAT, [1, 8])],
                extra_opsets=(("com.example", 1), ("com.microsoft", 1)))
    res = run(path, target="ort")
    (f,) = find(res, "EK-CUSTOM-OP")
    assert f.severity == "warning" and f.nodes == ("normalize",)
    assert res.ok and res.parse is None and res.table_version is None


@pytest.fixture
def big_int64(save: Save) -> Path:
    c = numpy_helper.from_array(np.array([1, 2**33], np.int64), "big_const")
    node = helper.make_node("Add", ["x", "big_const"], ["y"], name="add")
    return save("big64", [node], [vi("x", TensorProto.INT64, [2])], [vi("y", TensorProto.INT64, [2])], inits=(c,))


def test_int64_out_of_int32_is_named_for_trt85(big_int64: Path) -> None:
    res = run(big_int64, version="8.5", parse=False)
    (rng,) = find(res, "EK-TRT-INT64-RANGE")
    assert rng.severity == "warning" and rng.tensors == ("big_const",)
    assert "enginekit prepare" in rng.fix
    (info,) = find(res, "EK-TRT-INT64")
    assert info.severity == "info" and "casts INT64" in info.message and {"x", "y"} <= set(info.tensors)


def test_int64_is_native_for_trt10(big_int64: Path) -> None:
    res = run(big_int64, version="10", parse=False)
    assert not find(res, "EK-TRT-INT64-RANGE")
    (info,) = find(res, "EK-TRT-INT64")
    assert "native" in info.message and "big_const" in info.tensors


def test_symbolic_dims_are_listed_with_a_profile_fix(save: Save) -> None:
    nodes = [helper.make_node("Mul", ["ids", "mask"], ["m"], name="mul")]
    inputs = [vi("ids", TensorProto.INT32, ["batch", "seq"]), vi("mask", TensorProto.INT32, ["batch", 16])]
    path = save("dyn", nodes, inputs, [vi("m", TensorProto.INT32, ["batch", "seq"])])
    (f,) = find(run(path, parse=False), "EK-TRT-DYNAMIC-SHAPE")
    assert f.severity == "warning" and f.tensors == ("ids", "mask")
    assert "ids [batch, seq] (dynamic axes 0, 1)" in f.message and "mask [batch, 16] (dynamic axes 0)" in f.message
    assert "--minShapes=ids:?x?,mask:?x16" in f.fix and "--profile" in f.fix and "(coming)" not in f.fix
    assert find(run(path, parse=False), "EK-TRT-DIM-NAMES") == []  # 'batch' on two inputs: the author's choice


def test_shared_placeholder_dims_warn_without_a_profile_and_fail_with_one(ocr_cls_model: Path) -> None:
    (warn,) = find(run(ocr_cls_model, target="tensorrt-rtx", parse=False), "EK-TRT-DIM-NAMES")
    assert warn.severity == "warning" and warn.tensors == ("x",)
    assert "x dim 2 and x dim 3 share the dim name '?'" in warn.message and "forces" in warn.message
    assert "'x_dim2'" in warn.fix and "unique-dim-names" in warn.fix

    def lint(*shapes: tuple[int, ...]) -> LintResult:
        pairs = tuple(("x", s) for s in shapes)
        return lint_model(ocr_cls_model, LintSettings(target="tensorrt-rtx", parse=False, profile_shapes=pairs))

    res = lint((1, 3, 48, 192), (4, 3, 48, 192), (8, 3, 48, 192))  # the profile that failed in TensorRT-RTX
    (err,) = find(res, "EK-TRT-DIM-NAMES")
    assert not res.ok and err.severity == "error"
    assert err.message.startswith("x dim 2 (48) and x dim 3 (192) share the dim name '?'")
    assert "enginekit build renames them by default (x dim 2 -> 'x_dim2', x dim 3 -> 'x_dim3')" in err.fix
    square = lint((1, 3, 64, 64), (8, 3, 64, 64))  # equal here: builds, but any other shape would not
    assert square.ok and [f.severity for f in find(square, "EK-TRT-DIM-NAMES")] == ["warning"]
    with pytest.raises(UnknownNameError, match=r"did you mean 'x'"):
        lint_model(ocr_cls_model, LintSettings(target="tensorrt-rtx", parse=False, profile_shapes=(("xx", (1,)),)))


def test_author_dim_names_are_errors_only_where_the_profile_differs(save: Save) -> None:
    nodes = [helper.make_node("Add", ["x", "y"], ["z"], name="add")]
    path = save("batch2", nodes, [vi("x", TensorProto.FLOAT, ["batch", 4]), vi("y", TensorProto.FLOAT, ["batch", 4])],
                [vi("z", TensorProto.FLOAT, ["batch", 4])])

    def lint(x_max: int, y_max: int) -> LintResult:
        pairs = (("x", (1, 4)), ("x", (x_max, 4)), ("y", (1, 4)), ("y", (y_max, 4)))
        return lint_model(path, LintSettings(parse=False, profile_shapes=pairs))

    assert find(lint(8, 8), "EK-TRT-DIM-NAMES") == []
    (err,) = find(lint(8, 4), "EK-TRT-DIM-NAMES")
    assert err.severity == "error" and "x dim 0 (1/8) and y dim 0 (1/4) share the dim name 'batch'" in err.message
    assert "equal sizes" in err.fix
    square = save("square", [helper.make_node("Relu", ["a"], ["b"], name="relu")], [vi("a", TensorProto.FLOAT,
                  ["n", "n"])], [vi("b", TensorProto.FLOAT, ["n", "n"])])
    (one,) = find(run(square, parse=False), "EK-TRT-DIM-NAMES")
    assert one.severity == "warning" and "one name on two axes" in one.message


def test_nonzero_has_a_data_dependent_shape(save: Save) -> None:
    node = helper.make_node("NonZero", ["x"], ["y"], name="nz")
    path = save("nz", [node], [vi("x", TensorProto.FLOAT, [4, 8])], [vi("y", TensorProto.INT64, [2, "n"])])
    (f,) = find(run(path, parse=False), "EK-TRT-DATA-DEPENDENT-SHAPE")
    assert f.nodes == ("nz",) and f.severity == "warning"


def test_reshape_shape_from_values_is_flagged_but_not_from_shape_ops(save: Save) -> None:
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    minus1 = numpy_helper.from_array(np.array([-1], np.int64), "minus1")
    nodes = [
        # shape from Shape(x): static at build time -> fine
        helper.make_node("Shape", ["x"], ["sx"], name="shape_x"),
        helper.make_node("Gather", ["sx", "zero"], ["b"], name="gather_b", axis=0),
        helper.make_node("Concat", ["b", "minus1"], ["s_ok"], name="concat_ok", axis=0),
        helper.make_node("Reshape", ["x", "s_ok"], ["y_ok"], name="reshape_ok"),
        # shape computed from the values of x -> data-dependent
        helper.make_node("ReduceMax", ["x"], ["mx"], name="max_x", keepdims=0),
        helper.make_node("Cast", ["mx"], ["n"], name="cast_n", to=TensorProto.INT64),
        helper.make_node("Reshape", ["n", "minus1"], ["n1"], name="as_1d"),
        helper.make_node("Expand", ["x", "n1"], ["y_bad"], name="expand_bad"),
    ]
    path = save("dd", nodes, [vi("x", TensorProto.FLOAT, [2, 3])],
                [vi("y_ok", TensorProto.FLOAT, None), vi("y_bad", TensorProto.FLOAT, None)], inits=(zero, minus1))
    (f,) = find(run(path, parse=False), "EK-TRT-DATA-DEPENDENT-SHAPE")
    assert f.nodes == ("expand_bad",), f
    assert "'n1'" in f.message


def test_opset_above_the_parser_names_the_changed_ops(save: Save) -> None:
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], name="mean18"),
             helper.make_node("Relu", ["m"], ["y"], name="relu")]
    path = save("op18", nodes, [vi("x", TensorProto.FLOAT, [2, 3])], [vi("y", TensorProto.FLOAT, [2])],
                opset=18, inits=(axes,))
    (f,) = find(run(path, version="8.5", parse=False), "EK-TRT-OPSET")
    assert f.severity == "error" and f.nodes == ("mean18",) and "ReduceMean (opset 18)" in f.message
    assert "--opset 17" in f.fix
    assert not find(run(path, version="10", parse=False), "EK-TRT-OPSET")


def test_opset_above_the_parser_without_changed_ops_is_a_warning(save: Save) -> None:
    path = save("relu18", [helper.make_node("Relu", ["x"], ["y"], name="relu")],
                [vi("x", TensorProto.FLOAT, [2])], [vi("y", TensorProto.FLOAT, [2])], opset=18)
    (f,) = find(run(path, version="8.6", parse=False), "EK-TRT-OPSET")
    assert f.severity == "warning" and "18" in f.message and "17" in f.message


def test_dtypes_per_version(save: Save) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["d"], name="to_double", to=TensorProto.DOUBLE),
             helper.make_node("Cast", ["d"], ["h"], name="to_bf16", to=TensorProto.BFLOAT16),
             helper.make_node("Cast", ["h"], ["y"], name="to_float", to=TensorProto.FLOAT)]
    path = save("dtypes", nodes, [vi("x", TensorProto.FLOAT, [2])], [vi("y", TensorProto.FLOAT, [2])])
    old = {f.message.split(" tensor")[0].split()[-1]: f.severity for f in find(run(path, version="8.5", parse=False),
                                                                               "EK-TRT-DTYPE")}
    assert old == {"bfloat16": "error", "float64": "warning"}
    new = [f for f in find(run(path, version="10", parse=False), "EK-TRT-DTYPE")]
    assert [(f.severity, f.tensors) for f in new] == [("warning", ("d",))]


@needs_rtx
def test_resize_crop_and_resize_mode_is_unsupported(save: Save) -> None:
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="linear",
                            coordinate_transformation_mode="tf_crop_and_resize")
    path = save("resize", [node], [vi("x", TensorProto.FLOAT, [1, 1, 4, 4])], [vi("y", TensorProto.FLOAT, None)],
                inits=(scales,))
    res = run(path, target="tensorrt-rtx")
    (f,) = find(res, "EK-TRT-UNSUPPORTED-ATTR")
    assert f.severity == "error" and f.nodes == ("resize",) and "tf_crop_and_resize" in f.message
    assert [p.nodes for p in find(res, "EK-TRT-PARSER")] == [("resize",)]


def test_maxpool_indices_output_is_unsupported(save: Save) -> None:
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2, 2])
    path = save("pool", [node], [vi("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                [vi("y", TensorProto.FLOAT, None), vi("idx", TensorProto.INT64, None)])
    (f,) = find(run(path, parse=False), "EK-TRT-UNSUPPORTED-ATTR")
    assert f.nodes == ("pool",) and "output" in f.message


def test_local_functions_need_trt9(save: Save) -> None:
    func = helper.make_function("com.local", "MyRelu", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
                                [helper.make_opsetid("", 17)])
    node = helper.make_node("MyRelu", ["x"], ["y"], name="call", domain="com.local")
    path = save("func", [node], [vi("x", TensorProto.FLOAT, [2])], [vi("y", TensorProto.FLOAT, [2])],
                extra_opsets=(("com.local", 1),), functions=(func,))
    assert [f.nodes for f in find(run(path, version="8.5", parse=False), "EK-TRT-LOCAL-FUNCTION")] == [("call",)]
    assert codes(run(path, version="10", parse=False), "error") == []


def test_op_added_in_a_later_minor(save: Save) -> None:
    window = helper.make_node("HannWindow", ["n"], ["y"], name="hann")
    n = numpy_helper.from_array(np.array(16, np.int64), "n")
    path = save("hann", [window], [], [vi("y", TensorProto.FLOAT, [16])], inits=(n,))
    (f,) = [f for f in find(run(path, version="10.3", parse=False), "EK-TRT-UNSUPPORTED-OP")]
    assert f.severity == "error" and "10.4" in f.message
    assert codes(run(path, version="10.4", parse=False), "error") == []
    assert find(run(path, version="10", parse=False), "EK-TRT-OP-SINCE")


def test_external_data_is_reported(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "ext",
                              [vi("x", TensorProto.FLOAT, [2, 4])], [vi("y", TensorProto.FLOAT, [2, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m" / "ext.onnx"
    path.parent.mkdir()
    onnx.save_model(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    res = run(path, target="tensorrt-rtx")
    (f,) = find(res, "EK-EXTERNAL-DATA")
    assert f.severity == "info" and "'weights.bin'" in f.message and "next to" in f.fix
    if HAS_RTX:
        assert res.parse is not None and res.parse.ok  # parse_from_file finds the data beside the model


@needs_rtx
def test_ocr_cls_model_parses_with_tensorrt_rtx(ocr_cls_model: Path) -> None:
    res = run(ocr_cls_model, target="tensorrt-rtx")
    assert res.parse is not None and res.parse.ok, res.parse
    assert res.ok, [f for f in res.findings if f.severity == "error"]
    (dyn,) = find(res, "EK-TRT-DYNAMIC-SHAPE")
    assert dyn.tensors == ("x",) and "x [?, 3, ?, ?] (dynamic axes 0, 2, 3)" in dyn.message
    (i64,) = find(res, "EK-TRT-INT64")
    assert i64.severity == "info" and "22 INT64 weight(s)" in i64.message


@needs_rtx
def test_ocr_det_model_parses_with_tensorrt_rtx(ocr_det_model: Path) -> None:
    res = run(ocr_det_model)
    assert res.parse is not None and res.parse.ok and res.parse.num_layers > 100
    assert res.ok
    (dyn,) = find(res, "EK-TRT-DYNAMIC-SHAPE")
    assert dyn.tensors == ("x",) and "dynamic axes 0, 2, 3" in dyn.message


def test_result_is_sorted_and_json_safe(layernorm: Path) -> None:
    res = run(layernorm, version="8.5")
    order = {"error": 0, "warning": 1, "info": 2}
    ranks = [order[f.severity] for f in res.findings]
    assert ranks == sorted(ranks)
    data = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert data["target"] == "tensorrt" and data["target_version"] == "8.5" and data["table_version"] == "8.5"
    assert data["counts"]["error"] >= 1 and data["ok"] is False
    assert {"severity", "code", "message", "fix", "nodes", "tensors"} <= set(data["findings"][0])


def test_no_parse_skips_the_real_parser(layernorm: Path) -> None:
    res = run(layernorm, parse=False)
    assert res.parse is None and "EK-TRT-PARSER" not in codes(res)


def test_errors_for_bad_targets_and_files(layernorm: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'tensorrt'"):
        run(layernorm, target="tensorrtt")
    with pytest.raises(UnknownNameError, match="not in the support table"):
        run(layernorm, version="9.2")
    with pytest.raises(ModelLoadError):
        run(tmp_path / "missing.onnx")


def test_parse_target_forms() -> None:
    assert parse_target("tensorrt==8.5") == ("tensorrt", "8.5")
    assert parse_target("TensorRT") == ("tensorrt", None)
    assert parse_target("trt-rtx") == ("tensorrt-rtx", None)
    assert parse_target("onnxruntime") == ("ort", None)
    assert table_key("tensorrt", "8.6.1") == "8.6" and table_key("tensorrt", "10.7.0") == "10"
    assert table_key("tensorrt-rtx", "1.7.1.116") == "1"
    with pytest.raises(InvalidArgumentError):
        parse_target("tensorrt=8.5")
    with pytest.raises(InvalidArgumentError):
        parse_target("tensorrt==latest")


def test_support_table_is_consistent() -> None:
    known = {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain in ("", "ai.onnx")}
    legacy = {"ParametricSoftplus", "ScaledTanh", "ImageScaler", "Upsample", "Scatter", "ThresholdedRelu"}
    table = load_table()
    for target, entry in table["targets"].items():
        assert entry["default_version"] in entry["versions"]
        for key in entry["versions"]:
            s = version_support(target, key)
            assert s.source in table["sources"], (target, key)
            assert not (s.ops & s.unsupported), (target, key)
            assert s.ops and s.ops <= known | legacy, sorted(s.ops - known - legacy)
            assert set(s.restrictions) <= s.ops | s.unsupported, sorted(set(s.restrictions) - s.ops)
            assert s.max_opset is not None and s.int64 in ("cast-to-int32", "native")
    v85, v86 = version_support("tensorrt", "8.5"), version_support("tensorrt", "8.6")
    assert v86.ops - v85.ops == {"GroupNormalization", "LayerNormalization", "IsInf"}
    assert "LayerNormalization" in v85.unsupported and "LayerNormalization" not in v86.unsupported
    assert (v85.max_opset, v86.max_opset) == (17, 17)
    assert version_support("tensorrt", "11").assumed


@needs_rtx
def test_support_table_matches_the_installed_rtx_parser() -> None:
    import tensorrt_rtx as trt

    logger = trt.Logger(trt.Logger.ERROR)
    parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
    rtx = version_support("tensorrt-rtx", "1")
    assert all(parser.supports_operator(op) for op in rtx.ops)
    assert not any(parser.supports_operator(op) for op in rtx.unsupported - {"NonZero"})


@needs_rtx
def test_parse_onnx_reports_error_fields(tmp_path: Path) -> None:
    from enginekit.graph.trt_parser import parse_onnx

    node = helper.make_node("Det", ["x"], ["y"], name="det")
    graph = helper.make_graph([node], "det", [vi("x", TensorProto.FLOAT, [3, 3])], [vi("y", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "det.onnx")
    res = parse_onnx(tmp_path / "det.onnx", module="tensorrt_rtx")
    assert res.library == "tensorrt_rtx" and res.version.startswith("1.") and not res.ok
    (err,) = res.errors
    assert (err.node_index, err.node_name, err.node_operator, err.code) == (0, "det", "Det", "UNSUPPORTED_NODE")
    assert "1 parser error" in res.summary() and res.to_dict()["num_errors"] == 1
