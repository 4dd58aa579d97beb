"""Detection datasets (images + COCO JSON, or a flat folder without labels) and a hook's boxes -> COCO detections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enginekit.errors import FeedError
from enginekit.eval.coco_folder import load_coco_folder
from enginekit.eval.datasets import take
from enginekit.eval.detection import coco_summary, decode_detections
from enginekit.eval.image_folder import load_flat_images
from enginekit.eval.preprocess import Preprocess
from enginekit.tensors import TensorSpec

SPEC = [TensorSpec("x", ("batch", 3, 32, 48), "float32")]


def _image(path: Path, h: int, w: int, value: int = 128) -> None:
    from PIL import Image

    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def _coco(tmp_path: Path, images: list[dict[str, Any]], anns: list[dict[str, Any]] | None = None) -> Path:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns or [],
                                "categories": [{"id": 1, "name": "thing"}]}))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    _image(root / "a.png", 64, 96)
    _image(root / "sub" / "b.png", 16, 24)
    _image(root / "c.png", 32, 48)
    return root


def test_coco_folder_keeps_ids_sizes_and_only_the_loaded_images_annotations(folder: Path, tmp_path: Path) -> None:
    ann = _coco(tmp_path, [{"id": 9, "file_name": "c.png", "width": 48, "height": 32},
                           {"id": 3, "file_name": "a.png"}, {"id": 5, "file_name": "sub/b.png"}],
                [{"image_id": 3, "bbox": [0, 0, 10, 10], "category_id": 1},
                 {"image_id": 9, "bbox": [1, 1, 5, 5], "category_id": 1}])
    ds = load_coco_folder(folder, ann, SPEC, Preprocess())
    assert ds.image_ids == (3, 5, 9)  # id order
    assert ds.original_sizes == ((64, 96), (16, 24), (32, 48)) and ds.input_size == (32, 48)
    assert ds.inputs["x"].shape == (3, 3, 32, 48) and ds.has_labels and ds.targets is None and len(ds) == 3
    two = load_coco_folder(folder, ann, SPEC, Preprocess(), limit=2)
    assert two.image_ids == (3, 5) and [a["image_id"] for a in two.annotations["annotations"]] == [3]  # type: ignore[index]
    cut = take(ds, 1)
    assert cut.image_ids == (3,) and cut.original_sizes == ((64, 96),) and len(cut.annotations["images"]) == 1  # type: ignore[index]


@pytest.mark.parametrize(("images", "match"), [
    ([{"id": 1, "file_name": "nope.png"}], "are not in"),
    ([{"id": 1, "file_name": "../escape.png"}], "not inside the images folder"),
    ([{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "c.png"}], "share ids"),
    ([{"id": "1", "file_name": "a.png"}], "'id' must be an integer"),
    ([{"id": 1}], "file_name"),
    ([], "lists no images"),
    ([{"id": 1, "file_name": "a.png", "width": 50, "height": 64}], "would not fit"),
])
def test_coco_folder_refuses_what_cannot_be_scored(folder: Path, tmp_path: Path, images: list[dict[str, Any]],
                                                   match: str) -> None:
    _image(tmp_path / "escape.png", 8, 8)
    with pytest.raises(FeedError, match=match):
        load_coco_folder(folder, _coco(tmp_path, images), SPEC, Preprocess())


def test_coco_folder_refuses_a_broken_json(folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FeedError, match="Cannot read COCO ground truth"):
        load_coco_folder(folder, bad, SPEC, Preprocess())


def test_flat_folder_is_label_free_with_ids_by_name(folder: Path) -> None:
    ds = load_flat_images(folder, SPEC, Preprocess(), limit=5)
    assert ds.image_ids == (0, 1) and ds.original_sizes == ((64, 96), (32, 48))  # a.png, c.png; sub/ not searched
    assert not ds.has_labels and ds.input_size == (32, 48)
    with pytest.raises(FeedError, match="no images"):
        load_flat_images(folder.parent, SPEC, Preprocess())  # only the folder "images" and instances files
    with pytest.raises(FeedError, match="is not a folder"):
        load_flat_images(folder.parent / "missing", SPEC, Preprocess())


def test_decode_accepts_dicts_and_n_by_6_arrays_and_scales_boxes_back() -> None:
    preds = [{"boxes": [[10, 20, 30, 60]], "scores": [0.9], "labels": [3]},
             np.array([[0, 0, 8, 4, 0.5, 1], [2, 2, 4, 4, 0.4, 2]]),
             np.zeros((0, 6)), []]
    out = decode_detections(preds, [7, 8, 9, 10], [(2.0, 0.5), (1.0, 1.0), (1.0, 1.0), (3.0, 3.0)])
    assert [o.image_id for o in out] == [7, 8, 9, 10]
    assert out[0].detections == ((7, [20.0, 10.0, 40.0, 20.0], 0.9, 3),)  # x*2, y*0.5, w = (30-10)*2, h = 40*0.5
    assert out[1].detections[1] == (8, [2.0, 2.0, 2.0, 2.0], 0.4, 2)
    assert out[2].detections == () and out[3].detections == ()


def test_decode_drops_non_finite_detections_and_flattens_inverted_boxes() -> None:
    out = decode_detections([np.array([[0, 0, np.nan, 4, 0.9, 1], [0, 0, 4, 4, np.inf, 1], [5, 5, 1, 9, 0.3, 1]])],
                            [0])
    assert out[0].detections == ((0, [5.0, 5.0, 0.0, 4.0], 0.3, 1),)


@pytest.mark.parametrize(("pred", "match"), [
    ({"boxes": [[0, 0, 1, 1]], "scores": [0.5]}, "lacks labels"),
    (np.zeros((2, 5)), r"not \[N, 6\]"),
    ({"boxes": [[0, 0, 1, 1]], "scores": [0.5, 0.4], "labels": [1]}, "1 boxes, 2 scores, 1 labels"),
    (np.array([[0, 0, 1, 1, 0.5, 1.5]]), "integer category ids"),
    ("boxes", "sample 0"),
])
def test_decode_refuses_other_formats_with_the_expected_one(pred: Any, match: str) -> None:
    with pytest.raises(FeedError, match=match):
        decode_detections([pred], [0])


def test_decode_needs_one_prediction_per_image() -> None:
    with pytest.raises(FeedError, match="2 samples of detections for 1 images"):
        decode_detections([[], []], [0])


def test_scaling_back_is_what_makes_boxes_meet_original_pixel_annotations() -> None:
    """A detector run at 32x48 on a 64x96 image: its boxes only match the annotations once scaled by 2."""
    gt = {"images": [{"id": 1}], "categories": [{"id": 1}],
          "annotations": [{"image_id": 1, "bbox": [20, 10, 40, 30], "category_id": 1}]}
    pred = [{"boxes": [[10, 5, 30, 20]], "scores": [0.8], "labels": [1]}]  # the same box in model-input pixels
    scaled = decode_detections(pred, [1], [(2.0, 2.0)])[0].detections
    unscaled = decode_detections(pred, [1])[0].detections
    assert coco_summary(scaled, gt)["map"] == pytest.approx(1.0)
    assert coco_summary(unscaled, gt)["map"] == 0.0


@pytest.mark.parametrize(("data", "match"), [
    ({"images": [{"id": 1}], "annotations": [{"image_id": 1, "bbox": [0, 0, 1], "category_id": 1}]}, "4 numbers"),
    ({"images": [{"id": 1}], "annotations": [{"image_id": 1, "bbox": "abcd", "category_id": 1}]}, "4 numbers"),
    ({"images": [{"id": 1}], "annotations": {"a": 1}}, "'annotations' must be a list of objects"),
    ({"images": [{"id": 1}], "annotations": [3]}, "'annotations' must be a list of objects"),
    ({"images": [{"id": 1}], "annotations": [{"image_id": "1", "bbox": [0, 0, 1, 1], "category_id": 1}]},
     "'image_id' must be an integer"),
    ({"images": [{"id": 1}], "categories": [1]}, "'categories' must be a list of objects"),
    ({"images": [{"id": 1.5}]}, "image 'id' must be an integer"),
    ({"images": [{"id": 1}], "annotations": [{"id": 4, "image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 1},
                                             {"id": 4, "image_id": 1, "bbox": [0, 0, 2, 2], "category_id": 1}]},
     "share ids"),
])
def test_malformed_coco_is_a_typed_error(data: dict[str, Any], match: str) -> None:
    from enginekit.eval.detection import load_ground_truth

    with pytest.raises(FeedError, match=match):
        load_ground_truth(data)


def test_missing_annotation_ids_never_collide_with_given_ones() -> None:
    """Filled-in ids start above the largest given one: two boxes keep two ids, both found."""
    from enginekit.eval.detection import load_ground_truth

    gt = {"images": [{"id": 1}], "categories": [{"id": 1}],
          "annotations": [{"image_id": 1, "bbox": [0, 0, 10, 10], "category_id": 1},
                          {"id": 1, "image_id": 1, "bbox": [50, 50, 10, 10], "category_id": 1}]}
    assert sorted(a["id"] for a in load_ground_truth(gt)["annotations"]) == [1, 2]
    dets = [(1, [0, 0, 10, 10], 0.9, 1), (1, [50, 50, 10, 10], 0.8, 1)]
    assert coco_summary(dets, gt)["map50"] == pytest.approx(1.0)


def test_nothing_to_find_is_an_error_not_a_perfect_score() -> None:
    from enginekit.eval.detection import ImageDetections, detection_task_metrics

    empty = [ImageDetections(0, ()), ImageDetections(1, ())]
    weak = [ImageDetections(0, ((0, [0.0, 0.0, 5.0, 5.0], 0.2, 1),)), ImageDetections(1, ())]
    with pytest.raises(FeedError, match="no detection scoring at least 0.5"):
        detection_task_metrics(weak, None, weak, 0.5)
    gt = {"images": [{"id": 0}, {"id": 1}], "annotations": [], "categories": [{"id": 1}]}
    with pytest.raises(FeedError, match="hold no boxes"):
        detection_task_metrics(empty, gt, empty)
    assert detection_task_metrics(weak, None, weak, 0.1)["map"].value() == pytest.approx(1.0)


def test_resamples_without_ground_truth_are_left_out_of_the_interval() -> None:
    """One image of four holds the only box, so (3/4)^4 = 32 % of the resamples draw none of it. Those have no mAP
    (NaN), not a difference of 0 that would pull the interval towards 'no change'."""
    from enginekit.eval.bootstrap import paired_bootstrap_ci
    from enginekit.eval.detection import detection_sample_metrics

    gt = {"images": [{"id": i} for i in range(4)], "categories": [{"id": 1}],
          "annotations": [{"image_id": 0, "bbox": [0, 0, 10, 10], "category_id": 1}]}
    good = detection_sample_metrics([(0, [0, 0, 10, 10], 0.9, 1)], gt)["map"]
    bad = detection_sample_metrics([(0, [5, 5, 10, 10], 0.9, 1)], gt)["map"]
    assert np.isnan(good.fn(good.per_sample[1:]))  # type: ignore[misc]
    boot = paired_bootstrap_ci(bad.per_sample, good.per_sample, bad.fn, n=400, seed=0)
    d = boot.difference
    assert d.estimate == pytest.approx(-1.0) and d.high == pytest.approx(-1.0)  # every defined resample loses it all
    assert np.isfinite([d.low, d.high, boot.candidate.low, boot.reference.high]).all()
