"""Evaluation datasets: an .npz holding one array per model input and an integer ``labels`` array.

Image folders (``ROOT/CLASS_NAME/*.png``) load through :mod:`enginekit.eval.image_folder`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enginekit.data import load_arrays
from enginekit.errors import FeedError, InvalidArgumentError
from enginekit.tensors import TensorSpec


@dataclass(frozen=True)
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    source: str
    class_names: tuple[str, ...] | None = None  # label i is class_names[i] (an image folder's class folders)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        n = len(self)
        step = n if batch_size <= 0 else batch_size
        for i in range(0, n, step):
            yield {k: v[i : i + step] for k, v in self.inputs.items()}


def load_dataset(path: str | Path, specs: Sequence[TensorSpec]) -> Dataset:
    arrays = load_arrays(path)
    if "labels" not in arrays:
        raise FeedError(f"Dataset {str(path)!r} has no 'labels' array (found: {', '.join(arrays) or 'nothing'}).")
    labels = arrays.pop("labels")
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise FeedError(f"Dataset {str(path)!r} lacks arrays for model inputs {', '.join(missing)} "
                        f"(found: {', '.join(arrays) or 'nothing'}).")
    inputs = {n: arrays[n] for n in names}
    bad = [n for n, a in inputs.items() if a.shape[:1] != labels.shape[:1]]
    if bad:
        raise FeedError(f"Dataset {str(path)!r}: arrays {', '.join(bad)} do not have {labels.shape[0]} samples "
                        "along axis 0 like 'labels'.")
    return Dataset(inputs, labels, str(path))


def take(dataset: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` samples (None: all). Raises InvalidArgumentError for a limit below 1."""
    if limit is not None and limit < 1:
        raise InvalidArgumentError(f"The sample limit must be at least 1, got {limit}.")
    if limit is None or limit >= len(dataset):
        return dataset
    return Dataset({k: v[:limit] for k, v in dataset.inputs.items()}, dataset.labels[:limit], dataset.source,
                   dataset.class_names)
