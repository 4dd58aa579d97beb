from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from fp16_models import (  # type: ignore[import-not-found, unused-ignore]
    attention_logits_overflow,
    detection_head_exp,
    dfl_detection_head,
    healthy_mlp,
    large_activation_before_norm,
)
from onnx import TensorProto, helper

from enginekit.debug import analyze_ranges, observe, observe_arrays, tensor_stats


def test_observe_is_chunked_and_bounded() -> None:
    model, feed, _ = healthy_mlp()
    obs = observe(model, feed, chunk_size=4)
    n_float = sum(1 for n in model.graph.node for o in n.output if o)
    assert len(obs) == n_float >= 20
    assert obs.peak_arrays <= 4 + len(model.graph.output) and obs.peak_arrays == 4
    assert obs.chunks == -(-len(obs) // 4)
    assert list(obs)[0] == model.graph.node[0].output[0]  # topological order


def test_stats_on_known_values() -> None:
    x = np.array([1e5, -2.0, 0.0, 1e-9, 1e-6, np.nan, np.inf, 3.0], np.float32)
    s = tensor_stats("t", x, "n", "Op")
    assert s.max_abs == 1e5 and s.min == -2.0 and s.max == pytest.approx(1e5)
    assert s.fraction_overflow == 1 / 8 and s.fraction_underflow_to_zero == 1 / 8 and s.fraction_subnormal == 1 / 8
    assert s.nan_count == 1 and s.inf_count == 1
    assert tensor_stats("t", x, target="bf16").fraction_overflow == 0


def test_observe_values_match_arrays() -> None:
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"], name="sq"), helper.make_node("Neg", ["sq"], ["y"], name="neg")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feed = {"x": np.array([300.0, -1.0, 2.0], np.float32)}
    obs = observe(model, feed, chunk_size=1)
    assert obs["sq"].max_abs == 90000.0 and obs["sq"].fraction_overflow == pytest.approx(1 / 3)
    assert obs["y"].min == -90000.0 and obs["y"].mean == pytest.approx(-30001.666, rel=1e-4)
    arrays = observe_arrays(model, feed, ["sq"])
    np.testing.assert_array_equal(arrays["sq"], [90000.0, 1.0, 4.0])


@pytest.mark.parametrize("build", [large_activation_before_norm, attention_logits_overflow, detection_head_exp,
                                   dfl_detection_head])
def test_ranges_rank_planted_culprit_first(build: object) -> None:
    model, feed, culprits = build()  # type: ignore[operator]
    report = analyze_ranges(model, feed, precision="fp16")
    assert report.risky[0].node in culprits, report.to_dict()
    assert "overflows fp16" in report.risky[0].reason
    assert any(r.kind == "amplifier" for r in report.risky)
    assert analyze_ranges(model, feed, precision="bf16").origins() == []


def test_weight_overflow_is_flagged() -> None:
    w = onnx.numpy_helper.from_array(np.array([[7e4]], np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    report = analyze_ranges(model, {"x": np.full((1, 1), 1e-3, np.float32)})
    assert report.risky[0].kind == "weight" and "weight 'w' overflows fp16" in report.risky[0].reason


def test_healthy_mlp_is_not_risky() -> None:
    model, feed, _ = healthy_mlp()
    assert analyze_ranges(model, feed).risky == []


def test_ocr_classifier_ranges(ocr_cls_model: Path) -> None:
    model = onnx.load(ocr_cls_model)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32)
    report = analyze_ranges(model, {model.graph.input[0].name: x})
    assert report.tensors_observed > 50
    assert [r for r in report.risky if r.kind in ("activation", "weight", "inherited")] == [], report.to_dict()
