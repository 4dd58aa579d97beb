"""Detection datasets: a folder of images and a COCO JSON that names them (``--dataset IMAGES --annotations
instances.json``).

Every entry of the JSON's ``images`` list needs an ``id`` and a ``file_name`` relative to the images folder
(sub-folders allowed, never outside it); samples are the images in id order (``limit``: the first N), and the
ground truth is cut down to them. The files' own sizes are kept: the model's boxes, in model-input pixels, are
scaled back to them before they meet the annotations (COCO boxes are in original pixels). A ``width``/``height``
in the JSON that differs from the file's is refused: the boxes would not fit the picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from enginekit.errors import FeedError
from enginekit.eval.datasets import Dataset, restrict_annotations
from enginekit.eval.detection import load_ground_truth
from enginekit.eval.image_folder import Progress, image_input, input_size, load_images
from enginekit.eval.preprocess import Preprocess
from enginekit.tensors import TensorSpec


def _entries(ground_truth: dict[str, Any], where: str) -> list[tuple[int, str]]:
    """(id, file_name) of every image, in id order (ids are checked by load_ground_truth)."""
    out: list[tuple[int, str]] = []
    for i, im in enumerate(ground_truth["images"]):
        if not isinstance(im.get("file_name"), str):
            raise FeedError(f"{where}: image entry {i} needs a 'file_name', got {im!r}.")
        out.append((int(im["id"]), im["file_name"]))
    if not out:
        raise FeedError(f"{where} lists no images.")
    return sorted(out)


def _image_path(root: Path, name: str, where: str) -> Path:
    path = (root / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(root.resolve()):
        raise FeedError(f"{where}: file_name {name!r} is not inside the images folder {str(root)!r}.")
    return path


def load_coco_folder(
    images: str | Path,
    annotations: str | Path,
    specs: Sequence[TensorSpec],
    preprocess: Preprocess,
    limit: int | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """A Dataset of the model's one image input (preprocessed) with the COCO ground truth of exactly its images,
    their ids and original sizes (module doc). Raises FeedError for an unusable JSON, a missing or unreadable
    image, or a size that disagrees with the JSON."""
    spec, pre = image_input(specs, preprocess, limit, "A COCO detection dataset")
    root, where = Path(images), f"COCO annotations {str(annotations)!r}"
    if not root.is_dir():
        raise FeedError(f"Images folder {str(root)!r} is not a folder.")
    gt = load_ground_truth(annotations)
    entries = _entries(gt, where)[:limit]
    paths = [_image_path(root, name, where) for _, name in entries]
    missing = [name for (_, name), p in zip(entries, paths, strict=True) if not p.is_file()]
    if missing:
        raise FeedError(f"{len(missing)} image(s) of {where} are not in {str(root)!r}: {', '.join(missing[:5])}"
                        f"{' ...' if len(missing) > 5 else ''}.")
    batch, sizes = load_images(paths, pre, progress)
    by_id = {int(im["id"]): im for im in gt["images"]}
    for (image_id, name), (h, w) in zip(entries, sizes, strict=True):
        im = by_id[image_id]
        for key in ("height", "width"):
            if key in im and (isinstance(im[key], bool) or not isinstance(im[key], (int, float))):
                raise FeedError(f"{where}: image {name!r} has {key} {im[key]!r}, not a number of pixels.")
        if ("height" in im and int(im["height"]) != h) or ("width" in im and int(im["width"]) != w):
            raise FeedError(f"{where}: image {name!r} is {w}x{h} pixels, the JSON says {im.get('width')}x"
                            f"{im.get('height')}; the boxes would not fit it.")
    ids = tuple(image_id for image_id, _ in entries)
    return Dataset({spec.name: batch}, None, f"{images} + {annotations}", annotations=restrict_annotations(gt, ids),
                   image_ids=ids, original_sizes=sizes, input_size=input_size(batch, pre))
