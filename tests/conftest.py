"""Shared fixtures: small ONNX models built here, and real trained models installed from PyPI."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def make_mlp(path: Path, *, batch: str | int = "batch", seed: int = 0) -> Path:
    """x[batch,4] float32 -> MatMul -> Add -> Relu -> MatMul -> y[batch,3]; deterministic weights."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu1"),
        helper.make_node("MatMul", ["h2", "w2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        initializer=[w1, b1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="enginekit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def make_two_input(path: Path) -> Path:
    """ids[batch,seq] int64 and mask[batch,seq] int64 -> out = Cast(ids*mask, float) [batch,seq]."""
    nodes = [
        helper.make_node("Mul", ["ids", "mask"], ["m"]),
        helper.make_node("Cast", ["m"], ["out"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "two_input",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def make_contrib_op_model(path: Path) -> Path:
    """A model using an onnxruntime contrib op (com.microsoft FusedMatMul): ORT runs it, others may not."""
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    node = helper.make_node("FusedMatMul", ["x", "w"], ["y"], domain="com.microsoft", alpha=2.0)
    graph = helper.make_graph(
        [node],
        "contrib",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializer=[w],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    onnx.save(model, path)
    return path


def make_scaled(path: Path) -> Path:
    """x[batch,4] -> Mul 1e-7 (scale_up) -> Mul 1e7 (scale_down) -> Add bias (add_bias) -> y = x + bias in float32.

    In float16 the constant 1e-7 is a subnormal that rounds to 1.19e-7 and y grows by a fifth, unless a precision
    plan keeps scale_up and scale_down in FP32 (1e7, beyond fp16's range, keeps scale_down FP32 on its own).
    """
    inits = [numpy_helper.from_array(np.array(1e-7, np.float32), "up"),
             numpy_helper.from_array(np.array(1e7, np.float32), "down"),
             numpy_helper.from_array(np.linspace(-1, 1, 4).astype(np.float32), "bias")]
    nodes = [helper.make_node("Mul", ["x", "up"], ["big"], name="scale_up"),
             helper.make_node("Mul", ["big", "down"], ["back"], name="scale_down"),
             helper.make_node("Add", ["back", "bias"], ["y"], name="add_bias")]
    graph = helper.make_graph(nodes, "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def scaled_model(tmp_path: Path) -> Path:
    return make_scaled(tmp_path / "scaled.onnx")


@pytest.fixture
def mlp_model(tmp_path: Path) -> Path:
    return make_mlp(tmp_path / "mlp.onnx")


@pytest.fixture
def two_input_model(tmp_path: Path) -> Path:
    return make_two_input(tmp_path / "two_input.onnx")


@pytest.fixture
def contrib_model(tmp_path: Path) -> Path:
    return make_contrib_op_model(tmp_path / "contrib.onnx")


def _rapidocr_models() -> Path | None:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@pytest.fixture(scope="session")
def ocr_cls_model() -> Path:
    """PaddleOCR's text-direction classifier (real trained weights), shipped in the rapidocr-onnxruntime wheel."""
    models = _rapidocr_models()
    if models is None:
        pytest.fail("rapidocr-onnxruntime is a test dependency: run `make test` (it installs it).")
    path = models / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    assert path.is_file(), path
    return path


@pytest.fixture(scope="session")
def ocr_det_model() -> Path:
    """PaddleOCR v4 text detector (real trained weights, 4.7 MB), shipped in the rapidocr-onnxruntime wheel."""
    models = _rapidocr_models()
    if models is None:
        pytest.fail("rapidocr-onnxruntime is a test dependency: run `make test` (it installs it).")
    return models / "ch_PP-OCRv4_det_infer.onnx"


def text_image_feed(height: int = 160, width: int = 384) -> dict[str, np.ndarray]:
    """A real scanned page of text (scikit-image's ``data.page()``, 191x384, shipped in its wheel) as PaddleOCR's
    detector feed ``x``: 1x3xHxW float32, ImageNet mean/std normalised, cropped to multiples of 32 as PaddleOCR does.

    Random feeds make the detector's output ~0 everywhere and hide precision faults; on this page the v4 detector
    marks about 19 % of the pixels as text (probability > 0.3).
    """
    from skimage import data

    gray = data.page()[:height, :width].astype(np.float32) / 255.0
    rgb = np.repeat(gray[None, :, :], 3, axis=0)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    return {"x": ((rgb - mean) / std)[None].astype(np.float32)}


@pytest.fixture(scope="session")
def text_feed() -> dict[str, np.ndarray]:
    """See :func:`text_image_feed`."""
    return text_image_feed()


@pytest.fixture(scope="session")
def text_image():  # type: ignore[no-untyped-def]
    """:func:`text_image_feed` itself, to crop the page to other sizes: ``text_image(64, 128)``."""
    return text_image_feed

# --- a real detection dataset: scikit-image's scanned page, COCO annotations, a decoder for PaddleOCR's detector --


@dataclass(frozen=True)
class CocoPages:
    """The page at 1x, 1.5x and 0.75x (``images/page{1,2,3}.png``), its 7 text lines as COCO boxes in each image's
    own pixels (``annotations``), and a hook file whose ``boxes`` function decodes PaddleOCR's DB detector output
    into boxes in model-input pixels (``hook``).

    The annotations come from classical document analysis, independent of any model: Sauvola binarisation, rows
    with ink grouped into lines, each line's box spanning its ink. The hook takes the connected regions of the
    probability map above 0.3, grown by 1 px, scored by their mean probability.
    """

    images: Path
    annotations: Path
    hook: Path


COCO_HOOK = '''import numpy as np
from scipy import ndimage


def boxes(outputs):
    (prob,) = outputs.values()
    out = []
    for p in prob[:, 0]:
        regions, _ = ndimage.label(p > 0.3)
        found, scores = [], []
        for i, sl in enumerate(ndimage.find_objects(regions), start=1):
            y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
            if (x1 - x0) * (y1 - y0) >= 16:
                found.append([x0 - 1, y0 - 1, x1 + 1, y1 + 1])
                scores.append(float(p[sl][regions[sl] == i].mean()))
        out.append({"boxes": np.reshape(found, (-1, 4)), "scores": np.asarray(scores),
                    "labels": np.ones(len(scores), dtype=np.int64)})
    return out
'''


def _text_lines(page: np.ndarray) -> list[list[int]]:
    from scipy import ndimage
    from skimage import filters

    ink = ndimage.binary_opening(page < filters.threshold_sauvola(page, window_size=25, k=0.2))
    bands, _ = ndimage.label(ink.sum(axis=1) > 3)
    lines = []
    for (rows,) in ndimage.find_objects(bands):
        cols = np.nonzero(ink[rows].sum(axis=0))[0]
        lines.append([int(cols[0]), rows.start, int(cols[-1]) + 1 - int(cols[0]), rows.stop - rows.start])
    return lines


@pytest.fixture(scope="session")
def coco_pages(tmp_path_factory: pytest.TempPathFactory) -> CocoPages:
    """(images folder, COCO JSON, hook file): the page at 1x, 1.5x and 0.75x, its 7 text lines scaled along."""
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("coco")
    images = root / "images"
    images.mkdir()
    page = data.page()
    lines = _text_lines(page)
    assert len(lines) == 7  # a title, five lines of text, one of code
    entries, anns = [], []
    for i, f in enumerate((1.0, 1.5, 0.75), start=1):
        im = Image.fromarray(page)
        if f != 1.0:
            im = im.resize((round(page.shape[1] * f), round(page.shape[0] * f)), Image.Resampling.BICUBIC)
        im.save(images / f"page{i}.png")
        entries.append({"id": i, "file_name": f"page{i}.png", "width": im.width, "height": im.height})
        anns += [{"image_id": i, "category_id": 1, "bbox": [v * f for v in box]} for box in lines]
    coco = root / "instances.json"
    coco.write_text(json.dumps({"images": entries, "annotations": anns, "categories": [{"id": 1, "name": "text"}]}))
    hook = root / "decode.py"
    hook.write_text(COCO_HOOK)
    return CocoPages(images, coco, hook)
