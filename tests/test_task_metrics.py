"""optimize --dataset on the user's own data: an image folder of real PNGs (the digits test split written out),
preprocessing, --limit, metrics with paired bootstrap intervals against the reference, and --gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from enginekit.errors import InvalidArgumentError
from enginekit.examples import digits
from enginekit.pipeline import optimize
from enginekit.pipeline.plan import plan_optimize
from enginekit.settings import TimingSettings

Image = pytest.importorskip("PIL.Image")
FAST = TimingSettings(warmup_s=0.0, warmup_iterations=1, duration_s=0.01, iterations=3)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 360 test digits as 8x8 grey PNGs (raw 0..16 values) in ROOT/LABEL/ folders."""
    data = np.load(digits.test_data_path())
    root = tmp_path_factory.mktemp("digits") / "images"
    for i, (x, y) in enumerate(zip(data["x"], data["labels"], strict=True)):
        folder = root / str(int(y))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(x[0] * 16).astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")
    return root


def _run(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    settings = plan_optimize(None, backends=["ort", "openvino"], report_dir=tmp_path / "rep", **kw)  # type: ignore[arg-type]
    return optimize(replace(settings, timing=FAST))


def test_image_folder_metrics_with_intervals_and_a_passing_gate(image_folder: Path, tmp_path: Path) -> None:
    result = _run(tmp_path, dataset=image_folder, preprocess=["scale=0.0625"], limit=120,
                  gates=["accuracy>=-0.5pp", "macro_recall>=-1%"])
    assert result.passed, [s.reason for s in result.steps]
    rows = {c.row.label: c for c in result.candidates}
    ref, ov = rows["ort"].metrics, rows["openvino"].metrics
    assert ref is not None and ov is not None
    assert ref["samples"] == 120 and ref["labels"] is True
    assert ref["accuracy"] == pytest.approx(ov["accuracy"]) and ref["accuracy"] > 0.95
    iv = ov["intervals"]["accuracy"]
    assert iv["low"] <= iv["difference"] <= iv["high"] and iv["level"] == 0.95
    assert [g["passed"] for g in ov["gates"]] == [True, True]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Task metrics against the reference" in md and "accuracy>=-0.5pp" in md


def test_a_failed_gate_fails_the_candidate_and_the_run(image_folder: Path, tmp_path: Path) -> None:
    result = _run(tmp_path, dataset=image_folder, preprocess=["scale=0.0625"], limit=60,
                  gates=["accuracy>=abs:0.9999"])
    assert not result.passed and result.exit_code == 1
    ov = next(c.row for c in result.candidates if c.row.label == "openvino")
    assert ov.status == "failed" and "gate accuracy>=abs:0.9999 failed: value" in ov.reason
    step = next(s for s in result.steps if s.name == "task metrics")
    assert step.status == "FAIL" and "openvino" in step.reason
    ref = next(c.row for c in result.candidates if c.row.label == "ort")
    assert ref.status == "failed" and "gate accuracy>=abs:0.9999" in ref.reason  # abs gates judge the reference too


def test_limit_applies_to_npz_datasets(tmp_path: Path) -> None:
    result = _run(tmp_path, limit=50)  # the bundled example and its .npz test split
    assert all((c.metrics or {}).get("samples") == 50 for c in result.candidates if c.metrics)


@pytest.mark.parametrize("kw, words", [
    ({"gates": ["accuracy>-1"]}, "apply to --dataset"),
    ({"dataset": Path("d.npz"), "gates": ["accuracy>-1"]}, ">= or <="),
    ({"dataset": Path("d.npz"), "preprocess": ["scale=1"]}, "not to an .npz"),
    ({"dataset": Path("d.npz"), "limit": -1}, "--limit"),
])
def test_bad_evaluation_options_are_user_errors(kw: dict[str, object], words: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        plan_optimize("m.onnx", report_dir=tmp_path / "r", **kw)  # type: ignore[arg-type]


def test_a_dataset_without_labels_is_judged_by_agreement(tmp_path: Path) -> None:
    data = np.load(digits.test_data_path())
    unlabeled = tmp_path / "digits_x.npz"
    np.savez(unlabeled, x=data["x"][:64])
    result = _run(tmp_path, dataset=unlabeled, gates=["top1_agreement>=abs:0.99"])
    assert result.passed, [(s.name, s.reason) for s in result.steps]
    ov = next(c for c in result.candidates if c.row.label == "openvino").metrics
    assert ov is not None and ov["labels"] is False and ov["top1_agreement"] == 1.0
    step = next(s for s in result.steps if s.name == "task metrics")
    assert "agreement with ort" in step.reason


@pytest.mark.parametrize("gates", [[], ["accuracy>=-1pp"]])
def test_without_scikit_learn_metrics_skip_and_gates_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          gates: list[str]) -> None:
    """No metric without its library: the task metrics step is skipped naming the package, but a gate that cannot
    be judged fails the run (never a silent pass)."""
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)
    settings = plan_optimize(None, backends=["ort"], report_dir=tmp_path / "rep", gates=gates,
                             dataset=digits.test_data_path())
    from dataclasses import replace

    result = optimize(replace(settings, timing=FAST))
    step = next(s for s in result.steps if s.name == "task metrics")
    assert "scikit-learn" in step.reason and "enginekit[metrics]" in step.reason
    assert next(s for s in result.steps if s.name == "run ort").status == "OK"
    if gates:
        assert step.status == "FAIL" and not result.passed and result.exit_code == 1
    else:
        assert step.status == "SKIPPED" and result.passed
