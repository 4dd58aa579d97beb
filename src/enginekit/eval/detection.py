"""Object detection metrics: COCO mAP@[.5:.95] and mAP@.5 by pycocotools, with image-level bootstrap rows.

Detections are ``(image_id, [x, y, w, h], score, category_id)`` (COCO's box convention: top-left corner, width,
height, in pixels), or COCO result dicts (``image_id``, ``bbox``, ``score``, ``category_id``). Ground truth is a
COCO-format dict or JSON file (``images``, ``annotations`` with ``bbox`` and ``category_id``, ``categories``);
``area`` (default w*h), ``iscrowd`` (default 0) and ``id`` are filled in when missing.

pycocotools' ``COCOeval`` matches detections to ground truth image by image (``evaluate``); its ``accumulate``
then pools the matches of all images per category into precision/recall curves. :func:`detection_sample_metrics`
runs ``evaluate`` once and keeps each image's matches (area "all", at most 100 detections per image) as that
image's row; the metric functions re-do ``accumulate`` on any multiset of rows (COCO's 101-point interpolated
precision, categories without ground truth left out), so the paired bootstrap resamples images exactly as if the
drawn images (with repeats) had been evaluated, in milliseconds instead of one ``COCOeval`` per resample. On all
images the values equal ``COCOeval.summarize``'s first two numbers (tested); images without any ground truth have
no value (NaN, where COCOeval says -1), so the bootstrap leaves such a resample out.

A post-processing hook's per-image boxes (x1, y1, x2, y2 in model-input pixels) become COCO detections in each
image's own pixels through :func:`decode_detections`.

Names (higher is better): ``map`` (mAP@[.5:.95]) and ``map50`` (mAP@.5). Without labels, ground truth is the
reference's detections with a score of at least ``score_threshold`` (:func:`detections_as_ground_truth`); the
reference's own side is the same call with the reference's detections (1.0 up to ties).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.deps import require
from enginekit.errors import FeedError
from enginekit.eval.bootstrap import SampleMetric

Detection = tuple[int, Sequence[float], float, int]  # (image_id, [x, y, w, h], score, category_id)
MAX_DETS = 100  # COCO's per-image cap for the reported mAP
_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


def _quiet() -> contextlib.AbstractContextManager[Any]:
    return contextlib.redirect_stdout(io.StringIO())  # pycocotools prints progress


def load_ground_truth(source: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A COCO-format ground truth (dict or JSON file) with ``area``, ``iscrowd`` and ``id`` filled in."""
    if isinstance(source, (str, Path)):
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FeedError(f"Cannot read COCO ground truth {str(source)!r}: {exc}") from exc
    else:
        data = dict(source)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise FeedError("COCO ground truth needs an 'images' list (and 'annotations', 'categories').")
    images = [dict(im) for im in _dicts(data["images"], "images")]
    image_ids = [_whole(im, "id", "image") for im in images]
    if len(set(image_ids)) != len(image_ids):
        dup = sorted(i for i, n in Counter(image_ids).items() if n > 1)
        raise FeedError(f"COCO images share ids {dup[:5]}; each image needs its own id.")
    raw = data.get("annotations", [])
    anns = [dict(a) for a in _dicts([] if raw is None else raw, "annotations")]
    given = [_whole(a, "id", "annotation") for a in anns if "id" in a]
    if len(set(given)) != len(given):
        dup = sorted(i for i, n in Counter(given).items() if n > 1)
        raise FeedError(f"COCO annotations share ids {dup[:5]}; each annotation needs its own id.")
    next_id = max(given, default=0) + 1
    for i, a in enumerate(anns, start=1):
        if "bbox" not in a or "image_id" not in a or "category_id" not in a:
            raise FeedError(f"COCO annotation {i} lacks 'bbox', 'image_id' or 'category_id': {a!r}.")
        _whole(a, "image_id", f"annotation {i}")
        _whole(a, "category_id", f"annotation {i}")
        box = a["bbox"]
        if not isinstance(box, (list, tuple)) or len(box) != 4 \
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            raise FeedError(f"COCO annotation {i}: 'bbox' must be 4 numbers [x, y, w, h], got {box!r}.")
        x, y, w, h = (float(v) for v in box)
        a["bbox"] = [x, y, w, h]
        a.setdefault("area", w * h)
        a.setdefault("iscrowd", 0)
        if "id" not in a:
            a["id"], next_id = next_id, next_id + 1
    cats = data.get("categories") or [{"id": c} for c in sorted({a["category_id"] for a in anns})]
    cats = [dict(c) for c in _dicts(cats, "categories")]
    for c in cats:
        _whole(c, "id", "category")
    return {"images": images, "annotations": anns, "categories": cats}


def _dicts(value: Any, key: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise FeedError(f"COCO ground truth: '{key}' must be a list of objects, got {str(value)[:80]!r}.")
    return value


def _whole(item: Mapping[str, Any], key: str, what: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FeedError(f"COCO ground truth: {what} {key!r} must be an integer, got {value!r}.")
    return value


def ground_truth_boxes(ground_truth: Mapping[str, Any]) -> int:
    """The boxes mAP is computed against: annotations that are not crowd regions."""
    return sum(1 for a in ground_truth.get("annotations", []) if not a.get("iscrowd"))


def _as_records(detections: Iterable[Detection | Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, det in enumerate(detections, start=1):
        if isinstance(det, Mapping):
            image_id, box, score, cat = det["image_id"], det["bbox"], det["score"], det["category_id"]
        else:
            image_id, box, score, cat = det
        x, y, w, h = (float(v) for v in box)
        out.append({"id": i, "image_id": int(image_id), "bbox": [x, y, w, h], "score": float(score),
                    "category_id": int(cat), "area": w * h, "iscrowd": 0})
    return out


def per_image_detections(predictions: Sequence[Iterable[tuple[Sequence[float], float, int]]],
                         image_ids: Sequence[int] | None = None) -> list[Detection]:
    """Flat detections from one list per sample of ``(box xywh, score, category_id)`` (a post-processing hook's
    output); sample i is image ``image_ids[i]`` (default: i)."""
    if image_ids is not None and len(image_ids) != len(predictions):
        raise FeedError(f"{len(predictions)} samples of detections for {len(image_ids)} image ids.")
    out: list[Detection] = []
    for i, dets in enumerate(predictions):
        image_id = i if image_ids is None else int(image_ids[i])
        out.extend((image_id, box, float(score), int(cat)) for box, score, cat in dets)
    return out


def detections_as_ground_truth(detections: Iterable[Detection | Mapping[str, Any]], image_ids: Iterable[int],
                               score_threshold: float = 0.5) -> dict[str, Any]:
    """COCO ground truth from (the reference's) detections scoring at least ``score_threshold``, over
    ``image_ids`` (every evaluated image, also those without a detection)."""
    records = _as_records(detections)
    kept = [{k: v for k, v in r.items() if k != "score"} for r in records if r["score"] >= score_threshold]
    cats = sorted({r["category_id"] for r in records})
    return {"images": [{"id": int(i)} for i in image_ids], "annotations": kept,
            "categories": [{"id": c} for c in cats]}


def _cocoeval(detections: Iterable[Detection | Mapping[str, Any]], ground_truth: Mapping[str, Any] | str | Path) -> Any:
    require("pycocotools", purpose="detection mAP")
    coco_api = importlib.import_module("pycocotools.coco")  # untyped: through importlib, results are Any
    cocoeval_api = importlib.import_module("pycocotools.cocoeval")

    gt_data = load_ground_truth(ground_truth)
    records = _as_records(detections)
    image_ids = {int(im["id"]) for im in gt_data["images"]}
    if not image_ids:
        raise FeedError("The COCO ground truth has no images.")
    unknown = sorted({r["image_id"] for r in records} - image_ids)
    if unknown:
        raise FeedError(f"Detections name images missing from the ground truth: {unknown[:5]}.")
    with _quiet():
        gt = coco_api.COCO()
        gt.dataset = gt_data
        gt.createIndex()
        dt = coco_api.COCO()
        dt.dataset = {"images": gt_data["images"], "categories": gt_data["categories"], "annotations": records}
        dt.createIndex()
        ev = cocoeval_api.COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
    return ev


def coco_summary(detections: Iterable[Detection | Mapping[str, Any]],
                 ground_truth: Mapping[str, Any] | str | Path) -> dict[str, float]:
    """pycocotools' own 12 summary numbers (``COCOeval.summarize``) by name: map, map50, map75, map_small, ...
    (-1 where there is no ground truth)."""
    ev = _cocoeval(detections, ground_truth)
    with _quiet():
        ev.accumulate()
        ev.summarize()
    names = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "mar1", "mar10", "mar100",
             "mar_small", "mar_medium", "mar_large")
    return {n: float(v) for n, v in zip(names, ev.stats, strict=True)}


# --- per-image rows and their accumulation -------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """One side's matches in COCO's accumulation order (per category: image order, then score, mergesort)."""

    images: int
    npig: np.ndarray  # [images, K] non-ignored ground truth boxes
    # every category's detections end to end: category order, then COCO's accumulation order within it
    image: np.ndarray  # [D] the detection's image index
    category: np.ndarray  # [D] the detection's category index
    tp: np.ndarray  # [T, D] matched and not ignored
    fp: np.ndarray  # [T, D] unmatched and not ignored
    # (map, map50) by the drawn images' counts: map and map50 of a bootstrap see the same resamples (same seed)
    cache: dict[bytes, tuple[float, float]] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class ImageRow:
    """A per-sample row of a detection metric: image ``index`` of a side's match ``table``."""

    table: _Table
    index: int


def _table(ev: Any) -> _Table:
    p = ev.params
    n_img, n_area, n_iou = len(p.imgIds), len(p.areaRng), len(p.iouThrs)
    image, category, tp, fp = [], [], [], []
    npig = np.zeros((n_img, len(p.catIds)), dtype=np.int64)
    for k in range(len(p.catIds)):
        idx, scores, matched, ignored = [], [], [], []
        for i in range(n_img):
            e = ev.evalImgs[k * n_area * n_img + i]  # area range 0 is "all"; maxDets[-1] (100) already applied
            if e is None:
                continue
            npig[i, k] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            d = len(e["dtScores"][:MAX_DETS])
            idx.append(np.full(d, i, dtype=np.int64))
            scores.append(np.asarray(e["dtScores"][:MAX_DETS], dtype=np.float64))
            matched.append(np.asarray(e["dtMatches"][:, :MAX_DETS]).reshape(n_iou, d) > 0)
            ignored.append(np.asarray(e["dtIgnore"][:, :MAX_DETS]).reshape(n_iou, d).astype(bool))
        if idx:
            order = np.argsort(-np.concatenate(scores), kind="mergesort")
            m = np.concatenate(matched, axis=1)[:, order]
            ig = np.concatenate(ignored, axis=1)[:, order]
            image.append(np.concatenate(idx)[order])
            category.append(np.full(order.shape[0], k, dtype=np.int64))
            tp.append(m & ~ig)
            fp.append(~m & ~ig)
    if not image:
        return _Table(n_img, npig, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((n_iou, 0), bool),
                      np.zeros((n_iou, 0), bool))
    return _Table(n_img, npig, np.concatenate(image), np.concatenate(category), np.concatenate(tp, axis=1),
                  np.concatenate(fp, axis=1))


_CACHE_ENTRIES = 4096


def _summary(rows: np.ndarray) -> tuple[float, float]:
    """(mAP@[.5:.95], mAP@.5) of the images in ``rows`` (with repeats); NaN when they hold no ground truth."""
    if rows.shape[0] == 0:
        raise FeedError("Detection metrics need at least one image.")
    table: _Table = rows[0].table
    counts = np.bincount(np.fromiter((r.index for r in rows), dtype=np.int64, count=rows.shape[0]),
                         minlength=table.images)
    key = counts.tobytes()
    if key not in table.cache:
        if len(table.cache) >= _CACHE_ENTRIES:
            table.cache.clear()
        table.cache[key] = _accumulate(table, counts)
    return table.cache[key]


def _accumulate(table: _Table, counts: np.ndarray) -> tuple[float, float]:
    """(mAP@[.5:.95], mAP@.5) of the images drawn ``counts`` times each: COCOeval's accumulate for all categories at
    once. Categories become segments of one array; per-segment cumulative sums subtract the sum before the
    segment, the precision envelope (a suffix maximum) runs on values shifted down by 2 per segment so a later
    segment never reaches into an earlier one (a rounding of ~1e-14), and each detection adds its precision once per
    recall threshold it is the first to reach. Equal to COCOeval (tested)."""
    npig = counts @ table.npig  # [K] non-ignored ground truth of the drawn images
    valid = npig > 0  # COCOeval leaves out categories without ground truth
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        return (np.nan, np.nan)
    w = counts[table.image].astype(np.float64)
    keep = (w > 0) & valid[table.category]
    n_t, n_r = table.tp.shape[0], _RECALL_THRESHOLDS.shape[0]
    if not keep.any():  # valid categories without a drawn detection: precision 0 everywhere
        return (0.0, 0.0)
    w, cat = w[keep], table.category[keep]
    tp = np.cumsum(table.tp[:, keep] * w, axis=1)
    fp = np.cumsum(table.fp[:, keep] * w, axis=1)
    starts = np.flatnonzero(np.r_[True, cat[1:] != cat[:-1]])  # first element of each segment
    seg = np.repeat(np.arange(starts.shape[0]), np.diff(np.r_[starts, cat.shape[0]]))  # segment ordinal of each element
    before_tp = np.where(starts > 0, tp[:, np.maximum(starts - 1, 0)], 0.0)  # [T, S] cumulative sum before it
    before_fp = np.where(starts > 0, fp[:, np.maximum(starts - 1, 0)], 0.0)
    tp -= before_tp[:, seg]
    fp -= before_fp[:, seg]
    rc = tp / npig[cat]
    pr = tp / (fp + tp + np.spacing(1))
    shift = 2.0 * seg
    pr = np.maximum.accumulate((pr - shift)[:, ::-1], axis=1)[:, ::-1] + shift
    # COCO takes, for threshold r, the precision at the first detection whose recall reaches r: detection j answers
    # the thresholds in (recall of j-1, recall of j] (from its segment's start on), and unanswered ones count 0
    upto = np.searchsorted(_RECALL_THRESHOLDS, rc, side="right")  # [T, D] thresholds <= each recall
    before = np.zeros_like(upto)
    before[:, 1:] = upto[:, :-1]
    before[:, starts] = 0
    found = (pr * (upto - before)).sum(axis=1)  # [T]
    return (float(found.sum()) / (n_valid * n_t * n_r), float(found[0]) / (n_valid * n_r))


def coco_map(rows: np.ndarray) -> float:
    """mAP@[.5:.95] of per-image rows (module doc); NaN when the images hold no ground truth (COCOeval says -1: a
    bootstrap resample that drew only such images has no value, rather than a perfect difference of 0)."""
    return _summary(rows)[0]


def coco_map50(rows: np.ndarray) -> float:
    """mAP@.5 of per-image rows (module doc); NaN when the images hold no ground truth (see coco_map)."""
    return _summary(rows)[1]


def detection_sample_metrics(detections: Iterable[Detection | Mapping[str, Any]],
                             ground_truth: Mapping[str, Any] | str | Path) -> dict[str, SampleMetric]:
    """``map`` and ``map50`` as per-image rows (one per ground-truth image, in image id order) and the functions
    that accumulate them (module doc)."""
    table = _table(_cocoeval(detections, ground_truth))
    rows = np.empty(table.images, dtype=object)
    for i in range(table.images):
        rows[i] = ImageRow(table, i)
    return {"map": SampleMetric(rows, coco_map), "map50": SampleMetric(rows, coco_map50)}


def detection_agreement_sample_metrics(candidate: Iterable[Detection | Mapping[str, Any]],
                                       reference: Iterable[Detection | Mapping[str, Any]], image_ids: Iterable[int],
                                       score_threshold: float = 0.5) -> dict[str, SampleMetric]:
    """Agreement without labels: the candidate's mAP against the reference's detections scoring at least
    ``score_threshold`` as ground truth. The reference side: ``detection_agreement_sample_metrics(ref, ref, ...)``."""
    gt = detections_as_ground_truth(reference, image_ids, score_threshold)
    return detection_sample_metrics(candidate, gt)


# --- a post-processing hook's boxes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections (COCO boxes in the image's own pixels); an image without any is an empty tuple."""

    image_id: int
    detections: tuple[Detection, ...]


def _image_boxes(pred: Any, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [N, 4] x1,y1,x2,y2, scores [N], labels [N]) of one image's hook output."""
    try:
        if isinstance(pred, Mapping):
            missing = [k for k in ("boxes", "scores", "labels") if k not in pred]
            if missing:
                raise FeedError(f"its dict lacks {', '.join(missing)}")
            boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4)
            scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
            labels = np.asarray(pred["labels"], dtype=np.float64).reshape(-1)
        else:
            arr = np.asarray(pred, dtype=np.float64)
            if arr.size == 0:
                arr = arr.reshape(0, 6)
            if arr.ndim != 2 or arr.shape[1] != 6:
                raise FeedError(f"an array of shape {list(arr.shape)}, not [N, 6]")
            boxes, scores, labels = arr[:, :4], arr[:, 4], arr[:, 5]
    except (TypeError, ValueError) as exc:
        raise FeedError(f"Detections of sample {i}: {exc}") from exc
    except FeedError as exc:
        raise FeedError(f"Detections of sample {i}: {exc.message}. Per image, return {{'boxes': [N, 4] x1,y1,x2,y2, "
                        "'scores': [N], 'labels': [N]} or an [N, 6] array x1,y1,x2,y2,score,label.") from None
    if not boxes.shape[0] == scores.shape[0] == labels.shape[0]:
        raise FeedError(f"Detections of sample {i}: {boxes.shape[0]} boxes, {scores.shape[0]} scores, "
                        f"{labels.shape[0]} labels.")
    return boxes, scores, labels


def decode_detections(predictions: Sequence[Any], image_ids: Sequence[int],
                      scales: Sequence[tuple[float, float]] | None = None) -> list[ImageDetections]:
    """Per-image detections from a hook's predictions (one entry per sample: a dict of ``boxes`` x1,y1,x2,y2,
    ``scores`` and ``labels``, or an [N, 6] array x1,y1,x2,y2,score,label), as COCO x,y,w,h boxes multiplied by the
    sample's ``scales`` (x, y) factor (model-input pixels → the image's own pixels).

    A detection with a non-finite coordinate or score is dropped (it can match nothing: a broken engine loses
    recall for it); a box with x2 < x1 or y2 < y1 gets width or height 0. Labels must be whole numbers (the
    category ids of the annotations). Raises FeedError for another format or count."""
    if len(predictions) != len(image_ids):
        raise FeedError(f"{len(predictions)} samples of detections for {len(image_ids)} images.")
    out = []
    for i, (pred, image_id) in enumerate(zip(predictions, image_ids, strict=True)):
        boxes, scores, labels = _image_boxes(pred, i)
        ok = np.isfinite(boxes).all(axis=1) & np.isfinite(scores) & np.isfinite(labels)
        boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
        if np.any(labels != np.round(labels)):
            raise FeedError(f"Detections of sample {i}: labels must be integer category ids, got "
                            f"{labels[labels != np.round(labels)][:3].tolist()}.")
        sx, sy = scales[i] if scales is not None else (1.0, 1.0)
        x, y = boxes[:, 0] * sx, boxes[:, 1] * sy
        w = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * sx
        h = np.maximum(boxes[:, 3] - boxes[:, 1], 0.0) * sy
        dets = tuple((int(image_id), [float(x[j]), float(y[j]), float(w[j]), float(h[j])], float(scores[j]),
                      int(labels[j])) for j in range(boxes.shape[0]))
        out.append(ImageDetections(int(image_id), dets))
    return out


def detection_task_metrics(candidate: Sequence[ImageDetections], ground_truth: Mapping[str, Any] | None,
                           reference: Sequence[ImageDetections],
                           score_threshold: float = 0.5) -> dict[str, SampleMetric]:
    """``map``/``map50`` of a candidate's per-image detections: against the annotations, or without them against
    the reference's detections scoring at least ``score_threshold`` (agreement)."""
    flat = [d for image in candidate for d in image.detections]
    if ground_truth is not None:
        if not ground_truth_boxes(load_ground_truth(ground_truth)):
            raise FeedError("The COCO annotations of the evaluated images hold no boxes (crowd regions aside): "
                            "there is nothing to find, so mAP is undefined.")
        return detection_sample_metrics(flat, ground_truth)
    ref = [d for image in reference for d in image.detections]
    ids = [image.image_id for image in reference]
    if not ground_truth_boxes(detections_as_ground_truth(ref, ids, score_threshold)):
        raise FeedError(f"The reference found no detection scoring at least {score_threshold:g} (--threshold) in "
                        f"the {len(ids)} images, so there is nothing to agree with: lower --threshold, check the "
                        "post-processing hook, or give annotations.")
    return detection_agreement_sample_metrics(flat, ref, ids, score_threshold)
