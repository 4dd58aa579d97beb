"""Semantic segmentation metrics (scikit-learn's) and datasets of images with label-map masks.

Model outputs become label maps [N, H, W] (:func:`predicted_masks`):

* scores/logits [N, C, H, W] with C > 1: argmax over C;
* one class's probability [N, 1, H, W] or [N, H, W] (a float array): ``> threshold`` is class 1, else 0
  (binary; PaddleOCR's text detector gives such a map, thresholded at 0.3 by its post-processing);
* integer label maps [N, H, W] (or [N, 1, H, W]) as they are.

Per-sample metrics (:func:`segmentation_sample_metrics`), by gate metric name, all higher is better:

* ``miou``: mean over classes of intersection / union, each summed over the images first (the dataset-level
  mIoU of mmsegmentation and torchmetrics' ``JaccardIndex(average="macro")``); classes absent from both the
  predictions and the targets of the (re)sampled images are left out of the mean;
* ``pixel_accuracy``: correct pixels / labelled pixels, summed over the images;
* ``foreground_iou`` (two classes only): the IoU of class 1 alone (text, for a text detector), which the
  large background class does not inflate.

The reported values are scikit-learn's, on the labelled pixels of all images at once: the per-class IoU is
``sklearn.metrics.jaccard_score(target, pred, labels=present, average=None)`` with ``present`` the classes found in
the targets or predictions (``sklearn.utils.multiclass.unique_labels``), ``miou`` their mean (what
``average="macro"`` gives), ``foreground_iou`` class 1's entry, ``pixel_accuracy`` ``accuracy_score``. With no
labelled pixel, or (``foreground_iou``) no pixel of class 1 on either side, the value is 1.0 (nothing to get
wrong), which scikit-learn does not define.

Their per-sample rows are per-image counts (intersection and union per class; correct and labelled pixels), and
their functions sum the rows before dividing, so the paired bootstrap resamples whole images. The counts are
numpy's ``bincount`` over all images at once (sklearn's ``confusion_matrix`` image by image measured 4-5 times
slower on 100 images of 256x256, about 90 times slower on 500 images of 32x32); on the full sample each function
must give scikit-learn's value to 1e-9, or the metric raises InternalError (:mod:`enginekit.eval.bootstrap`).
Pixels whose target is ``ignore_index`` count nowhere. Without labels the targets are the reference's predicted
masks (agreement): :func:`segmentation_sample_metrics` (candidate outputs, reference outputs converted by
:func:`predicted_masks`); the reference's own side is the same call with the reference on both sides (1 everywhere).

Datasets (:func:`load_mask_folder`): ``IMAGES/*.png|jpg|...`` and ``MASKS/STEM.png`` with the same stems, the
masks being label maps (8- or 16-bit gray, or palette PNGs whose indices are the classes).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enginekit.deps import require
from enginekit.errors import FeedError, InvalidArgumentError
from enginekit.eval.bootstrap import SampleMetric
from enginekit.eval.datasets import Dataset
from enginekit.eval.image_folder import IMAGE_SUFFIXES, list_images
from enginekit.eval.preprocess import Preprocess, _pillow, load_image
from enginekit.tensors import TensorSpec

Progress = Callable[[int, int], None]  # (images done, images to load)


def predicted_masks(outputs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Label maps [N, H, W] (int64) from a segmentation model's outputs (module doc)."""
    arr = np.asarray(outputs)
    if arr.ndim == 4:
        if arr.shape[1] > 1:
            return np.asarray(arr.argmax(axis=1), dtype=np.int64)
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise FeedError(f"Segmentation outputs must be scores [N, C, H, W], one class's probabilities [N, 1, H, W] "
                        f"or [N, H, W], or label maps [N, H, W]; got shape {list(arr.shape)}.")
    if np.issubdtype(arr.dtype, np.floating):
        return np.asarray(arr > threshold, dtype=np.int64)
    if np.issubdtype(arr.dtype, np.bool_) or np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    raise FeedError(f"Segmentation outputs of dtype {arr.dtype} are neither scores nor label maps.")


def _target_masks(targets: np.ndarray) -> np.ndarray:
    arr = np.asarray(targets)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise FeedError(f"Target masks must be label maps [N, H, W], got shape {list(arr.shape)}.")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        raise FeedError(f"Target masks must be integer label maps, got {arr.dtype}.")
    return arr.astype(np.int64)


def confusion_counts(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-image counts of label maps [N, H, W]: ``iou_rows`` [N, 2, K] (intersection, union per class) and
    ``pixel_rows`` [N, 2] (correct, labelled pixels)."""
    n = pred.shape[0]
    p = pred.reshape(n, -1)
    t = target.reshape(n, -1)
    valid = np.ones_like(t, dtype=bool) if ignore_index is None else t != ignore_index
    for name, arr in (("Predicted", p), ("Target", t)):
        bad = valid & ((arr < 0) | (arr >= num_classes))
        if bad.any():
            raise FeedError(f"{name} masks hold class {int(arr[bad][0])}, outside 0..{num_classes - 1} "
                            "(set num_classes, or ignore_index for unlabelled pixels).")
    image = np.broadcast_to(np.arange(n)[:, None], p.shape)
    base = image[valid] * num_classes
    pv, tv = p[valid], t[valid]
    size = n * num_classes
    area_p = np.bincount(base + pv, minlength=size).reshape(n, num_classes)
    area_t = np.bincount(base + tv, minlength=size).reshape(n, num_classes)
    hit = pv == tv
    inter = np.bincount(base[hit] + tv[hit], minlength=size).reshape(n, num_classes)
    iou_rows = np.stack([inter, area_p + area_t - inter], axis=1).astype(np.int64)
    pixel_rows = np.stack([inter.sum(axis=1), valid.sum(axis=1)], axis=1).astype(np.int64)
    return iou_rows, pixel_rows


def mean_iou(iou_rows: np.ndarray) -> float:
    """mIoU of per-image rows [N, 2, K]: intersections and unions summed over images, then averaged over the
    classes with a non-zero union (1.0 when no class has one: nothing predicted, nothing labelled)."""
    inter, union = iou_rows.sum(axis=0, dtype=np.float64)
    present = union > 0
    if not present.any():
        return 1.0
    return float(np.mean(inter[present] / union[present]))


def _class_iou(k: int) -> Callable[[np.ndarray], float]:
    def fn(iou_rows: np.ndarray) -> float:
        inter, union = iou_rows[:, :, k].sum(axis=0, dtype=np.float64)
        return float(inter / union) if union > 0 else 1.0

    fn.__name__ = f"class{k}_iou"
    return fn


def pixel_accuracy(pixel_rows: np.ndarray) -> float:
    """Correct / labelled pixels of per-image rows [N, 2] (1.0 with no labelled pixel)."""
    correct, total = pixel_rows.sum(axis=0, dtype=np.float64)
    return float(correct / total) if total > 0 else 1.0


@dataclass(frozen=True)
class LibraryValues:
    """scikit-learn's segmentation metrics on all labelled pixels (module doc)."""

    miou: float
    pixel_accuracy: float
    class_iou: dict[int, float]  # classes present in the targets or predictions


def library_values(pred: np.ndarray, target: np.ndarray, ignore_index: int | None = None) -> LibraryValues:
    """mIoU, pixel accuracy and per-class IoU of label maps by scikit-learn, over the pixels whose target is not
    ``ignore_index`` (module doc); MissingDependencyError naming ``enginekit[metrics]`` without scikit-learn."""
    require("sklearn", purpose="segmentation metrics")
    metrics = importlib.import_module("sklearn.metrics")
    multiclass = importlib.import_module("sklearn.utils.multiclass")
    t, p = np.asarray(target).reshape(-1), np.asarray(pred).reshape(-1)
    if ignore_index is not None:
        valid = t != ignore_index
        t, p = t[valid], p[valid]
    if t.size == 0:
        return LibraryValues(miou=1.0, pixel_accuracy=1.0, class_iou={})
    # the smallest integer type that holds every class: scikit-learn's sorting and encoding run twice as fast on
    # uint8 as on int64 (measured on 6.5M pixels: 0.9 s instead of 1.7 s)
    small = np.result_type(*(np.min_scalar_type(int(v)) for v in (t.min(), t.max(), p.min(), p.max())))
    t, p = t.astype(small, copy=False), p.astype(small, copy=False)
    present = np.asarray(multiclass.unique_labels(t, p))
    per_class = np.asarray(metrics.jaccard_score(t, p, labels=present, average=None, zero_division=0),
                           dtype=np.float64)
    return LibraryValues(miou=float(np.mean(per_class)), pixel_accuracy=float(metrics.accuracy_score(t, p)),
                         class_iou={int(c): float(v) for c, v in zip(present, per_class, strict=True)})


def segmentation_sample_metrics(
    pred_masks_or_logits: np.ndarray,
    target_masks: np.ndarray,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    threshold: float = 0.5,
) -> dict[str, SampleMetric]:
    """Per-sample segmentation metrics (module doc). ``target_masks`` are integer label maps [N, H, W]; for
    agreement pass the reference's ``predicted_masks(outputs, threshold)``. ``num_classes`` unset: one more than
    the largest class seen (at least 2)."""
    pred = predicted_masks(pred_masks_or_logits, threshold)
    target = _target_masks(target_masks)
    if pred.shape != target.shape:
        raise FeedError(f"Predicted masks {list(pred.shape)} and target masks {list(target.shape)} differ in shape; "
                        "the dataset and outputs disagree.")
    if pred.shape[0] == 0:
        raise FeedError("The dataset has no samples.")
    if num_classes is None:
        arr = np.asarray(pred_masks_or_logits)
        logits = arr.ndim == 4 and arr.shape[1] > 1
        valid = target if ignore_index is None else target[target != ignore_index]
        seen = max(int(pred.max()), int(valid.max()) if valid.size else 0) + 1
        num_classes = max(2, arr.shape[1] if logits else seen)
    elif num_classes < 1:
        raise InvalidArgumentError(f"num_classes must be at least 1, got {num_classes}.")
    iou_rows, pixel_rows = confusion_counts(pred, target, num_classes, ignore_index)
    lib = library_values(pred, target, ignore_index)
    jaccard = "sklearn.metrics.jaccard_score"
    out = {"miou": SampleMetric(iou_rows, mean_iou, library_value=lib.miou, name="miou", library=jaccard),
           "pixel_accuracy": SampleMetric(pixel_rows, pixel_accuracy, library_value=lib.pixel_accuracy,
                                          name="pixel_accuracy", library="sklearn.metrics.accuracy_score")}
    if num_classes == 2:
        out["foreground_iou"] = SampleMetric(iou_rows, _class_iou(1), library_value=lib.class_iou.get(1, 1.0),
                                             name="foreground_iou", library=jaccard)
    return out


# --- datasets ------------------------------------------------------------------------------------------------


def _images_by_stem(folder: Path, what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in list_images(folder, what):
        if path.stem in out:
            raise FeedError(f"{what} folder {str(folder)!r} has two files with the stem {path.stem!r}: "
                            f"{out[path.stem].name} and {path.name}.")
        out[path.stem] = path
    return out


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A label-map image as int64 [H, W], resized to ``size`` (height, width) with nearest neighbour. Palette
    PNGs give their indices; RGB masks are refused (their colours are not classes)."""
    pil = _pillow()
    try:
        with pil.open(path) as img:
            img.load()
            if img.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise FeedError(f"Mask {str(path)!r} is a {img.mode} image; masks must be label maps (gray or "
                                "palette PNGs whose values are class indices).")
            if size is not None and (img.height, img.width) != size:
                img = img.resize((size[1], size[0]), resample=pil.Resampling.NEAREST)
            return np.asarray(img).astype(np.int64)
    except (OSError, ValueError) as exc:
        raise FeedError(f"Cannot read mask {str(path)!r}: {exc}") from exc


def load_mask_folder(
    images: str | Path,
    masks: str | Path,
    specs: Sequence[TensorSpec],
    preprocess: Preprocess,
    limit: int | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """A Dataset of the model's one image input (preprocessed like an image folder) and label maps [N, H, W]
    (int64, resized with nearest neighbour to the preprocess size) from files with the same stems, in stem order.

    Raises FeedError for a model without exactly one input, an image without a mask, unreadable files, or masks
    whose size differs from the images' (after resizing).
    """
    from enginekit.eval.image_folder import image_input

    spec, pre = image_input(specs, preprocess, limit, "A mask dataset")
    image_files = _images_by_stem(Path(images), "Images")
    mask_files = _images_by_stem(Path(masks), "Masks")
    if not image_files:
        raise FeedError(f"Images folder {str(images)!r} has no images ({', '.join(IMAGE_SUFFIXES)}).")
    missing = [s for s in image_files if s not in mask_files]
    if missing:
        raise FeedError(f"{len(missing)} image(s) have no mask with the same stem in {str(masks)!r}: "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}.")
    stems = sorted(image_files)[:limit]
    arrays: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    h_axis, w_axis = (1, 2) if pre.layout == "NCHW" else (0, 1)
    for done, stem in enumerate(stems, start=1):
        x = load_image(image_files[stem], pre)
        if arrays and x.shape != arrays[0].shape:
            raise FeedError(f"Image {str(image_files[stem])!r} gives shape {list(x.shape)}, the first image "
                            f"{list(arrays[0].shape)}; set a preprocess size to resize them all.")
        mask = load_mask(mask_files[stem], pre.size)
        if mask.shape != (x.shape[h_axis], x.shape[w_axis]):
            raise FeedError(f"Mask {str(mask_files[stem])!r} is {mask.shape[0]}x{mask.shape[1]}, its image "
                            f"{x.shape[h_axis]}x{x.shape[w_axis]}.")
        arrays.append(x)
        labels.append(mask)
        if progress is not None:
            progress(done, len(stems))
    return Dataset({spec.name: np.stack(arrays)}, np.stack(labels), f"{images} + {masks}")
