"""INT8 precision debugging: planted resolution killers found by name, real models left alone or fixed small."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from enginekit.compare.per_precision import settings_for_precision
from enginekit.debug.execute import Executor
from enginekit.debug.fix import FixResult, find_fp32_islands, range_analysis_initial
from enginekit.debug.ranges import analyze_ranges, per_channel_zero_fraction
from enginekit.examples import digits

sys.path.insert(0, str(Path(__file__).parent))
import int8_models  # noqa: E402

Builder = Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray], list[str]]]
BROKEN = [int8_models.activation_outlier_channel, int8_models.weight_outlier_per_channel]
_CACHE: dict[str, FixResult] = {}


def _fix(builder: Builder) -> FixResult:
    if builder.__name__ not in _CACHE:
        model, feed, _ = builder()
        initial = range_analysis_initial(model, [feed], "int8")
        _CACHE[builder.__name__] = find_fp32_islands(model, [feed], "int8", initial=[n for n, _ in initial],
                                                     initial_reasons=dict(initial),
                                                     calibration=int8_models.calibration())
    return _CACHE[builder.__name__]


@pytest.mark.parametrize("builder", BROKEN, ids=lambda b: b.__name__)
def test_range_analysis_ranks_the_culprit_first(builder: Builder) -> None:
    model, feed, culprits = builder()
    report = analyze_ranges(model, feed, precision="int8")
    assert report.risky and report.risky[0].node == culprits[0]
    assert {r.op_type for r in report.risky} <= {"MatMul", "Gemm", "Conv", "ConvTranspose"}


@pytest.mark.parametrize("builder", BROKEN, ids=lambda b: b.__name__)
def test_plan_leaves_only_the_culprit_unquantized(builder: Builder) -> None:
    model, feed, culprits = builder()
    result = _fix(builder)
    assert not result.before.passed and result.passed, result.message
    assert result.plan.precision == "int8" and result.plan.node_names() == culprits
    assert result.baseline_nodes is not None and result.baseline_nodes >= 6 * result.kept
    assert result.runs["candidates"] == {"backend": "ort"}
    # the fixed model is a Q/DQ model: every other MatMul still reads quantized inputs
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("DequantizeLinear") >= 2 * 8 and "QuantizeLinear" in ops
    # run again from scratch in onnxruntime: within the INT8 tolerance (4 steps of 1/127 of the output range)
    ref = Executor("ort").run(model, feed)
    got = Executor("ort").run(result.model, feed)
    before = Executor("ort").run(result.all_low_model, feed) if result.all_low_model is not None else {}
    from enginekit.compare import CompareSettings, compare_outputs

    settings = settings_for_precision(CompareSettings(), "int8", ref)
    assert compare_outputs(ref, got, settings).passed
    assert not compare_outputs(ref, before, settings).passed
    err_before = max(float(np.abs(before[k] - ref[k]).max()) for k in ref)
    err_after = max(float(np.abs(got[k] - ref[k]).max()) for k in ref)
    assert err_after < err_before / 5


def test_per_channel_zero_fraction() -> None:
    w = np.full((4, 8), 0.01, np.float32)
    assert per_channel_zero_fraction(w, 0) == 0.0
    w[:, 0] = 10.0  # one large weight per output row (axis 0): every other weight of the row rounds to zero
    assert per_channel_zero_fraction(w, 0) == pytest.approx(28 / 32)
    assert per_channel_zero_fraction(w, 1) == 0.0  # per column, column 0 is all 10s and the rest all 0.01s


def test_real_digits_cnn_survives_int8_with_an_empty_plan() -> None:
    """The bundled CNN (trained on sklearn digits), calibrated and checked on real test images."""
    model = onnx.load(str(digits.onnx_path()))
    x, _ = digits.load_test_split()
    feed = {"x": x[:64]}
    calibration = [{"x": x[64 + 32 * i: 96 + 32 * i]} for i in range(6)]
    assert range_analysis_initial(model, [feed], "int8") == []
    result = find_fp32_islands(model, [feed], "int8", calibration=calibration)
    assert result.passed and result.kept == 0 and result.evaluations == 1
    assert result.runs["quantization"]["quantized_nodes"] >= 3


def test_real_paddleocr_classifier_int8_plan_is_small(ocr_cls_model: Path) -> None:
    """PaddleOCR's classifier (opset 11: upgraded to 13 for per-channel Q/DQ) misses the INT8 tolerance on
    these inputs; the plan leaves a couple of its 54 quantizable nodes in float, not the ~50 after the
    first bad layer."""
    model = onnx.load(str(ocr_cls_model))
    rng = np.random.default_rng(0)
    feed = {"x": rng.random((4, 3, 48, 192), dtype=np.float32)}
    calibration = [{"x": rng.random((4, 3, 48, 192), dtype=np.float32)} for _ in range(4)]
    result = find_fp32_islands(model, [feed], "int8", calibration=calibration, max_evaluations=60)
    assert not result.before.passed and result.passed, result.message
    assert result.total_nodes == 54 and 1 <= result.kept <= 3
    assert result.baseline_nodes is not None and result.baseline_nodes >= 10 * result.kept
    assert "opset 11 -> 13" in result.runs["quantization"]["preprocess"]
    assert result.after.max_abs_err is not None and result.before.max_abs_err is not None
    assert result.after.max_abs_err < result.before.max_abs_err


def test_fp64_reference_agrees_with_fp32_on_a_healthy_model() -> None:
    import fp16_models

    model, feed, _ = fp16_models.attention_logits_overflow()
    fp32 = find_fp32_islands(model, [feed], "fp16", max_evaluations=60)
    fp64 = find_fp32_islands(model, [feed], "fp16", max_evaluations=60, reference="fp64")
    assert fp64.runs["reference"] == {"precision": "fp64", "backend": "onnx-reference"}
    assert fp64.passed and fp64.plan.node_names() == fp32.plan.node_names()
