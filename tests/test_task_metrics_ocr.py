"""optimize --task segmentation|ctc on PaddleOCR's real v4 detector and recogniser, fed real text (scikit-image's
scanned page), without labels: the metrics are agreement with the FP32 reference's own masks and decoded text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.conftest import _rapidocr_models, text_image_feed

from enginekit.pipeline import optimize
from enginekit.pipeline.plan import plan_optimize
from enginekit.settings import TimingSettings

FAST = TimingSettings(warmup_s=0.0, warmup_iterations=1, duration_s=0.01, iterations=3)


def _optimize(model: Path, dataset: Path, tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from enginekit.compare import CompareSettings, Tolerances

    settings = plan_optimize(model, backends=["ort", "ort:fp16"], dataset=dataset, report_dir=tmp_path / "rep",
                             compare=CompareSettings(atol=Tolerances(0.05, default_given=True),
                                                     rtol=Tolerances(0.05, default_given=True)), **kw)  # type: ignore[arg-type]
    return optimize(replace(settings, timing=FAST))


def test_detector_masks_agree_under_fp16(ocr_det_model: Path, tmp_path: Path) -> None:
    page = text_image_feed()["x"]
    data = tmp_path / "pages.npz"
    np.savez(data, x=np.concatenate([page, page[..., ::-1]], axis=0))  # the page and its mirror image: no labels
    result = _optimize(ocr_det_model, data, tmp_path, task="segmentation", threshold=0.3, gates=["miou>=abs:0.98"])
    assert result.passed, [(s.name, s.reason) for s in result.steps if s.status != "OK"]
    step = next(s for s in result.steps if s.name == "task metrics")
    assert "agreement with ort" in step.reason and "segmentation on 2 samples" in step.reason
    fp16 = next(c for c in result.candidates if c.row.label == "ort:fp16").metrics
    ref = next(c for c in result.candidates if c.row.label == "ort").metrics
    assert fp16 is not None and ref is not None
    assert ref["miou"] == 1.0 and 0.98 <= fp16["miou"] < 1.0  # fp16 moves a few border pixels of the text masks
    iv = fp16["intervals"]["miou"]
    assert iv["low"] <= iv["difference"] < 0 and fp16["gates"][0]["passed"] is True


def test_recogniser_text_agrees_under_fp16(tmp_path: Path) -> None:
    from skimage import data, transform

    models = _rapidocr_models()
    if models is None:
        pytest.fail("rapidocr-onnxruntime is a test dependency: run `make test` (it installs it).")
    page = data.page().astype(np.float32) / 255.0
    lines = []
    for top in (14, 40, 66):  # three text lines of the scanned page, as PaddleOCR feeds its recogniser
        line = page[top:top + 26, :]
        width = min(320, int(round(line.shape[1] * 48 / line.shape[0])))
        canvas = np.ones((48, 320), np.float32)
        canvas[:, :width] = transform.resize(line, (48, width), anti_aliasing=True)
        lines.append((np.repeat(canvas[None], 3, 0) - 0.5) / 0.5)
    dataset = tmp_path / "lines.npz"
    np.savez(dataset, x=np.stack(lines).astype(np.float32))
    result = _optimize(models / "ch_PP-OCRv4_rec_infer.onnx", dataset, tmp_path, task="ctc",
                       gates=["sequence_accuracy>=abs:0.66", "char_error_rate<=0.05"])
    assert result.passed, [(s.name, s.reason) for s in result.steps if s.status != "OK"]
    fp16 = next(c for c in result.candidates if c.row.label == "ort:fp16").metrics
    assert fp16 is not None and fp16["samples"] == 3
    assert {"sequence_accuracy", "normalized_edit_distance", "char_error_rate"} <= set(fp16)
    assert [g["passed"] for g in fp16["gates"]] == [True, True]


def test_a_postprocess_hook_feeds_the_metrics(ocr_det_model: Path, tmp_path: Path) -> None:
    """The hook turns the detector's probability map into binary masks itself (as a user's decoder would)."""
    hook = tmp_path / "decode.py"
    hook.write_text("import numpy as np\n\ndef masks(outputs):\n"
                    "    (prob,) = outputs.values()\n    return (prob[:, 0] > 0.3).astype(np.int64)\n")
    page = text_image_feed()["x"]
    data = tmp_path / "pages.npz"
    np.savez(data, x=np.concatenate([page, page[..., ::-1]], axis=0))
    result = _optimize(ocr_det_model, data, tmp_path, task="segmentation", postprocess=f"{hook}:masks")
    assert result.passed
    fp16 = next(c for c in result.candidates if c.row.label == "ort:fp16").metrics
    assert fp16 is not None and 0.98 <= fp16["miou"] < 1.0
    from enginekit.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="does not exist"):
        plan_optimize(ocr_det_model, dataset=data, postprocess=f"{tmp_path}/nope.py:masks", report_dir=tmp_path / "x")


def test_detector_against_label_maps_from_a_mask_folder(ocr_det_model: Path, tmp_path: Path) -> None:
    """--dataset IMAGES --masks MASKS: three crops of the scanned page with their ink as the text class."""
    from PIL import Image
    from skimage import data

    page = data.page()
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i, (top, left) in enumerate(((0, 0), (64, 96), (95, 192))):
        crop = page[top:top + 96, left:left + 192]
        Image.fromarray(crop).save(images / f"p{i}.png")
        Image.fromarray((crop < 100).astype(np.uint8)).save(masks / f"p{i}.png")
    result = _optimize(ocr_det_model, images, tmp_path, task="segmentation", threshold=0.3, masks=masks,
                       preprocess=["size=96,192", "color=rgb", "scale=0.00392156862745098", "mean=0.485,0.456,0.406",
                                   "std=0.229,0.224,0.225"], gates=["miou>=-2pp"])
    assert result.passed, [(s.name, s.reason) for s in result.steps if s.status != "OK"]
    step = next(s for s in result.steps if s.name == "task metrics")
    assert "against labels" in step.reason and "segmentation on 3 samples" in step.reason
    ref = next(c for c in result.candidates if c.row.label == "ort").metrics
    fp16 = next(c for c in result.candidates if c.row.label == "ort:fp16").metrics
    assert ref is not None and fp16 is not None
    assert 0.3 < ref["miou"] < 1.0 and abs(fp16["miou"] - ref["miou"]) < 0.02  # text regions vs ink: real labels
    with pytest.raises(Exception, match="--masks pairs"):
        plan_optimize(ocr_det_model, dataset=images, masks=masks, task="ctc", report_dir=tmp_path / "x")


def test_a_plain_image_folder_is_judged_by_agreement(ocr_det_model: Path, tmp_path: Path) -> None:
    """--task segmentation on a folder of images without masks: label-free, fp16's masks vs fp32's."""
    from PIL import Image
    from skimage import data

    folder = tmp_path / "pages"
    folder.mkdir()
    page = data.page()
    for i, top in enumerate((0, 60)):
        Image.fromarray(page[top:top + 128, :256]).save(folder / f"crop{i}.png")
    result = _optimize(ocr_det_model, folder, tmp_path, task="segmentation", threshold=0.3,
                       preprocess=["size=128,256", "mean=0.485,0.456,0.406", "std=0.229,0.224,0.225"])
    assert result.passed, [(s.name, s.reason) for s in result.steps if s.status != "OK"]
    step = next(s for s in result.steps if s.name == "task metrics")
    assert "segmentation on 2 samples, against agreement with ort" in step.reason
    fp16 = next(c for c in result.candidates if c.row.label == "ort:fp16").metrics
    assert fp16 is not None and 0.97 <= fp16["miou"] <= 1.0
