"""optimize --task detection on PaddleOCR's real v4 text detector, fed real pages (scikit-image's scanned page at
three sizes), scored by pycocotools against COCO annotations, and without annotations by agreement with fp32.

The data and the decoding hook: ``coco_pages`` in tests/conftest.py. The hook returns boxes in model-input pixels;
enginekit scales them back to each image's own size before they meet the annotations.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import CocoPages

from enginekit.compare import CompareSettings, Tolerances
from enginekit.pipeline import optimize
from enginekit.pipeline.plan import plan_optimize
from enginekit.settings import TimingSettings
from enginekit.status import Status

FAST = TimingSettings(warmup_s=0.0, warmup_iterations=1, duration_s=0.01, iterations=3)
PRE = ["size=192,384", "mean=0.485,0.456,0.406", "std=0.229,0.224,0.225"]
def _optimize(model: Path, dataset: Path, tmp_path: Path, **kw: Any):  # type: ignore[no-untyped-def]
    settings = plan_optimize(model, backends=["ort", "ort:fp16"], dataset=dataset, report_dir=tmp_path / "rep",
                             task="detection", preprocess=PRE,
                             compare=CompareSettings(atol=Tolerances(0.05, default_given=True),
                                                     rtol=Tolerances(0.05, default_given=True)), **kw)
    return optimize(replace(settings, timing=FAST))


def _metrics(result: Any, label: str) -> dict[str, Any]:
    m = next(c for c in result.candidates if c.row.label == label).metrics
    assert m is not None
    return dict(m)


def test_detector_map_against_coco_annotations(ocr_det_model: Path, coco_pages: CocoPages,
                                               tmp_path: Path) -> None:
    images, coco, hook = coco_pages.images, coco_pages.annotations, coco_pages.hook
    result = _optimize(ocr_det_model, images, tmp_path, annotations=coco, postprocess=f"{hook}:boxes",
                       gates=["map50>=-2pp", "map>=-0.02"])
    assert result.passed, [(s.name, s.reason) for s in result.steps if s.status != "OK"]
    step = next(s for s in result.steps if s.name == "task metrics")
    assert "detection on 3 samples, against labels" in step.reason
    ref, fp16 = _metrics(result, "ort"), _metrics(result, "ort:fp16")
    # every line found at IoU .5 in all three sizes (so the boxes were scaled back right); tighter IoUs miss some
    assert ref["map50"] == pytest.approx(1.0) and 0.45 < ref["map"] < 0.9
    assert abs(fp16["map"] - ref["map"]) < 0.02 and fp16["samples"] == 3 and fp16["labels"] is True
    iv = fp16["intervals"]["map"]
    assert iv["low"] <= iv["difference"] <= iv["high"]
    assert [g["passed"] for g in fp16["gates"]] == [True, True]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| mAP | mAP@.5 |" in md and "| ort:fp16 | map |" in md


def test_a_failed_detection_gate_fails_the_run(ocr_det_model: Path, coco_pages: CocoPages,
                                               tmp_path: Path) -> None:
    images, coco, hook = coco_pages.images, coco_pages.annotations, coco_pages.hook
    result = _optimize(ocr_det_model, images, tmp_path, annotations=coco, postprocess=f"{hook}:boxes",
                       gates=["map>=abs:0.95"], limit=1)
    assert not result.passed and result.exit_code == 1
    rows = {c.row.label: c.row for c in result.candidates}
    assert all(r.status == Status.FAILED and "gate map>=abs:0.95 failed" in r.reason for r in rows.values()), \
        [(r.label, r.status, r.reason) for r in rows.values()]
    assert _metrics(result, "ort")["samples"] == 1


def test_detector_agreement_without_annotations(ocr_det_model: Path, coco_pages: CocoPages,
                                                tmp_path: Path) -> None:
    """A folder of images alone: fp16's boxes scored against fp32's (score >= --threshold) as ground truth."""
    from PIL import Image
    from skimage import data

    images, hook = coco_pages.images, coco_pages.hook
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for p in sorted(images.iterdir()):
        (folder / p.name).write_bytes(p.read_bytes())
    Image.fromarray(data.text()).save(folder / "sign.png")  # a photographed sign, 172x448
    result = _optimize(ocr_det_model, folder, tmp_path, postprocess=f"{hook}:boxes", gates=["map50>=-5pp"])
    assert result.passed, [(s.name, s.reason) for s in result.steps if s.status != "OK"]
    step = next(s for s in result.steps if s.name == "task metrics")
    assert "detection on 4 samples, against agreement with ort" in step.reason
    ref, fp16 = _metrics(result, "ort"), _metrics(result, "ort:fp16")
    assert ref["map"] == pytest.approx(1.0) and ref["labels"] is False
    assert 0.8 < fp16["map"] <= 1.0 and fp16["map50"] > 0.95


def test_detection_options_are_checked_before_anything_runs(ocr_det_model: Path, coco_pages: CocoPages,
                                                            tmp_path: Path) -> None:
    from enginekit.errors import InvalidArgumentError

    images, coco, hook = coco_pages.images, coco_pages.annotations, coco_pages.hook
    with pytest.raises(InvalidArgumentError, match="needs --postprocess"):
        plan_optimize(ocr_det_model, dataset=images, task="detection", report_dir=tmp_path / "x")
    with pytest.raises(InvalidArgumentError, match="--annotations pairs"):
        plan_optimize(ocr_det_model, dataset=images, annotations=coco, postprocess=f"{hook}:boxes",
                      task="segmentation", report_dir=tmp_path / "x")
    with pytest.raises(InvalidArgumentError, match="is not a file"):
        plan_optimize(ocr_det_model, dataset=images, annotations=tmp_path / "none.json", task="detection",
                      postprocess=f"{hook}:boxes", report_dir=tmp_path / "x")


def test_a_hook_with_the_wrong_box_format_is_named(ocr_det_model: Path, coco_pages: CocoPages,
                                                   tmp_path: Path) -> None:
    images, coco = coco_pages.images, coco_pages.annotations
    bad = tmp_path / "bad.py"
    bad.write_text("def boxes(outputs):\n    (prob,) = outputs.values()\n    return [[[0, 0, 1, 1]] for _ in prob]\n")
    result = _optimize(ocr_det_model, images, tmp_path, annotations=coco, postprocess=f"{bad}:boxes")
    assert not result.passed
    reasons = " ".join(c.row.reason for c in result.candidates)
    assert "Detections of sample 0" in reasons and "[N, 6]" in reasons


def test_progress_follows_reading_and_scoring(ocr_det_model: Path, coco_pages: CocoPages, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    settings = plan_optimize(ocr_det_model, backends=["ort"], dataset=coco_pages.images, batch_size=2,
                             annotations=coco_pages.annotations, postprocess=f"{coco_pages.hook}:boxes",
                             task="detection", preprocess=PRE, report_dir=tmp_path / "rep")
    result = optimize(replace(settings, timing=FAST), progress=lambda *a: seen.append(a))
    assert result.passed
    assert [s for s in seen if s[0] == "reading images"] == [("reading images", i, 3) for i in (1, 2, 3)]
    assert [s for s in seen if s[0] == "scoring ort"] == [("scoring ort", 1, 2), ("scoring ort", 2, 2)]
