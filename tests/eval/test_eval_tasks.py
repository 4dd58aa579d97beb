"""Task metrics on real models: PaddleOCR v4's recogniser (CTC) and detector (segmentation), FP32 vs FP16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from sklearn.metrics import jaccard_score
from tests.conftest import text_image_feed

from enginekit.eval.bootstrap import paired_bootstrap_ci
from enginekit.eval.ctc import (
    ctc_character_table_from_metadata,
    ctc_greedy_decode,
    ctc_sample_metrics,
    edit_distance,
    sequence_sample_metrics,
    sequences_to_text,
)
from enginekit.eval.segmentation import predicted_masks, segmentation_sample_metrics
from enginekit.graph.precision import convert_precision


def _session(model: onnx.ModelProto | Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def ocr_rec_model(ocr_det_model: Path) -> Path:
    path = ocr_det_model.parent / "ch_PP-OCRv4_rec_infer.onnx"
    assert path.is_file(), path
    return path


def text_line_feed() -> np.ndarray:
    """A real text line of scikit-image's scanned page (rows 14:40, "Region-based segmentation") as the v4
    recogniser's feed: gray → RGB, resized to 48x320 (bilinear), (x/255 - 0.5) / 0.5, [1, 3, 48, 320]."""
    from PIL import Image
    from skimage import data

    line = Image.fromarray(data.page()[14:40]).resize((320, 48), Image.Resampling.BILINEAR)
    x = (np.asarray(line, np.float32) / 255.0 - 0.5) / 0.5
    return np.repeat(x[None], 3, axis=0)[None].astype(np.float32)


# --- CTC / OCR ------------------------------------------------------------------------------------------------


def test_ctc_greedy_decode_collapses_repeats_and_drops_blank() -> None:
    best = np.array([[0, 3, 3, 0, 3, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0], [2, 2, 2, 2, 5, 5, 0, 5]])
    assert ctc_greedy_decode(best) == [[3, 3, 1], [], [2, 5, 5]]
    probs = np.eye(6)[best] * 0.9 + 0.01  # scores [N, T, C] decode like their argmax
    assert ctc_greedy_decode(probs) == [[3, 3, 1], [], [2, 5, 5]]
    assert ctc_greedy_decode(probs, blank=5) == [[0, 3, 0, 3, 1, 0], [0], [2, 0]]


def test_sequence_metrics_by_hand() -> None:
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3 and edit_distance("a", "a") == 0
    m = sequence_sample_metrics(["abc", "abd", "", "xy"], ["abc", "abc", "", "xyzw"])
    assert m["sequence_accuracy"].per_sample.tolist() == [True, False, True, False]
    assert m["sequence_accuracy"].value() == 0.5
    assert m["normalized_edit_distance"].per_sample.tolist() == pytest.approx([0, 1 / 3, 0, 2 / 4])
    assert m["char_error_rate"].value() == pytest.approx((0 + 1 + 0 + 2) / (3 + 3 + 0 + 4))  # corpus CER


def test_ctc_padded_label_array_and_agreement_form() -> None:
    probs = np.eye(4)[np.array([[1, 1, 0, 2], [3, 0, 3, 0]])]
    labels = np.array([[1, 2, -1], [3, 3, -1]])
    assert ctc_sample_metrics(probs, labels)["sequence_accuracy"].value() == 1.0
    assert ctc_sample_metrics(probs, probs[:, ::-1])["sequence_accuracy"].per_sample.tolist() == [False, True]


def test_paddleocr_v4_recogniser_reads_the_line_and_fp16_agrees(ocr_rec_model: Path) -> None:
    x = text_line_feed()
    sess32 = _session(ocr_rec_model)
    probs32 = sess32.run(None, {"x": x})[0]
    assert probs32.shape[0] == 1 and probs32.shape[2] == 6625
    assert np.allclose(probs32.sum(axis=2), 1.0, atol=1e-3)  # softmax [N, T, C]
    table = ctc_character_table_from_metadata(sess32.get_modelmeta().custom_metadata_map)
    assert table is not None and len(table) == probs32.shape[2]  # blank + 6623 characters + space
    seq32 = ctc_greedy_decode(probs32, blank=0)
    assert sequences_to_text(seq32, table) == ["Region-based segmentation"]

    model16 = convert_precision(onnx.load(ocr_rec_model), "fp16").model
    probs16 = _session(model16).run(None, {"x": x})[0]
    assert np.abs(probs16 - probs32).max() > 0  # FP16 really ran
    agree = ctc_sample_metrics(probs16, probs32)
    assert agree["sequence_accuracy"].value() == 1.0
    assert agree["char_error_rate"].value() == 0.0
    wrong = sequence_sample_metrics(["Region-based segmentatoin"], sequences_to_text(seq32, table))
    assert wrong["char_error_rate"].value() == pytest.approx(2 / 25)  # a transposition is two substitutions


# --- segmentation ---------------------------------------------------------------------------------------------


def test_segmentation_by_hand_and_against_scikit_learn() -> None:
    target = np.array([[[0, 0, 1, 1], [0, 2, 2, 1]]])
    pred = np.array([[[0, 1, 1, 1], [0, 2, 0, 1]]])
    m = segmentation_sample_metrics(pred, target)
    # class 0: I 2 U 4, class 1: I 3 U 4, class 2: I 1 U 2
    assert m["miou"].value() == pytest.approx((2 / 4 + 3 / 4 + 1 / 2) / 3)
    assert m["pixel_accuracy"].value() == pytest.approx(6 / 8)
    logits = np.eye(3)[pred].transpose(0, 3, 1, 2)  # [N, C, H, W] argmax → the same maps
    assert segmentation_sample_metrics(logits, target)["miou"].value() == pytest.approx(m["miou"].value())
    ignored = segmentation_sample_metrics(pred, np.where(target == 2, 255, target), ignore_index=255)
    assert ignored["pixel_accuracy"].value() == pytest.approx(5 / 6)
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, (5, 8, 8))
    p = np.where(rng.random((5, 8, 8)) < 0.7, t, rng.integers(0, 4, (5, 8, 8)))
    got = segmentation_sample_metrics(p, t)["miou"].value()
    assert got == pytest.approx(jaccard_score(t.ravel(), p.ravel(), average="macro"))


def test_segmentation_rows_are_per_image_so_the_bootstrap_resamples_images() -> None:
    t = np.zeros((2, 4, 4), dtype=np.int64)
    t[0, :2] = 1
    p = t.copy()
    p[1, 0, 0] = 1  # image 1: one false foreground pixel, no true foreground
    m = segmentation_sample_metrics(p, t)["miou"]
    assert m.per_sample.shape == (2, 2, 2)
    assert m.fn is not None and m.fn(m.per_sample[[0, 0]]) == 1.0  # image 0 twice: perfect
    assert m.fn(m.per_sample[[1, 1]]) == pytest.approx((15 / 16 + 0) / 2)  # class 1: union 1, intersection 0


def test_paddleocr_v4_detector_masks_fp16_agreement(ocr_det_model: Path) -> None:
    x = np.concatenate([text_image_feed()["x"], text_image_feed()["x"][:, :, :, ::-1]])  # the page and its mirror
    probs32 = _session(ocr_det_model).run(None, {"x": x})[0]
    probs16 = _session(convert_precision(onnx.load(ocr_det_model), "fp16").model).run(None, {"x": x})[0]
    ref_masks = predicted_masks(probs32, threshold=0.3)
    assert probs32.shape == (2, 1, 160, 384) and 0.1 < ref_masks.mean() < 0.3  # real text, ~19 % of pixels

    self_agree = segmentation_sample_metrics(probs32, ref_masks, threshold=0.3)
    assert {k: v.value() for k, v in self_agree.items()} == {"miou": 1.0, "pixel_accuracy": 1.0,
                                                             "foreground_iou": 1.0}
    cand = segmentation_sample_metrics(probs16, ref_masks, threshold=0.3)
    miou = cand["miou"].value()
    assert 0.99 < miou < 1.0  # FP16 flips a few pixels near the threshold, no more
    pred16 = predicted_masks(probs16, threshold=0.3)
    assert miou == pytest.approx(jaccard_score(ref_masks.ravel(), pred16.ravel(), average="macro"))
    assert cand["foreground_iou"].value() == pytest.approx(jaccard_score(ref_masks.ravel(), pred16.ravel()))

    boot = paired_bootstrap_ci(cand["miou"].per_sample, self_agree["miou"].per_sample, cand["miou"].fn, n=200)
    assert boot.reference.low == boot.reference.high == 1.0
    assert boot.difference.estimate == pytest.approx(miou - 1.0)
    assert boot.difference.low <= boot.difference.estimate <= boot.difference.high < 0  # both images differ
