"""Detection mAP (pycocotools) and its per-image bootstrap rows."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enginekit.errors import FeedError
from enginekit.eval.bootstrap import paired_bootstrap_ci
from enginekit.eval.detection import (
    coco_summary,
    detection_agreement_sample_metrics,
    detection_sample_metrics,
    detections_as_ground_truth,
    per_image_detections,
)

GT: dict[str, Any] = {
    "images": [{"id": 1}, {"id": 2}],
    "categories": [{"id": 7, "name": "text"}],
    "annotations": [
        {"image_id": 1, "bbox": [10, 10, 50, 20], "category_id": 7},
        {"image_id": 1, "bbox": [10, 40, 80, 20], "category_id": 7},
        {"image_id": 2, "bbox": [5, 5, 30, 30], "category_id": 7},
    ],
}


def _perfect(gt: dict[str, Any]) -> list[tuple[int, list[float], float, int]]:
    return [(a["image_id"], a["bbox"], 0.9 - 0.1 * i, a["category_id"]) for i, a in enumerate(gt["annotations"])]


def test_perfect_predictions_give_map_1(tmp_path: Path) -> None:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(GT))
    m = detection_sample_metrics(_perfect(GT), path)
    assert m["map"].value() == 1.0 and m["map50"].value() == 1.0
    assert len(m["map"]) == 2  # one row per image


def test_one_missing_box_gives_the_hand_computed_value() -> None:
    dets = _perfect(GT)[:2]  # image 2's box is never found: recall 2/3 at precision 1
    expected = 67 / 101  # COCO's 101 recall points 0.00 .. 0.66 reach precision 1, the rest 0
    m = detection_sample_metrics(dets, GT)
    assert m["map"].value() == pytest.approx(expected) and m["map50"].value() == pytest.approx(expected)
    summary = coco_summary(dets, GT)
    assert summary["map"] == pytest.approx(expected) and summary["map50"] == pytest.approx(expected)


def _scene(seed: int, images: int = 12) -> tuple[dict[str, Any], list[tuple[int, list[float], float, int]]]:
    rng = np.random.default_rng(seed)
    anns, dets = [], []
    for img in range(1, images + 1):
        for _ in range(rng.integers(0, 5)):
            x, y, w, h = rng.uniform(0, 200), rng.uniform(0, 200), rng.uniform(8, 80), rng.uniform(8, 80)
            cat = int(rng.integers(1, 4))
            anns.append({"image_id": img, "bbox": [x, y, w, h], "category_id": cat})
            if rng.random() < 0.8:  # found, jittered
                jit = rng.normal(0, 0.08, 4) * [w, h, w, h]
                dets.append((img, [x + jit[0], y + jit[1], w + jit[2], h + jit[3]], float(rng.random()), cat))
        for _ in range(rng.integers(0, 3)):  # false positives
            dets.append((img, [*rng.uniform(0, 200, 2), *rng.uniform(8, 80, 2)], float(rng.random()),
                         int(rng.integers(1, 4))))
    gt = {"images": [{"id": i} for i in range(1, images + 1)], "annotations": anns,
          "categories": [{"id": c} for c in (1, 2, 3)]}
    return gt, dets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_reproduce_cocoeval_on_all_images(seed: int) -> None:
    gt, dets = _scene(seed)
    m = detection_sample_metrics(dets, gt)
    summary = coco_summary(dets, gt)
    assert 0.05 < summary["map"] < 0.95  # a non-trivial case
    assert m["map"].value() == pytest.approx(summary["map"], abs=1e-12)
    assert m["map50"].value() == pytest.approx(summary["map50"], abs=1e-12)


def test_resampled_rows_equal_cocoeval_on_the_resampled_images() -> None:
    gt, dets = _scene(3, images=6)
    m = detection_sample_metrics(dets, gt)
    draw = [0, 0, 0, 2, 3, 3]  # image ids 1 (three times), 3, 4 (twice)
    # the same draw as a real dataset: every copy of an image becomes a new image with its boxes and detections
    ids = [i + 1 for i in draw]
    new_gt: dict[str, Any] = {"images": [], "annotations": [], "categories": gt["categories"]}
    new_dets = []
    for copy, img in enumerate(ids):
        nid = 100 + copy
        new_gt["images"].append({"id": nid})
        new_gt["annotations"] += [{**a, "image_id": nid} for a in gt["annotations"] if a["image_id"] == img]
        new_dets += [(nid, b, s, c) for i, b, s, c in dets if i == img]
    want = coco_summary(new_dets, new_gt)
    rows = m["map"].per_sample[draw]
    assert m["map"].fn is not None and m["map50"].fn is not None
    assert m["map"].fn(rows) == pytest.approx(want["map"], abs=1e-12)
    assert m["map50"].fn(rows) == pytest.approx(want["map50"], abs=1e-12)


def test_agreement_with_the_reference_and_a_fast_bootstrap() -> None:
    gt, ref = _scene(4, images=60)
    rng = np.random.default_rng(0)
    cand = [(i, [v + rng.normal(0, 1.5) for v in b], s, c) for i, b, s, c in ref]  # a candidate's boxes move
    ids = [im["id"] for im in gt["images"]]
    pseudo = detections_as_ground_truth(ref, ids, score_threshold=0.3)
    assert len(pseudo["annotations"]) == sum(1 for d in ref if d[2] >= 0.3)
    ref_side = detection_agreement_sample_metrics(ref, ref, ids, score_threshold=0.3)
    cand_side = detection_agreement_sample_metrics(cand, ref, ids, score_threshold=0.3)
    assert ref_side["map"].value() == 1.0
    assert 0.3 < cand_side["map"].value() < 1.0 and cand_side["map50"].value() > cand_side["map"].value()
    start = time.perf_counter()
    boot = paired_bootstrap_ci(cand_side["map"].per_sample, ref_side["map"].per_sample, cand_side["map"].fn, n=1000)
    assert time.perf_counter() - start < 60
    assert boot.reference.low == boot.reference.high == 1.0
    assert boot.difference.low <= boot.difference.estimate <= boot.difference.high < 0


def test_detections_on_unknown_images_are_refused() -> None:
    with pytest.raises(FeedError, match="missing from the ground truth"):
        detection_sample_metrics([(99, [0, 0, 1, 1], 0.5, 7)], GT)


def test_per_image_hook_output_becomes_flat_detections() -> None:
    per_image = [[([10, 10, 50, 20], 0.9, 7), ([10, 40, 80, 20], 0.8, 7)], [([5, 5, 30, 30], 0.7, 7)]]
    flat = per_image_detections(per_image, image_ids=[1, 2])
    assert [d[0] for d in flat] == [1, 1, 2]
    assert detection_sample_metrics(flat, GT)["map"].value() == 1.0


# COCOeval's accumulate written per category, as readable as pycocotools' own: the vectorised _accumulate must
# give the same numbers on any resample
def _precision(table: Any, counts: np.ndarray) -> np.ndarray:
    """COCO's interpolated precision [K valid, T, R] of the images drawn ``counts`` times each."""
    out = []
    for k in range(table.npig.shape[1]):
        npig = int(counts @ table.npig[:, k])
        if npig == 0:  # COCOeval leaves out a category without ground truth in the drawn images
            continue
        mine = table.category == k
        w = counts[table.image[mine]]
        keep = w > 0
        w = w[keep].astype(np.float64)
        tp = np.cumsum(table.tp[:, mine][:, keep] * w, axis=1)
        fp = np.cumsum(table.fp[:, mine][:, keep] * w, axis=1)
        q = np.zeros((tp.shape[0], np.linspace(0.0, 1.0, 101).shape[0]))
        nd = tp.shape[1]
        if nd:
            rc = tp / npig
            pr = tp / (fp + tp + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            for t in range(tp.shape[0]):
                inds = np.searchsorted(rc[t], np.linspace(0.0, 1.0, 101), side="left")
                ok = inds < nd
                q[t, ok] = pr[t, inds[ok]]
        out.append(q)
    if not out:
        return np.zeros((0, 0, 0))
    return np.stack(out)


def test_the_vectorised_accumulation_equals_the_per_category_one() -> None:
    from enginekit.eval.detection import _accumulate

    rng = np.random.default_rng(3)
    gt: dict[str, Any] = {"images": [{"id": i} for i in range(60)], "categories": [{"id": c} for c in range(7)],
                          "annotations": []}
    dets = []
    for i in range(60):
        for _ in range(int(rng.integers(0, 5))):
            c, (x, y), (w, h) = int(rng.integers(0, 7)), rng.uniform(0, 200, 2), rng.uniform(5, 60, 2)
            gt["annotations"].append({"image_id": i, "category_id": c, "bbox": [x, y, w, h],
                                      "iscrowd": int(rng.uniform() < 0.05)})
            if rng.uniform() < 0.8:  # some boxes missed, some found loosely, some false alarms
                dets.append((i, [x + rng.normal(0, 4), y + rng.normal(0, 4), w, h], float(rng.uniform()), c))
        if rng.uniform() < 0.3:
            dets.append((i, [10.0, 10.0, 20.0, 20.0], float(rng.uniform()), int(rng.integers(0, 7))))
    table = detection_sample_metrics(dets, gt)["map"].per_sample[0].table
    for _ in range(40):
        counts = np.bincount(rng.integers(0, 60, 60), minlength=60)
        prec = _precision(table, counts)
        want = (prec.mean(), prec[:, 0].mean()) if prec.size else (np.nan, np.nan)
        assert _accumulate(table, counts) == pytest.approx(want, abs=1e-12, nan_ok=True)
