"""A precision plan on the ONNX runners: ``ort:fp16`` and ``onnx-reference:fp16`` convert the model with the
plan's nodes as the node block list (kept FP32, IO types kept).

The model (conftest.make_scaled) scales by 1e-7 and back by 1e7: in float16 the constant 1e-7 rounds to 1.19e-7
and the output grows by a fifth, whichever runtime computes it (onnxruntime's CPU provider computes many fp16
ops in float32, but the rounded constant is in the graph). Keeping both Muls in FP32 fixes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from enginekit.errors import InvalidArgumentError, UnknownNameError
from enginekit.graph.precision import PlanEntry, PrecisionPlan, save_plan
from enginekit.registry import get_backend
from enginekit.settings import BackendSettings

PLAN_NODES = ["scale_up", "scale_down"]
X = np.random.default_rng(0).uniform(0.5, 1.0, (2, 4)).astype(np.float32)


def make_plan(path: Path, nodes: list[str], precision: str = "fp16") -> Path:
    save_plan(PrecisionPlan(precision, tuple(PlanEntry(n, "test") for n in nodes)), path)
    return path


def _expected() -> np.ndarray:
    return X + np.linspace(-1, 1, 4).astype(np.float32)


def test_ort_offers_fp16_but_optimize_does_not_run_it_unasked() -> None:
    from enginekit.pipeline import default_candidates

    info = get_backend("ort")
    assert info.precisions == ("fp32", "fp16") and info.default_precisions == ("fp32",)
    assert info.plan_precisions == ("fp16",) and get_backend("onnx-reference").plan_precisions == ("fp16", "bf16")
    assert all(not (c.backend == "ort" and c.precision == "fp16") for c in default_candidates())


@pytest.mark.parametrize("backend", ["ort", "onnx-reference"])
def test_fp16_plan_keeps_the_nodes_in_fp32(backend: str, scaled_model: Path, tmp_path: Path) -> None:
    info = get_backend(backend)
    with info.create_runner(scaled_model, BackendSettings(), "fp16") as runner:
        without = runner.infer({"x": X})["y"]
    assert np.abs(without - _expected()).max() > 0.1  # 1e-7 rounded to 1.19e-7
    settings = BackendSettings(precision_plan=make_plan(tmp_path / "plan.json", PLAN_NODES))
    with info.create_runner(scaled_model, settings, "fp16") as runner:
        fixed = runner.infer({"x": X})["y"]
        details = runner.describe()
    assert fixed.dtype == np.float32  # IO types kept
    np.testing.assert_allclose(fixed, _expected(), atol=2e-3, rtol=2e-3)
    conversion = details["conversion"]
    assert isinstance(conversion, dict)
    assert conversion["plan_nodes_fp32"] == PLAN_NODES and conversion["precision_plan"] == str(settings.precision_plan)
    assert conversion["nodes_converted"] == 1  # the Add


@pytest.mark.parametrize("backend", ["ort", "onnx-reference"])
def test_plan_errors_are_user_errors(backend: str, scaled_model: Path, tmp_path: Path) -> None:
    info = get_backend(backend)
    bf16 = BackendSettings(precision_plan=make_plan(tmp_path / "bf16.json", PLAN_NODES, "bf16"))
    with pytest.raises(InvalidArgumentError, match="plan is for bf16"):
        info.create_runner(scaled_model, bf16, "fp16").load()
    unknown = BackendSettings(precision_plan=make_plan(tmp_path / "unknown.json", ["scale_upp"]))
    with pytest.raises(UnknownNameError, match="did you mean 'scale_up'"):
        info.create_runner(scaled_model, unknown, "fp16").load()


def test_onnx_reference_bf16_takes_a_bf16_plan(scaled_model: Path, tmp_path: Path) -> None:
    settings = BackendSettings(precision_plan=make_plan(tmp_path / "bf16.json", PLAN_NODES, "bf16"))
    with get_backend("onnx-reference").create_runner(scaled_model, settings, "bf16") as runner:
        out = runner.infer({"x": X})["y"]
        details = runner.describe()
    np.testing.assert_allclose(out, _expected(), atol=2e-2, rtol=2e-2)
    conversion = details["conversion"]
    assert isinstance(conversion, dict) and conversion["plan_nodes_fp32"] == PLAN_NODES


def test_fp32_runner_ignores_the_plan(scaled_model: Path, tmp_path: Path) -> None:
    settings = BackendSettings(precision_plan=make_plan(tmp_path / "plan.json", PLAN_NODES))
    with get_backend("ort").create_runner(scaled_model, settings) as runner:
        out = runner.infer({"x": X})["y"]
        assert "conversion" not in runner.describe()
    np.testing.assert_allclose(out, _expected(), atol=1e-6, rtol=1e-6)
