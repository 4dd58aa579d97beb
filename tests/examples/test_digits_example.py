"""The bundled digits example: artifacts are present, consistent with each other and with the metadata."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest

from enginekit.examples import digits

ARTIFACTS: list[Callable[[], Path]] = [
    digits.onnx_path,
    digits.state_dict_path,
    digits.test_data_path,
    digits.metadata_path,
]


@pytest.fixture(scope="module")
def test_split() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    return digits.load_test_split()


@pytest.fixture(scope="module")
def ort_logits(test_split: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
    session = ort.InferenceSession(str(digits.onnx_path()), providers=["CPUExecutionProvider"])
    x, _ = test_split
    out = session.run([digits.OUTPUT_NAME], {digits.INPUT_NAME: x})[0]
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize("path_fn", ARTIFACTS, ids=lambda f: f.__name__)
def test_artifact_exists_and_is_small(path_fn: Callable[[], Path]) -> None:
    path = path_fn()
    assert path.is_file(), path
    assert path.parent == digits.package_dir()
    assert 0 < path.stat().st_size < 1_000_000


def test_constants() -> None:
    assert digits.INPUT_NAME == "x"
    assert digits.OUTPUT_NAME == "logits"
    assert digits.NUM_CLASSES == 10
    assert digits.CLASS_NAMES == tuple(str(i) for i in range(10))


def test_test_split_shapes(test_split: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]) -> None:
    x, labels = test_split
    assert x.dtype == np.float32 and x.shape == (360, 1, 8, 8)
    assert labels.dtype == np.int64 and labels.shape == (360,)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert set(np.unique(labels).tolist()) == set(range(10))


def test_onnx_model_is_valid_and_has_dynamic_batch() -> None:
    model = onnx.load(str(digits.onnx_path()), load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert {o.domain: o.version for o in model.opset_import}.get("") == digits.OPSET
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == digits.INPUT_NAME and out.name == digits.OUTPUT_NAME
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = inp.type.tensor_type.shape.dim
    assert in_dims[0].dim_param == "batch"
    assert [d.dim_value for d in in_dims[1:]] == [1, 8, 8]
    out_dims = out.type.tensor_type.shape.dim
    assert out_dims[0].dim_param == "batch" and out_dims[1].dim_value == digits.NUM_CLASSES


def test_onnxruntime_runs_any_batch_size(test_split: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]) -> None:
    session = ort.InferenceSession(str(digits.onnx_path()), providers=["CPUExecutionProvider"])
    x, _ = test_split
    full = session.run([digits.OUTPUT_NAME], {digits.INPUT_NAME: x[:37]})[0]
    for batch in (1, 5):
        part = session.run([digits.OUTPUT_NAME], {digits.INPUT_NAME: x[:batch]})[0]
        assert part.shape == (batch, 10)
        np.testing.assert_allclose(part, full[:batch], atol=1e-5, rtol=0)


def test_onnxruntime_accuracy_matches_metadata(
    test_split: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]], ort_logits: npt.NDArray[np.float32]
) -> None:
    _, labels = test_split
    meta = digits.load_metadata()
    correct = int((ort_logits.argmax(axis=1) == labels).sum())
    assert correct / len(labels) >= 0.95
    assert meta["test_size"] == len(labels)
    assert abs(correct - meta["test_accuracy"] * len(labels)) <= 1.0


def test_metadata_hashes_match_files() -> None:
    meta = digits.load_metadata()
    for path in (digits.state_dict_path(), digits.onnx_path()):
        assert meta["sha256"][path.name] == hashlib.sha256(path.read_bytes()).hexdigest(), path.name


def test_metadata_describes_the_export() -> None:
    meta = digits.load_metadata()
    assert meta["onnx"]["opset"] == digits.OPSET
    assert meta["onnx"]["input"]["name"] == digits.INPUT_NAME
    assert meta["onnx"]["output"]["name"] == digits.OUTPUT_NAME
    assert meta["command"].startswith("python examples/digits/train.py")
    for key in ("seed", "epochs", "optimizer", "train_size", "test_accuracy", "versions"):
        assert key in meta


def test_torch_state_dict_matches_onnxruntime(
    test_split: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]], ort_logits: npt.NDArray[np.float32]
) -> None:
    torch = pytest.importorskip("torch")
    model = digits.build_model()
    model.load_state_dict(torch.load(digits.state_dict_path(), map_location="cpu", weights_only=True))
    model.eval()
    x, _ = test_split
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_logits, expected, atol=1e-4, rtol=0)
    with torch.no_grad():
        bundled = digits.load_trained_model()(torch.from_numpy(x[:8])).numpy()
    np.testing.assert_allclose(bundled, expected[:8], atol=0, rtol=0)


def test_import_does_not_import_torch() -> None:
    code = "import enginekit.examples.digits, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
