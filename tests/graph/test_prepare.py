"""prepare_model: passes verified against the original model, rejected with evidence when they break it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import enginekit.graph.prepare as prepare_mod
from enginekit.compare import CompareSettings, Tolerances
from enginekit.data import InputShape
from enginekit.errors import FeedError, InvalidArgumentError, UnknownNameError, UserError
from enginekit.graph.load import load_model
from enginekit.graph.passes import PASSES, PassContext, PassOutput
from enginekit.graph.prepare import prepare_model
from enginekit.settings import FeedSettings, PrepareSettings

X4 = FeedSettings(inputs=(InputShape("x", (2, 4)),))


def finish(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # onnxruntime 1.31 reads IR <= 13
    return model


def make_mlp(path: Path, *, width: int = 8, opset: int = 17) -> Path:
    """x[batch,4] -> MatMul(w1) -> Add(Constant b1) -> Relu -> MatMul(w2) -> y[batch,3]; Constants to fold."""
    rng = np.random.default_rng(0)
    b1 = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32))
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Constant", [], ["b1"], value=b1),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal((4, width)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((width, 3)).astype(np.float32), "w2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits)
    onnx.save(finish(graph, opset), path)
    return path


def make_conv_mul(path: Path) -> Path:
    """Conv followed by Mul with a (1, 1, 3, 1) scale: one factor per output ROW, not per channel."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((1, 1, 3, 1)).astype(np.float32), "s")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "s"], ["y"])], "conv_mul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 3, 4])], inits,
    )
    onnx.save(finish(graph), path)
    return path


def run_file(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feed)]


# Deliberately wrong passes: they simulate simplifier bugs (a constant folded to a wrong value, a
# fusion that changes a shape, a rewrite that declares a wrong shape or leaves an op nobody knows).
def perturb_weight(model: onnx.ModelProto, ctx: PassContext) -> PassOutput:
    w = model.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.01, w.name))
    return PassOutput(model, "scaled a weight by 1.01")


def add_leading_axis(model: onnx.ModelProto, ctx: PassContext) -> PassOutput:
    last = model.graph.node[-1]
    last.output[0] = "y_inner"
    model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    model.graph.node.append(helper.make_node("Unsqueeze", ["y_inner", "axis0"], ["y"]))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "batch", 3]))
    return PassOutput(model, "unsqueezed the output")


def declare_wrong_shape(model: onnx.ModelProto, ctx: PassContext) -> PassOutput:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    dims[0].Clear()
    dims[0].dim_value = 7
    return PassOutput(model, "declared batch 7")


def unknown_op(model: onnx.ModelProto, ctx: PassContext) -> PassOutput:
    model.graph.node[-1].op_type = "NotAnOnnxOp"
    return PassOutput(model, "renamed an op")


def crash(model: onnx.ModelProto, ctx: PassContext) -> PassOutput:
    raise RuntimeError("simplifier blew up")


FAULTY = {**PASSES, "perturb-weight": perturb_weight, "add-leading-axis": add_leading_axis,
          "declare-wrong-shape": declare_wrong_shape, "unknown-op": unknown_op, "crash": crash}


def test_ocr_classifier_default_passes(ocr_cls_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "cls.onnx"
    feeds = FeedSettings(inputs=(InputShape("x", (2, 3, 48, 192)),))
    res = prepare_model(ocr_cls_model, PrepareSettings(output=out, feeds=feeds))
    assert res.passed and res.exit_code == 0, res.to_dict()
    assert [p.name for p in res.passes] == ["unique-dim-names", "shape-inference", "simplify", "int64-to-int32"]
    assert all(p.verified for p in res.passes if p.status == "applied")
    assert res.named("simplify").status == "applied"
    assert res.named("unique-dim-names").status == "applied"  # x [?, 3, ?, ?]: TensorRT would tie H and W
    written = onnx.load(out).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in written][2:] == ["x_dim2", "x_dim3"]
    assert res.nodes_after < res.nodes_before // 2
    sim = res.named("simplify").comparison
    assert sim is not None and sim["passed"] and sim["outputs"]["save_infer_model/scale_0.tmp_1"]["max_abs_err"] < 1e-5
    x = np.random.default_rng(3).uniform(0, 1, (2, 3, 48, 192)).astype(np.float32)
    np.testing.assert_allclose(run_file(out, {"x": x})[0], run_file(ocr_cls_model, {"x": x})[0], atol=1e-5)
    json.dumps(res.to_dict(), allow_nan=False)


def test_ocr_detector_fixed_shapes(ocr_det_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "det.onnx"
    settings = PrepareSettings(output=out, fix_input_shapes=(InputShape("x", (1, 3, 64, 64)),))
    res = prepare_model(ocr_det_model, settings)
    assert res.passed, res.to_dict()
    assert res.passes[0].name == "fix-input-shapes" and res.passes[0].status == "applied"
    assert res.inputs == {"x": {"shape": [1, 3, 64, 64], "dtype": "float32"}}  # feed follows the fixed shape
    written = onnx.load(out)
    assert [d.dim_value for d in written.graph.output[0].type.tensor_type.shape.dim] == [1, 1, 64, 64]
    assert res.nodes_after < res.nodes_before


def test_faulty_passes_are_rejected_with_evidence(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "out.onnx"
    names = ("shape-inference", "perturb-weight", "add-leading-axis", "declare-wrong-shape", "unknown-op", "crash",
             "simplify", "int64-to-int32")
    res = prepare_model(model, PrepareSettings(output=out, passes=names, feeds=X4), passes_registry=FAULTY)
    status = {p.name: p.status for p in res.passes}
    assert status == {"shape-inference": "applied", "perturb-weight": "rejected", "add-leading-axis": "rejected",
                      "declare-wrong-shape": "rejected", "unknown-op": "rejected", "crash": "failed",
                      "simplify": "applied", "int64-to-int32": "skipped"}
    assert not res.passed and res.exit_code == 1
    perturbed = res.named("perturb-weight")
    assert "outputs differ" in perturbed.reason and "max abs err" in perturbed.reason
    assert perturbed.comparison is not None and perturbed.comparison["outputs"]["y"]["max_abs_err"] > 1e-4
    assert "shape mismatch: reference (2, 3) vs candidate (1, 2, 3)" in res.named("add-leading-axis").reason
    assert "declared with shape [7, 3]" in res.named("declare-wrong-shape").reason
    assert "NotAnOnnxOp" in res.named("unknown-op").reason
    assert res.named("crash").reason == "RuntimeError: simplifier blew up"
    assert "perturb-weight rejected" in res.message and "crash failed" in res.message
    # The passes that survived were written, and the result still computes the original function.
    assert res.named("simplify").nodes_after < res.named("simplify").nodes_before
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(run_file(out, {"x": x})[0], run_file(model, {"x": x})[0], rtol=1e-6, atol=1e-6)


def test_real_onnxslim_misfusion_is_rejected(tmp_path: Path) -> None:
    """onnxslim 0.1.98 folds Mul(Conv(x), s) with s of shape (1, 1, 3, 1) into the Conv weights as if
    s were per-channel (3 output channels == 3 rows): the result is off by ~10. prepare rejects it."""
    import onnxslim  # type: ignore[import-untyped]

    model = make_conv_mul(tmp_path / "conv_mul.onnx")
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6)).astype(np.float32)
    slimmed = onnxslim.slim(onnx.load(model))
    slim_path = tmp_path / "slimmed.onnx"
    onnx.save(slimmed, slim_path)
    broken = not np.allclose(run_file(slim_path, {"x": x})[0], run_file(model, {"x": x})[0], atol=1e-4)
    res = prepare_model(model, PrepareSettings(output=tmp_path / "out.onnx", passes=("simplify",)))
    row = res.named("simplify")
    if broken:
        assert row.status == "rejected" and res.exit_code == 1
        assert "outputs differ" in row.reason
    else:  # a fixed onnxslim: the fusion is either skipped or correct
        assert row.status in ("applied", "skipped")
    np.testing.assert_allclose(run_file(tmp_path / "out.onnx", {"x": x})[0], run_file(model, {"x": x})[0], atol=1e-5)


def test_int64_pass_end_to_end_on_ocr_classifier(ocr_cls_model: Path, tmp_path: Path) -> None:
    feeds = FeedSettings(inputs=(InputShape("x", (1, 3, 48, 192)),))
    res = prepare_model(ocr_cls_model, PrepareSettings(output=tmp_path / "o.onnx", passes=("int64-to-int32",),
                                                       feeds=feeds))
    row = res.named("int64-to-int32")
    assert row.status == "applied" and row.verified and row.details["converted"] == 4
    assert row.comparison is not None
    assert row.comparison["outputs"]["save_infer_model/scale_0.tmp_1"]["max_abs_err"] == 0


def test_opset_13_to_17_and_unconvertible(tmp_path: Path) -> None:
    old = make_mlp(tmp_path / "m13.onnx", opset=13)
    res = prepare_model(old, PrepareSettings(output=tmp_path / "m17.onnx", passes=(), target_opset=17, feeds=X4))
    assert [(p.name, p.status) for p in res.passes] == [("opset", "applied")] and res.passed
    assert onnx.load(tmp_path / "m17.onnx").opset_import[0].version == 17

    new = make_mlp(tmp_path / "m17src.onnx", opset=17)
    out = tmp_path / "down.onnx"
    res = prepare_model(new, PrepareSettings(output=out, target_opset=13, feeds=X4))
    row = res.named("opset")
    assert row.status == "failed" and "No Adapter From Version $14 for Add" in row.reason
    assert res.exit_code == 1 and [p.status for p in res.passes[1:]] == ["skipped", "applied", "applied", "skipped"]
    assert onnx.load(out).opset_import[0].version == 17


def test_no_change_and_no_verify(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    res = prepare_model(model, PrepareSettings(output=tmp_path / "a.onnx", passes=("int64-to-int32",), feeds=X4))
    assert res.passes[0].status == "skipped" and res.passes[0].reason == "no change" and res.passed
    res = prepare_model(model, PrepareSettings(output=tmp_path / "b.onnx", verify=False))
    assert res.passed and not res.verify and res.inputs == {}
    assert all(not p.verified for p in res.passes)
    assert "NOT verified" in res.message


def test_user_errors_before_any_pass(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "out.onnx"
    with pytest.raises(UnknownNameError, match="did you mean 'simplify'"):
        prepare_model(model, PrepareSettings(output=out, passes=("simplfy",), feeds=X4))
    with pytest.raises(InvalidArgumentError, match="rank 3 does not match"):
        prepare_model(model, PrepareSettings(output=out, fix_input_shapes=(InputShape("x", (1, 2, 4)),)))
    with pytest.raises(InvalidArgumentError, match="disagree"):
        prepare_model(model, PrepareSettings(output=out, fix_input_shapes=(InputShape("x", (1, 4)),), feeds=X4))
    with pytest.raises(FeedError, match="symbolic dim 'batch'"):
        prepare_model(model, PrepareSettings(output=out))
    with pytest.raises(InvalidArgumentError, match="needs a target"):
        prepare_model(model, PrepareSettings(output=out, passes=("opset",), feeds=X4))
    with pytest.raises(InvalidArgumentError, match="is the input model"):
        prepare_model(model, PrepareSettings(output=model, feeds=X4))
    with pytest.raises(UnknownNameError, match="not an output of the model"):
        prepare_model(model, PrepareSettings(output=out, feeds=X4, compare=CompareSettings(
            atol=Tolerances(1e-5, (("logits", 1e-3),)))))
    bad_ir = onnx.load(model)
    bad_ir.ir_version = 99
    onnx.save(bad_ir, tmp_path / "ir99.onnx")
    with pytest.raises(UserError, match="onnxruntime cannot run the original model"):
        prepare_model(tmp_path / "ir99.onnx", PrepareSettings(output=out, feeds=X4))
    assert not out.exists()


def test_large_models_get_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare_mod, "EXTERNAL_DATA_THRESHOLD", 0)  # as if the model were over 2 GiB
    model = make_mlp(tmp_path / "mlp.onnx", width=512)
    out = tmp_path / "sub" / "big.onnx"
    res = prepare_model(model, PrepareSettings(output=out, feeds=X4))
    assert res.passed and res.external_data == "big.onnx.data"
    assert (tmp_path / "sub" / "big.onnx.data").stat().st_size >= 512 * 4 * 4
    assert "weights in big.onnx.data" in res.message
    assert sorted(p.name for p in out.parent.iterdir()) == ["big.onnx", "big.onnx.data"]  # no temp files left
    x = np.ones((3, 4), np.float32)
    np.testing.assert_allclose(run_file(out, {"x": x})[0], run_file(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    assert load_model(out).graph.initializer


def test_to_dict_is_strict_json(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    res = prepare_model(model, PrepareSettings(output=tmp_path / "o.onnx", passes=("perturb-weight",), feeds=X4),
                        passes_registry=FAULTY)
    doc = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert doc["passed"] is False
    row = doc["passes"][0]
    assert set(row) == {"name", "status", "nodes_before", "nodes_after", "summary", "reason", "details",
                        "duration_s", "verify_s", "verified", "comparison"}
    assert row["status"] == "rejected" and row["comparison"]["passed"] is False
