"""`run_backends`: several backends, one reference, failures become rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from enginekit.compare import CompareSettings, parse_tolerances
from enginekit.data import InputShape
from enginekit.errors import EXIT_CHECK_FAILED, EXIT_OK, FeedError, InvalidArgumentError
from enginekit.multirun import run_backends
from enginekit.settings import FeedSettings, RunSettings


def test_three_backends_agree_on_a_real_trained_model(ocr_cls_model: Path) -> None:
    settings = RunSettings(
        model=ocr_cls_model,
        backends=("ort", "openvino", "onnx-reference"),
        feeds=FeedSettings(inputs=(InputShape("x", (2, 3, 48, 192)),), seed=3),
        compare=CompareSettings(atol=parse_tolerances(["1e-4"], 1e-5, "--atol")),
    )
    result = run_backends(settings)
    rows = {r.label: r for r in result.rows}
    assert rows["ort"].is_reference and result.reference == "ort"
    assert rows["openvino"].status == "ok", rows["openvino"].reason
    out = rows["openvino"].comparison
    assert out is not None
    (o,) = out.outputs
    assert o.shape_ref == (2, 2) and o.max_abs_err < 1e-4 and o.cosine > 0.999999
    # onnx.reference agrees too, thanks to the BatchNormalization momentum work-around
    assert rows["onnx-reference"].status == "ok", rows["onnx-reference"].reason


def test_reference_choice_and_failed_row(mlp_model: Path) -> None:
    settings = RunSettings(
        model=mlp_model,
        backends=("ort", "openvino"),
        reference="openvino",
        feeds=FeedSettings(inputs=(InputShape("x", (3, 4)),)),
        compare=CompareSettings(atol=parse_tolerances(["0"], 0, "--atol"), rtol=parse_tolerances(["0"], 0, "--rtol")),
    )
    result = run_backends(settings)
    assert result.reference == "openvino"
    assert [r.label for r in result.rows] == ["ort", "openvino"]  # order as given
    ort = result.rows[0]
    # With zero tolerances the two runtimes only pass if bit-identical; either way the verdict is consistent.
    assert ort.comparison is not None
    identical = ort.comparison.outputs[0].max_abs_err == 0
    assert (ort.status == "ok") == identical
    assert result.exit_code == (EXIT_OK if identical else EXIT_CHECK_FAILED)


def test_backend_error_becomes_a_row_and_others_still_run(contrib_model: Path) -> None:
    result = run_backends(RunSettings(model=contrib_model, backends=("onnx-reference", "ort", "openvino"),
                                      reference="ort"))
    rows = {r.label: r for r in result.rows}
    assert rows["onnx-reference"].status == "error"
    assert "FusedMatMul" in rows["onnx-reference"].reason
    assert rows["ort"].status == "ok" and rows["ort"].outputs is not None
    # FusedMatMul with alpha=2 against the identity: y = 2x
    np.testing.assert_allclose(rows["ort"].outputs["y"], 2 * result.feed["x"], rtol=1e-6)
    assert result.exit_code == EXIT_CHECK_FAILED
    d = result.to_dict()
    assert d["passed"] is False and {r["status"] for r in d["results"]} >= {"ok", "error"}


def test_failed_reference_marks_others_skipped(contrib_model: Path) -> None:
    result = run_backends(RunSettings(model=contrib_model, backends=("onnx-reference", "ort")))
    rows = {r.label: r for r in result.rows}
    assert rows["onnx-reference"].status == "error"
    assert rows["ort"].status == "skipped" and "reference" in rows["ort"].reason


def test_user_errors_are_raised_before_any_backend_runs(mlp_model: Path) -> None:
    with pytest.raises(FeedError, match="symbolic dim 'batch'"):
        run_backends(RunSettings(model=mlp_model, backends=("ort",)))
    with pytest.raises(InvalidArgumentError, match="not among the backends"):
        run_backends(RunSettings(model=mlp_model, backends=("ort",), reference="openvino"))
    with pytest.raises(InvalidArgumentError, match=r"--reference 'ort#3' is not among the backends given \(ort, ort#2"):
        run_backends(RunSettings(model=mlp_model, backends=("ort", "onnxruntime"), reference="ort#3",
                                 feeds=FeedSettings(inputs=(InputShape("x", (3, 4)),))))


def test_same_backend_twice_is_a_determinism_check(ocr_cls_model: Path) -> None:
    """`-b ort -b ort`: two runs of the same backend on the same feed, two rows, compared at zero tolerance."""
    zero = CompareSettings(atol=parse_tolerances(["0"], 0, "--atol"), rtol=parse_tolerances(["0"], 0, "--rtol"))
    result = run_backends(RunSettings(
        model=ocr_cls_model, backends=("ort", "onnxruntime", "openvino"), compare=zero,
        feeds=FeedSettings(inputs=(InputShape("x", (2, 3, 48, 192)),), seed=5),
    ))
    assert [r.label for r in result.rows] == ["ort", "ort#2", "openvino"]
    ort, ort2, _ = result.rows
    assert ort.is_reference and not ort2.is_reference and result.reference == "ort"
    assert ort.outputs is not None and ort2.outputs is not None and ort.outputs is not ort2.outputs
    assert ort2.status == "ok", ort2.reason  # onnxruntime on CPU is deterministic for this model
    assert ort2.comparison is not None and ort2.comparison.outputs[0].max_abs_err == 0.0
    assert [r["backend"] for r in result.to_dict()["results"]] == ["ort", "ort#2", "openvino"]
    assert result.outputs_of("ort#2") is ort2.outputs
    # the second one can be the reference
    again = run_backends(RunSettings(model=ocr_cls_model, backends=("ort", "ort"), reference="ort#2", compare=zero,
                                     feeds=FeedSettings(inputs=(InputShape("x", (1, 3, 48, 192)),))))
    assert again.reference == "ort#2" and [r.is_reference for r in again.rows] == [False, True]


def test_bench_still_refuses_a_backend_listed_twice() -> None:
    from enginekit.multirun import resolve_candidates

    with pytest.raises(InvalidArgumentError, match="listed twice"):
        resolve_candidates(["ort", "onnxruntime"], None, {})
    cands, ref = resolve_candidates(["ort", "ort:fp16", "ort"], "ort:fp16", {}, allow_repeats=True)
    assert [c.label for c in cands] == ["ort", "ort:fp16", "ort#2"] and ref.label == "ort:fp16"


def test_int_inputs_get_sensible_ranges(two_input_model: Path) -> None:
    result = run_backends(RunSettings(
        model=two_input_model, backends=("ort", "openvino"),
        feeds=FeedSettings(inputs=(InputShape("ids", (2, 16)), InputShape("mask", (2, 16)))),
    ))
    assert result.passed
    assert (result.feed["mask"] == 1).all()
    assert result.feed["ids"].min() >= 0 and result.feed["ids"].max() <= 100
    np.testing.assert_array_equal(result.rows[0].outputs["out"], result.feed["ids"].astype(np.float32))  # type: ignore[index]
