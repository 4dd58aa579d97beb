"""Evaluation datasets: an .npz holding one array per model input and an integer ``labels`` array.

Label-free datasets (``load_dataset(..., require_labels=False)`` on an .npz without ``labels``) have
``targets`` None: their metrics are the agreement with the reference's predictions. ``Dataset.labels`` stays an
array (it raises FeedError for a label-free dataset); code that handles both reads ``Dataset.targets``.

Image folders (``ROOT/CLASS_NAME/*.png``, or for tasks other than classification the images in ``ROOT`` itself)
load through :mod:`enginekit.eval.image_folder`, images with label maps through :mod:`enginekit.eval.segmentation`,
images with a COCO JSON through :mod:`enginekit.eval.coco_folder` (``annotations``, ``image_ids`` and the images'
``original_sizes``, to scale a detector's boxes back from ``input_size``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.data import load_arrays
from enginekit.errors import FeedError, InvalidArgumentError
from enginekit.tensors import TensorSpec


@dataclass(frozen=True)
class Dataset:
    inputs: dict[str, np.ndarray]
    targets: np.ndarray | None  # labels [N], label maps [N, H, W], ...; None: a label-free dataset
    source: str
    class_names: tuple[str, ...] | None = None  # label i is class_names[i] (an image folder's class folders)
    # detection: a COCO ground truth over exactly these samples' images (None: label-free), each sample's image id
    # and each image's original (height, width) before preprocessing, and the model-input (height, width)
    annotations: dict[str, Any] | None = None
    image_ids: tuple[int, ...] | None = None
    original_sizes: tuple[tuple[int, int], ...] | None = None
    input_size: tuple[int, int] | None = None

    @property
    def has_labels(self) -> bool:
        return self.targets is not None or self.annotations is not None

    @property
    def labels(self) -> np.ndarray:
        """The targets; FeedError for a label-free dataset (check ``has_labels`` or read ``targets``)."""
        if self.targets is None:
            raise FeedError(f"Dataset {self.source!r} has no labels; only agreement with the reference can be "
                            "measured on it.")
        return self.targets

    def __len__(self) -> int:
        if self.targets is not None:
            return int(self.targets.shape[0])
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        n = len(self)
        step = n if batch_size <= 0 else batch_size
        for i in range(0, n, step):
            yield {k: v[i : i + step] for k, v in self.inputs.items()}


def load_dataset(path: str | Path, specs: Sequence[TensorSpec], *, require_labels: bool = True) -> Dataset:
    """The model inputs (by name) and ``labels`` of an .npz. Without a ``labels`` array: FeedError, or with
    ``require_labels=False`` a label-free Dataset (``targets`` None) whose inputs share their sample count."""
    arrays = load_arrays(path)
    if "labels" not in arrays:
        if require_labels:
            raise FeedError(f"Dataset {str(path)!r} has no 'labels' array (found: {', '.join(arrays) or 'nothing'}).")
        return _label_free(path, arrays, specs)
    labels = arrays.pop("labels")
    inputs = _model_inputs(path, arrays, specs)
    bad = [n for n, a in inputs.items() if a.shape[:1] != labels.shape[:1]]
    if bad:
        raise FeedError(f"Dataset {str(path)!r}: arrays {', '.join(bad)} do not have {labels.shape[0]} samples "
                        "along axis 0 like 'labels'.")
    return Dataset(inputs, labels, str(path))


def _model_inputs(path: str | Path, arrays: dict[str, np.ndarray],
                  specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """The dataset's array of every model input, by name; FeedError naming the missing ones."""
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise FeedError(f"Dataset {str(path)!r} lacks arrays for model inputs {', '.join(missing)} "
                        f"(found: {', '.join(arrays) or 'nothing'}).")
    return {n: arrays[n] for n in names}


def _label_free(path: str | Path, arrays: dict[str, np.ndarray], specs: Sequence[TensorSpec]) -> Dataset:
    inputs = _model_inputs(path, arrays, specs)
    if not inputs:
        raise FeedError(f"Dataset {str(path)!r}: the model has no inputs to feed.")
    counts = {n: a.shape[0] if a.ndim else None for n, a in inputs.items()}
    if None in counts.values() or len(set(counts.values())) != 1:
        raise FeedError(f"Dataset {str(path)!r}: the input arrays must have the same number of samples along "
                        f"axis 0, got {', '.join(f'{n}: {c}' for n, c in counts.items())}.")
    return Dataset(inputs, None, str(path))


def take(dataset: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` samples (None: all). Raises InvalidArgumentError for a limit below 1."""
    if limit is not None and limit < 1:
        raise InvalidArgumentError(f"The sample limit must be at least 1, got {limit}.")
    if limit is None or limit >= len(dataset):
        return dataset
    targets = None if dataset.targets is None else dataset.targets[:limit]
    ids = None if dataset.image_ids is None else dataset.image_ids[:limit]
    annotations = dataset.annotations
    if annotations is not None and ids is not None:
        annotations = restrict_annotations(annotations, ids)
    return replace(dataset, inputs={k: v[:limit] for k, v in dataset.inputs.items()}, targets=targets,
                   image_ids=ids, annotations=annotations,
                   original_sizes=None if dataset.original_sizes is None else dataset.original_sizes[:limit])


def restrict_annotations(annotations: dict[str, Any], image_ids: Sequence[int]) -> dict[str, Any]:
    """A COCO ground truth cut down to the images ``image_ids`` (their images and annotations; all categories)."""
    keep = {int(i) for i in image_ids}
    return {**annotations, "images": [im for im in annotations["images"] if int(im["id"]) in keep],
            "annotations": [a for a in annotations.get("annotations", []) if int(a["image_id"]) in keep]}
