"""Digits example: a small CNN trained on scikit-learn's 8x8 digits, shipped with its artifacts.

Files next to this module (written by ``examples/digits/train.py``):

- ``digits_cnn.onnx``  opset 17, input ``x`` float32 [batch, 1, 8, 8], output ``logits`` [batch, 10]
- ``digits_cnn.pt``    the trained state dict (load with ``torch.load(..., weights_only=True)``)
- ``digits_test.npz``  the held-out test split: ``x`` float32 [N, 1, 8, 8] in [0, 1], ``labels`` int64 [N]
- ``digits_cnn.json``  training metadata: seed, accuracy, file hashes, versions, the command

Importing this module does not import torch; :func:`build_model` and :func:`load_trained_model` do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from enginekit.errors import InternalError

if TYPE_CHECKING:
    import torch

__all__ = [
    "BATCH_DIM",
    "CLASS_NAMES",
    "IMAGE_SIZE",
    "INPUT_NAME",
    "METADATA_FILE",
    "NUM_CLASSES",
    "ONNX_FILE",
    "OPSET",
    "OUTPUT_NAME",
    "STATE_DICT_FILE",
    "TEST_DATA_FILE",
    "build_model",
    "load_metadata",
    "load_test_split",
    "load_trained_model",
    "metadata_path",
    "onnx_path",
    "package_dir",
    "state_dict_path",
    "test_data_path",
]

INPUT_NAME = "x"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
NUM_CLASSES = 10
CLASS_NAMES: tuple[str, ...] = tuple(str(i) for i in range(NUM_CLASSES))
IMAGE_SIZE = 8
OPSET = 17

ONNX_FILE = "digits_cnn.onnx"
STATE_DICT_FILE = "digits_cnn.pt"
TEST_DATA_FILE = "digits_test.npz"
METADATA_FILE = "digits_cnn.json"

_REGENERATE_HINT = "Reinstall enginekit, or regenerate the files with: python examples/digits/train.py"


def package_dir() -> Path:
    """Directory that holds this example's artifacts."""
    return Path(__file__).resolve().parent


def onnx_path() -> Path:
    """Path of the exported ONNX model."""
    return package_dir() / ONNX_FILE


def state_dict_path() -> Path:
    """Path of the trained PyTorch state dict."""
    return package_dir() / STATE_DICT_FILE


def test_data_path() -> Path:
    """Path of the held-out test split (.npz with ``x`` and ``labels``)."""
    return package_dir() / TEST_DATA_FILE


def metadata_path() -> Path:
    """Path of the training metadata (.json)."""
    return package_dir() / METADATA_FILE


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise InternalError(f"Bundled digits example file is missing: {path}", hint=_REGENERATE_HINT)
    return path


def build_model() -> torch.nn.Module:
    """A fresh, untrained digits CNN (imports torch)."""
    from enginekit.deps import require

    require("torch", purpose="the digits example model")
    from enginekit.examples.digits.model import DigitsCNN

    return DigitsCNN(num_classes=NUM_CLASSES)


def load_trained_model() -> torch.nn.Module:
    """The digits CNN with the bundled trained weights, in eval mode (imports torch)."""
    model = build_model()
    import torch

    state = torch.load(_require_file(state_dict_path()), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model


def load_test_split() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The held-out test split: images float32 [N, 1, 8, 8] in [0, 1] and labels int64 [N]."""
    path = _require_file(test_data_path())
    with np.load(path, allow_pickle=False) as data:
        x = np.asarray(data["x"])
        labels = np.asarray(data["labels"])
    shape_ok = x.ndim == 4 and x.shape[1:] == (1, IMAGE_SIZE, IMAGE_SIZE) and labels.shape == (x.shape[0],)
    if x.dtype != np.float32 or labels.dtype != np.int64 or not shape_ok:
        raise InternalError(
            f"Bundled digits test split {path} is malformed: x {x.dtype}{list(x.shape)}, "
            f"labels {labels.dtype}{list(labels.shape)}; expected x float32[N, 1, 8, 8], labels int64[N].",
            hint=_REGENERATE_HINT,
        )
    return x, labels


def load_metadata() -> dict[str, Any]:
    """The training metadata written next to the artifacts."""
    path = _require_file(metadata_path())
    meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return meta
