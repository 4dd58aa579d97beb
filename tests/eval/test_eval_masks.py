"""Segmentation datasets: an images folder and a masks folder with the same stems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from enginekit.errors import FeedError
from enginekit.eval.preprocess import Preprocess
from enginekit.eval.segmentation import load_mask_folder, segmentation_sample_metrics
from enginekit.tensors import TensorSpec

SPEC = [TensorSpec("x", (None, 3, 64, 128), "float32")]


def _page_folders(root: Path) -> tuple[Path, Path, np.ndarray]:
    from skimage import data

    page = data.page()  # 191x384 scanned text
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    crops = [page[0:96, 0:192], page[64:160, 96:288], page[95:191, 192:384]]
    for i, crop in enumerate(crops):
        Image.fromarray(crop).save(images / f"p{i}.png")
        label = (crop < 100).astype(np.uint8)  # dark ink = class 1
        if i == 1:  # a palette PNG: its indices are the classes
            pal = Image.fromarray(label, mode="P")
            pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
            pal.save(masks / f"p{i}.png")
        else:
            Image.fromarray(label * 1).save(masks / f"p{i}.png")
    return images, masks, np.stack(crops)


def test_mask_folder_loads_resized_label_maps(tmp_path: Path) -> None:
    images, masks, crops = _page_folders(tmp_path)
    ds = load_mask_folder(images, masks, SPEC, Preprocess())
    assert ds.inputs["x"].shape == (3, 3, 64, 128) and ds.labels.shape == (3, 64, 128)
    assert ds.labels.dtype == np.int64 and set(np.unique(ds.labels)) == {0, 1}  # nearest: no blended classes
    want = np.stack([np.asarray(Image.fromarray((c < 100).astype(np.uint8)).resize((128, 64), Image.Resampling.NEAREST))
                     for c in crops])
    assert np.array_equal(ds.labels, want)
    assert len(load_mask_folder(images, masks, SPEC, Preprocess(), limit=2)) == 2
    # the image's own dark pixels, thresholded after preprocessing, are the masks (up to resampling)
    ink = (ds.inputs["x"][:, 0] < 100 / 255).astype(np.int64)
    assert segmentation_sample_metrics(ink, ds.labels)["miou"].value() > 0.8


def test_mask_folder_errors(tmp_path: Path) -> None:
    images, masks, _ = _page_folders(tmp_path)
    (masks / "p2.png").unlink()
    with pytest.raises(FeedError, match="no mask with the same stem.*p2"):
        load_mask_folder(images, masks, SPEC, Preprocess())
    Image.new("RGB", (192, 96)).save(masks / "p2.png")
    with pytest.raises(FeedError, match="is a RGB image; masks must be label maps"):
        load_mask_folder(images, masks, SPEC, Preprocess())
