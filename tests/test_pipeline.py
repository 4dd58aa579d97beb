"""`optimize`: steps, candidates, precision-aware tolerances, metrics and the report, on the bundled example."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from enginekit.compare import CompareSettings, parse_tolerances
from enginekit.compare.per_precision import settings_for_precision
from enginekit.errors import EXIT_CHECK_FAILED, EXIT_OK
from enginekit.hardware import cpu_supports_bf16
from enginekit.pipeline import optimize
from enginekit.settings import BackendSettings, OptimizeSettings, TimingSettings

FAST = TimingSettings(warmup_s=0.0, warmup_iterations=1, iterations=3, duration_s=0.0)


def _steps(result: object) -> dict[str, str]:
    return {s.name: s.status for s in result.steps}  # type: ignore[attr-defined]


def test_demo_pipeline_on_bundled_example(tmp_path: Path) -> None:
    settings = OptimizeSettings(backends=("ort", "openvino", "openvino:bf16"), timing=FAST, report_dir=tmp_path / "r")
    result = optimize(settings)
    assert result.exit_code == EXIT_OK, [(c.row.label, c.row.reason) for c in result.candidates]
    steps = _steps(result)
    assert steps["load"] == steps["feeds"] == steps["compare"] == steps["report"] == "OK"
    by = {c.row.label: c for c in result.candidates}
    assert by["ort"].row.is_reference and by["ort"].speedup == pytest.approx(1.0)
    acc = by["ort"].metrics["accuracy"]  # type: ignore[index]
    assert acc >= 0.95
    # FP32 backends agree to the sample on the 360-image test split: the same values, a difference of 0 on every
    # bootstrap resample (the demo's task metrics step gives intervals too)
    ov, ref = dict(by["openvino"].metrics or {}), dict(by["ort"].metrics or {})
    intervals = ov.pop("intervals")
    assert ref.pop("intervals") == {} and ov == ref
    assert set(intervals) >= {"accuracy", "macro_precision", "macro_recall"}
    assert all(iv["difference"] == iv["low"] == iv["high"] == 0 for iv in intervals.values())
    bf16 = by["openvino:bf16"].row
    if cpu_supports_bf16():
        # bf16 judged with scale-aware tolerances: atol = 4 eps(bf16) x max|logit|
        assert bf16.status == "ok" and bf16.comparison is not None, bf16.reason
        o = bf16.comparison.outputs[0]
        peak = float(np.abs(by["ort"].row.outputs["logits"]).max())  # type: ignore[index]
        assert o.atol == pytest.approx(4 * 2**-7 * peak) and o.rtol == pytest.approx(4 * 2**-7)
    else:  # a CPU without bf16 (no AVX-512 BF16 / AMX): the row says so and does not fail the run
        assert bf16.status == "skipped" and "bf16" in bf16.reason and bf16.comparison is None
    for c in result.candidates:
        if c.row.status != "skipped":
            assert c.timing is not None and c.timing["runs"] >= 3 and c.timing["median_ms"] > 0
    doc = json.loads((tmp_path / "r/report.json").read_text())
    assert doc["passed"] is True and doc["dataset"].endswith("digits_test.npz")
    assert {r["backend"] for r in doc["results"]} == {"ort", "openvino", "openvino:bf16"}
    md = (tmp_path / "r/report.md").read_text()
    assert "| ort | fp32 | ok |" in md and "| speed-up | accuracy | macro P | macro R | top-5 | max abs err |" in md
    script = (tmp_path / "r/reproduce.sh").read_text()
    assert "enginekit optimize --backend ort --backend openvino --backend openvino:bf16" in script


def test_a_given_tolerance_equal_to_the_default_is_kept() -> None:
    """`--atol 1e-05` is a choice even though it equals Polygraphy's default: it is not replaced by fp16's rule."""
    ref = {"y": np.array([100.0, -3.0], np.float32)}
    given = CompareSettings(atol=parse_tolerances(["1e-05"], 1e-5, "--atol"),
                            rtol=parse_tolerances(["1e-5"], 1e-5, "--rtol"))
    kept = settings_for_precision(given, "fp16", ref)
    assert kept.atol.for_output("y") == 1e-5 and kept.rtol.for_output("y") == 1e-5
    scaled = settings_for_precision(CompareSettings(), "fp16+plan", ref)
    assert scaled.atol.for_output("y") == pytest.approx(4 * 2**-10 * 100)


def test_explicit_tolerances_are_kept_for_low_precision() -> None:
    ref = {"y": np.array([100.0, -3.0], np.float32), "z": np.array([0.5], np.float32)}
    base = CompareSettings()
    fp32 = settings_for_precision(base, "fp32", ref)
    assert fp32 is base
    bf16 = settings_for_precision(base, "bf16", ref)
    assert bf16.atol.for_output("y") == pytest.approx(4 * 2**-7 * 100)
    assert bf16.atol.for_output("z") == pytest.approx(4 * 2**-7)  # magnitudes below 1 count as 1
    given = CompareSettings(atol=parse_tolerances(["y:0.5"], 1e-5, "--atol"),
                            rtol=parse_tolerances(["0.2"], 1e-5, "--rtol"))
    kept = settings_for_precision(given, "fp16", ref)
    assert kept.atol.for_output("y") == 0.5 and kept.rtol.default == 0.2
    assert kept.atol.for_output("z") == pytest.approx(4 * 2**-10)


def test_backend_failures_are_rows_and_report_is_still_written(tmp_path: Path, contrib_model: Path) -> None:
    settings = OptimizeSettings(
        model=contrib_model,
        backends=("ort", "onnx-reference", "openvino"),
        backend=BackendSettings(openvino_device="GPU"),  # not on this machine -> SKIPPED with the reason
        timing=FAST,
        report_dir=tmp_path / "r",
    )
    result = optimize(settings)
    steps = _steps(result)
    assert steps["run ort"] == "OK"
    assert steps["run onnx-reference"] == "FAIL"
    assert steps["run openvino"] == "SKIPPED"
    by = {c.row.label: c.row for c in result.candidates}
    assert "GPU" in by["openvino"].reason and "FusedMatMul" in by["onnx-reference"].reason
    assert result.exit_code == EXIT_CHECK_FAILED
    assert steps["report"] == "OK" and (tmp_path / "r/report.md").is_file()


def test_required_step_failure_stops_backends_but_not_the_report(tmp_path: Path, mlp_model: Path) -> None:
    # a dataset without the model's input (a dataset without labels is valid now: agreement metrics)
    bad = tmp_path / "wrong_input.npz"
    np.savez(bad, y=np.zeros((4, 4), np.float32), labels=np.zeros(4, np.int64))
    result = optimize(OptimizeSettings(model=mlp_model, backends=("ort",), dataset=bad, timing=FAST,
                                       report_dir=tmp_path / "r"))
    steps = _steps(result)
    assert steps["feeds"] == "FAIL" and "lacks arrays for model inputs x" in result.steps[2].reason
    assert steps["run ort"] == "SKIPPED"
    assert steps["report"] == "OK"
    assert result.exit_code == EXIT_CHECK_FAILED


def test_optimize_pytorch_source_exports_prepares_and_runs(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from enginekit.data import InputShape
    from enginekit.report.reproduce import optimize_command
    from enginekit.settings import ExportSettings, FeedSettings, PrepareSettings

    models = Path(__file__).parent / "export" / "models_for_export.py"
    feeds = FeedSettings(inputs=(InputShape("x", (2, 3, 16, 16)),))
    settings = OptimizeSettings(
        export=ExportSettings(source=f"{models}:convnet", output=tmp_path / "r" / "model.onnx",
                              inputs=("x:batch,3,16,16",)),
        prepare=PrepareSettings(output=tmp_path / "r" / "model.prepared.onnx", feeds=feeds),
        feeds=feeds, backends=("ort", "openvino"), timing=FAST, report_dir=tmp_path / "r",
    )
    result = optimize(settings)
    steps = _steps(result)
    assert steps["export"] == "OK" and steps["prepare"] == "OK" and steps["compare"] == "OK", result.steps
    assert result.model == tmp_path / "r" / "model.prepared.onnx"
    assert result.stages["export"]["verified"] is True
    assert result.feed["x"].shape == (2, 3, 16, 16)
    md = (tmp_path / "r/report.md").read_text()
    assert "## Export" in md and "## Prepare" in md
    cmd = optimize_command(settings)
    assert cmd[:3] == ["enginekit", "optimize", f"{models}:convnet"] and "--input" in cmd


def test_optimize_export_verification_failure_stops_before_backends(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from enginekit.settings import ExportSettings
    from enginekit.sources.shapes import parse_dynamic

    models = Path(__file__).parent / "export" / "models_for_export.py"
    result = optimize(OptimizeSettings(
        export=ExportSettings(source=f"{models}:branchy", output=tmp_path / "r" / "model.onnx", inputs=("x:2x4",),
                              dynamic=(parse_dynamic("x:0=batch[1..8]"),)),
        backends=("ort",), timing=FAST, report_dir=tmp_path / "r",
    ))
    steps = _steps(result)
    assert steps["export"] == "FAIL" and "does not match" in result.steps[0].reason
    assert steps["run ort"] == "SKIPPED" and steps["report"] == "OK"
    assert result.exit_code == EXIT_CHECK_FAILED


def test_failed_fp16_candidate_is_debugged_and_fixed_beside_it(tmp_path: Path) -> None:
    """A low-precision candidate that fails verification gets a precision plan and a fixed candidate row."""
    import sys

    import onnx

    sys.path.insert(0, str(Path(__file__).parent / "debug"))
    import fp16_models  # type: ignore[import-not-found]

    model, feed, culprits = fp16_models.attention_logits_overflow()
    path = tmp_path / "attn.onnx"
    onnx.save(model, str(path))
    inputs = tmp_path / "in.npz"
    np.savez(inputs, **feed)
    from enginekit.settings import FeedSettings

    result = optimize(OptimizeSettings(model=path, backends=("ort", "onnx-reference:fp16"),
                                       feeds=FeedSettings(load_inputs=inputs), timing=FAST, report_dir=tmp_path / "r"))
    steps = _steps(result)
    assert steps["compare"] == "FAIL" and steps["debug precision"] == "OK"
    rows = {c.row.label: c.row for c in result.candidates}
    assert rows["onnx-reference:fp16"].status == "failed"
    fixed = rows["onnx-reference:fp16+plan"]
    assert fixed.status == "ok", fixed.reason
    assert set(culprits) <= set(fixed.details["nodes"])
    assert fixed.details["fp32_nodes"] < fixed.details["naive_fp32_nodes"]
    assert fixed.comparison is not None and fixed.comparison.outputs[0].nan_count == 0
    from enginekit.graph.precision import load_plan

    plan = load_plan(tmp_path / "r" / "precision-onnx-reference-fp16" / "plan.json")
    assert [e.node for e in plan.keep_fp32] == fixed.details["nodes"]
    assert "onnx-reference:fp16+plan" in (tmp_path / "r" / "report.md").read_text()


def test_failed_int8_engine_candidate_gets_an_int8_plan(tmp_path: Path) -> None:
    """A TensorRT INT8 candidate that fails verification (only on a GPU machine) is debugged with its build's
    calibration data; the fixed Q/DQ model runs beside it in onnxruntime's CPU INT8 kernels."""
    import sys

    import onnx

    from enginekit.multirun import BackendRow, Candidate, use_runner
    from enginekit.pipeline import CandidateResult, fix_candidate
    from enginekit.settings import BuildSettings

    sys.path.insert(0, str(Path(__file__).parent / "debug"))
    import int8_models  # type: ignore[import-not-found]

    model, feed, culprits = int8_models.activation_outlier_channel()
    path = tmp_path / "outlier.onnx"
    onnx.save(model, str(path))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.concatenate([f["x"] for f in int8_models.calibration()]))
    settings = OptimizeSettings(model=path, report_dir=tmp_path / "r", timing=FAST,
                                builds=(BuildSettings(backend="tensorrt-rtx", precision="int8", calib_data=calib),))
    ref_row, ref_out = use_runner(Candidate("ort"), path, settings.backend, lambda r: r.infer(feed))
    ref_row.outputs = ref_out
    failed = CandidateResult(BackendRow("tensorrt-rtx", "int8", "failed", "outputs differ"))
    fixed = fix_candidate(failed, path, feed, ref_row, settings)
    assert fixed is not None and fixed.row.status == "ok", fixed.row.reason if fixed else None
    assert fixed.row.label == "ort:int8+plan" and fixed.row.details["nodes"] == culprits
    assert (tmp_path / "r" / "precision-tensorrt-rtx-int8" / "plan.json").is_file()
