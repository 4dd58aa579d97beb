"""Classification datasets from a folder of images: ``ROOT/CLASS_NAME/*.png|jpg|...`` (torchvision's ImageFolder).

Classes are the sub-folders of ROOT sorted by name; label i is the i-th class. Samples are ordered by class,
then by file name. Files with other suffixes and hidden files are ignored; nested folders are not searched.
With ``limit`` N, the N samples are taken round-robin across classes (the first file of every class, then
the second, ...), so a small limit still covers every class; they keep the class-then-name order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from enginekit.errors import FeedError, InvalidArgumentError
from enginekit.eval.datasets import Dataset
from enginekit.eval.preprocess import Preprocess, read_image, resolve_for_input
from enginekit.tensors import TensorSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
Progress = Callable[[int, int], None]  # (images done, images to load)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def scan_image_folder(root: str | Path) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """Class names and (file, label) pairs in class-then-name order. Raises FeedError for an unusable folder."""
    root = Path(root)
    if not root.is_dir():
        raise FeedError(f"Image folder {str(root)!r} is not a folder.")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p)))
    if not classes:
        raise FeedError(f"Image folder {str(root)!r} has no class folders; expected ROOT/CLASS_NAME/image.png.")
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        samples.extend((f, label) for f in list_images(root / name))
    if not samples:
        raise FeedError(f"Image folder {str(root)!r} has no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders.")
    return classes, samples


def _round_robin(samples: list[tuple[Path, int]], limit: int) -> list[tuple[Path, int]]:
    rank: dict[int, int] = {}
    keyed = []
    for order, (_, label) in enumerate(samples):
        keyed.append((rank.get(label, 0), label, order))
        rank[label] = rank.get(label, 0) + 1
    chosen = sorted(order for _, _, order in sorted(keyed)[:limit])
    return [samples[i] for i in chosen]


def image_input(specs: Sequence[TensorSpec], preprocess: Preprocess, limit: int | None,
                what: str) -> tuple[TensorSpec, Preprocess]:
    """The model's one image input and the preprocessing completed for it; FeedError for another input count,
    InvalidArgumentError for a limit below 1."""
    if len(specs) != 1:
        names = ", ".join(s.name for s in specs) or "none"
        raise FeedError(f"{what} feeds models with one input; this model has {len(specs)} ({names}).")
    if limit is not None and limit < 1:
        raise InvalidArgumentError(f"The sample limit must be at least 1, got {limit}.")
    return specs[0], resolve_for_input(preprocess, specs[0])


def load_image_folder(
    root: str | Path,
    specs: Sequence[TensorSpec],
    preprocess: Preprocess,
    limit: int | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """A Dataset of the model's one image input (preprocessed) and the class labels (int64).

    ``preprocess`` is completed from the input's shape (color from its channels, size from a fixed H, W).
    ``progress(done, total)`` is called after every image. Raises FeedError for a model without exactly one
    input, an unusable folder or image, images of different sizes without ``size``.
    """
    spec, pre = image_input(specs, preprocess, limit, "An image folder")
    classes, samples = scan_image_folder(root)
    if limit is not None and limit < len(samples):
        samples = _round_robin(samples, limit)
    batch, _ = load_images([path for path, _ in samples], pre, progress)
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    return Dataset({spec.name: batch}, labels, str(root), class_names=classes)


def load_images(paths: Sequence[Path], pre: Preprocess,
                progress: Progress | None = None) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """The preprocessed images stacked on axis 0 and each file's own (height, width). Raises FeedError for an
    unreadable image or images of different sizes after preprocessing."""
    arrays: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    for done, path in enumerate(paths, start=1):
        x, size = read_image(path, pre)
        if arrays and x.shape != arrays[0].shape:
            raise FeedError(f"Image {str(path)!r} gives shape {list(x.shape)}, the first image "
                            f"{list(arrays[0].shape)}; set a preprocess size to resize them all.")
        arrays.append(x)
        sizes.append(size)
        if progress is not None:
            progress(done, len(paths))
    return np.stack(arrays), tuple(sizes)


def input_size(batch: np.ndarray, pre: Preprocess) -> tuple[int, int]:
    """The (height, width) of a preprocessed image batch."""
    return (int(batch.shape[2]), int(batch.shape[3])) if pre.layout == "NCHW" else (int(batch.shape[1]),
                                                                                    int(batch.shape[2]))


def list_images(root: str | Path, what: str = "Image") -> list[Path]:
    """The images directly in ``root``, by name (hidden files and other suffixes ignored); FeedError naming the
    ``what`` folder when it is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise FeedError(f"{what} folder {str(root)!r} is not a folder.")
    return sorted(p for p in root.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_SUFFIXES)


def load_flat_images(
    root: str | Path,
    specs: Sequence[TensorSpec],
    preprocess: Preprocess,
    limit: int | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """A label-free Dataset of the images directly in ``root`` (name order, the first ``limit``): image i has id
    i; the original sizes are kept (a detector's boxes are mapped back to them)."""
    spec, pre = image_input(specs, preprocess, limit, "An image folder")
    paths = list_images(root)
    if not paths:
        raise FeedError(f"Image folder {str(root)!r} has no images ({', '.join(IMAGE_SUFFIXES)}) directly in it.")
    paths = paths[:limit]
    batch, sizes = load_images(paths, pre, progress)
    return Dataset({spec.name: batch}, None, str(root), image_ids=tuple(range(len(paths))), original_sizes=sizes,
                   input_size=input_size(batch, pre))
