"""Image folders and preprocessing on real data: the bundled digits test split written as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from enginekit.errors import FeedError, InvalidArgumentError, UnknownNameError
from enginekit.eval.classification import classification_metrics, correct_per_sample
from enginekit.eval.datasets import Dataset, take
from enginekit.eval.image_folder import load_image_folder, scan_image_folder
from enginekit.eval.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    load_preprocess_yaml,
    parse_preprocess_options,
    preprocess_image,
    read_simple_yaml,
)
from enginekit.examples import digits
from enginekit.ortsession import ort_session
from enginekit.tensors import TensorSpec

SPEC = TensorSpec(digits.INPUT_NAME, (digits.BATCH_DIM, 1, 8, 8), "float32")
# train.py: x = pixels / 16; the PNGs hold the raw 0..16 pixels, so this is the .npz's preprocessing
DIGITS_PRE = Preprocess(scale=1 / 16, mean=(0.0,), std=(1.0,), layout="NCHW", dtype="float32")


def _write_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    x, labels = digits.load_test_split()
    counts: dict[int, int] = {}
    for img, label in zip(x, labels, strict=True):
        pixels = np.rint(img[0] * 16).astype(np.uint8)
        folder = root / digits.CLASS_NAMES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        i = counts.get(int(label), 0)
        counts[int(label)] = i + 1
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    return x, labels


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("digits_folder")
    x, labels = _write_folder(root)
    return root, x, labels


def _logits(inputs: np.ndarray) -> np.ndarray:
    session = ort_session(digits.onnx_path(), purpose="the digits test")
    return np.asarray(session.run([digits.OUTPUT_NAME], {digits.INPUT_NAME: inputs})[0])


def test_folder_loads_the_npz_arrays_exactly(folder: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, x, labels = folder
    seen: list[tuple[int, int]] = []
    ds = load_image_folder(root, [SPEC], DIGITS_PRE, progress=lambda d, t: seen.append((d, t)))
    assert ds.class_names == digits.CLASS_NAMES
    assert len(ds) == 360 and seen[-1] == (360, 360) and len(seen) == 360
    # the folder's order is class then file name; the .npz's, the split's: compare through a stable sort
    order = np.argsort(labels, kind="stable")
    assert np.array_equal(ds.labels, labels[order])
    loaded = ds.inputs[digits.INPUT_NAME]
    assert loaded.dtype == np.float32 and loaded.shape == (360, 1, 8, 8)
    assert np.array_equal(loaded, x[order])


def test_folder_accuracy_equals_the_known_accuracy(folder: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = folder
    ds = load_image_folder(root, [SPEC], DIGITS_PRE)
    logits = _logits(ds.inputs[digits.INPUT_NAME])
    meta = digits.load_metadata()
    m = classification_metrics(logits, ds.labels)
    assert m.accuracy == pytest.approx(meta["onnxruntime_test_accuracy"], abs=1e-12)
    assert int(correct_per_sample(logits, ds.labels).sum()) == meta["test_correct"] == 355


def test_limit_takes_every_class_round_robin(folder: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = folder
    ds = load_image_folder(root, [SPEC], DIGITS_PRE, limit=25)
    assert len(ds) == 25
    # 25 = 2 of every class + the third of classes 0..4; kept in class order
    assert ds.labels.tolist() == sorted([*range(10), *range(10), *range(5)])
    full = load_image_folder(root, [SPEC], DIGITS_PRE)
    classes, samples = scan_image_folder(root)
    first_of_class_3 = [i for i, (_, label) in enumerate(samples) if label == 3][0]
    assert classes == digits.CLASS_NAMES
    assert ds.labels[9] == 3 and ds.labels[8] == 2  # classes 0, 1, 2 give three samples each
    assert np.array_equal(ds.inputs["x"][9], full.inputs["x"][first_of_class_3])
    with pytest.raises(InvalidArgumentError):
        load_image_folder(root, [SPEC], DIGITS_PRE, limit=0)


def test_resize_and_nhwc_layout(folder: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, x, labels = folder
    spec = TensorSpec("x", ("n", 16, 16, 1), "float32")
    pre = Preprocess(size=(16, 16), interpolation="nearest", scale=1 / 16, layout="NHWC")
    ds = load_image_folder(root, [spec], pre, limit=10)
    order = np.argsort(labels, kind="stable")
    first = [int(order[np.searchsorted(labels[order], c)]) for c in range(10)]
    expected = np.repeat(np.repeat(x[first][:, 0], 2, axis=1), 2, axis=2)[..., None]
    assert np.array_equal(ds.inputs["x"], expected)


def test_imagenet_normalisation_on_rgb() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    pre = parse_preprocess_options(["scale=1/255", "mean=0.485,0.456,0.406", "std=0.229, 0.224, 0.225"])
    assert pre.mean == IMAGENET_MEAN and pre.std == IMAGENET_STD and pre.scale == 1 / 255
    out = preprocess_image(Image.fromarray(pixels, mode="RGB"), pre)
    expected = ((pixels / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)
    assert out.dtype == np.float32 and out.shape == (3, 5, 7)
    np.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-6)
    as_uint8 = preprocess_image(Image.fromarray(pixels, mode="RGB"), Preprocess(scale=1.0, dtype="uint8"))
    assert np.array_equal(as_uint8, pixels.transpose(2, 0, 1))


def test_yaml_file_and_options_agree(tmp_path: Path) -> None:
    path = tmp_path / "pre.yaml"
    path.write_text("# ImageNet\nsize: [224, 224]\ninterpolation: bicubic\nscale: 1/255\n"
                    "mean: [0.485, 0.456, 0.406]\nstd: [0.229, 0.224, 0.225]\nlayout: nchw\ndtype: float16\n")
    from_file = load_preprocess_yaml(path)
    from_opts = parse_preprocess_options(["size=224x224", "interpolation=bicubic", "mean=0.485,0.456,0.406",
                                          "std=0.229,0.224,0.225", "dtype=float16"])
    assert from_file == from_opts
    assert from_file.size == (224, 224) and from_file.layout == "NCHW"
    assert read_simple_yaml("a: 'x'  # c\nb: [1, 2]\n") == {"a": "x", "b": ["1", "2"]}


@pytest.mark.parametrize(("options", "error"), [
    (["mean=a,b"], InvalidArgumentError),
    (["size"], InvalidArgumentError),
    (["sise=224"], UnknownNameError),
    (["layout=NCWH"], InvalidArgumentError),
    (["std=0"], InvalidArgumentError),
    (["dtype=float99"], InvalidArgumentError),
    (["scale=1/0"], InvalidArgumentError),
])
def test_bad_options(options: list[str], error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_preprocess_options(options)


def test_bad_folders_and_models(tmp_path: Path, folder: tuple[Path, np.ndarray, np.ndarray]) -> None:
    with pytest.raises(FeedError, match="no class folders"):
        load_image_folder(tmp_path, [SPEC], DIGITS_PRE)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("x")
    with pytest.raises(FeedError, match="no images"):
        load_image_folder(tmp_path, [SPEC], DIGITS_PRE)
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(FeedError, match="Cannot read image"):
        load_image_folder(tmp_path, [SPEC], DIGITS_PRE)
    root = folder[0]
    with pytest.raises(FeedError, match="channels"):
        load_image_folder(root, [TensorSpec("x", ("n", 3, 8, 8), "float32")], Preprocess(color="gray"))
    with pytest.raises(FeedError, match="one input"):
        load_image_folder(root, [SPEC, TensorSpec("y", ("n", 1), "float32")], DIGITS_PRE)


def test_take_keeps_the_first_samples() -> None:
    ds = Dataset({"x": np.arange(10)}, np.arange(10), "mem")
    assert take(ds, 3).labels.tolist() == [0, 1, 2] and take(ds, None) is ds and take(ds, 99) is ds
    with pytest.raises(InvalidArgumentError):
        take(ds, 0)
